"""A single Redis server with a replica (as ElastiCache with cluster mode disabled and Multi-AZ
runs it): a write a client is told succeeded waits for the replica, one the replica cannot
confirm is a quick 503 whose retry with the same body settles it, the worker's own scripts do
not wait, and a replica that died is no longer waited for. Two private redis-server processes,
the second a replica of the first."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from local.redis_server import RedisServer
from shared import redis_client
from shared.errors import StoreUnavailable
from shared.queue import JobQueue
from shared.redis_client import ScriptRunner
from shared.settings import Settings
from tests.cluster.helpers import dry_job

pytestmark = [pytest.mark.redis, pytest.mark.process]


def wait_until(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    master = RedisServer(tmp_path / "master").start()
    replica = RedisServer(tmp_path / "replica").start()
    try:
        with redis.Redis(port=replica.port) as client:
            client.replicaof("127.0.0.1", master.port)
            wait_until(lambda: client.info("replication").get("master_link_status") == "up")
        yield master, replica
    finally:
        if replica.process is not None and replica.process.poll() is None:
            replica.process.send_signal(signal.SIGCONT)
        replica.stop()
        master.stop()


@pytest.fixture
def queue(replicated: tuple[RedisServer, RedisServer]) -> Iterator[JobQueue]:
    settings = Settings.from_env({"REDIS_URL": replicated[0].url})
    client = redis_client.connect(settings)
    queue = JobQueue(client, settings)
    yield queue
    queue.close()
    client.close()


def test_an_admission_waits_for_the_replica(replicated: tuple[RedisServer, RedisServer], queue: JobQueue) -> None:
    master, replica = replicated
    assert queue.admit(dry_job("rep-1")).created
    with redis.Redis(port=replica.port) as client:  # confirmed: the replica has it already
        assert client.exists(queue.keys.job("rep-1"))
    with redis.Redis(port=master.port) as client:
        assert client.info("commandstats")["cmdstat_wait"]["calls"] == 1

    assert replica.process is not None
    replica.process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="replica"):
            queue.admit(dry_job("rep-2"))
        waited = time.monotonic() - started
        started = time.monotonic()
        job = queue.claim().job  # the worker's scripts do not wait
        claimed_in = time.monotonic() - started
    finally:
        replica.process.send_signal(signal.SIGCONT)
    assert ScriptRunner.REPLICA_WAIT_MS / 1000 <= waited < 1.5, waited
    assert job is not None and job.id == "rep-1" and claimed_in < 0.3, claimed_in
    # The master had stored it: the client's retry of the same body is a replay, confirmed
    again = queue.admit(dry_job("rep-2"))
    assert not again.created and again.state == "waiting"
    with redis.Redis(port=replica.port) as client:
        assert client.exists(queue.keys.job("rep-2"))


def test_a_replica_that_died_is_no_longer_waited_for(replicated: tuple[RedisServer, RedisServer],
                                                     queue: JobQueue) -> None:
    master, replica = replicated
    assert queue.admit(dry_job("alone-0")).created
    replica.kill()
    with redis.Redis(port=master.port) as client:
        wait_until(lambda: client.info("replication")["connected_slaves"] == 0)
        client.config_resetstat()
    unconfirmed = 0
    for n in range(1, 11):
        try:
            assert queue.admit(dry_job(f"alone-{n}")).created
        except StoreUnavailable:  # the one write that still waited, before the count was asked again
            unconfirmed += 1
            assert queue.admit(dry_job(f"alone-{n}")).state == "waiting"  # stored: admitted or a replay
    assert unconfirmed <= 1
    with redis.Redis(port=master.port) as client:
        assert client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0) <= 1
        assert client.zcard(queue.keys.waiting) == 11


def test_a_server_without_replicas_never_waits(redis_url: str) -> None:
    settings = Settings.from_env({"REDIS_URL": redis_url})
    client = redis_client.connect(settings)
    queue = JobQueue(client, settings)
    try:
        for n in range(5):
            assert queue.admit(dry_job(f"single-{n}")).created
        assert queue._runner._replicas_due > 0 and queue._runner._replicas == 0  # it did ask: none
        with redis.Redis.from_url(redis_url) as plain:
            assert "cmdstat_wait" not in plain.info("commandstats")
    finally:
        queue.close()
        client.close()
