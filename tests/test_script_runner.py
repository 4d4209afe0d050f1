"""The queue's script path on a real Redis: a connection per thread, a lost script reloaded,
a dropped connection retried once, and every connection closed when the queue is.

These count the server's connections, so they run on a Redis of their own that no other test
(nor a queue another test left for the garbage collector) is connected to."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from local.redis_server import RedisServer
from shared.errors import StoreUnavailable
from shared.queue import JobQueue
from shared.settings import Settings

MakeQueue = Callable[[str], JobQueue]


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("script-runner-redis")).start()
    yield server.url
    server.stop()


@pytest.fixture
def redis_url(own_redis: str) -> str:
    with redis.Redis.from_url(own_redis) as client:
        client.flushall()
    return own_redis


@pytest.fixture
def rdb(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        yield client


@pytest.fixture
def make_queue() -> Iterator[Callable[[str], JobQueue]]:
    """Queues on their own clients, all closed after the test."""
    made: list[JobQueue] = []

    def make(url: str) -> JobQueue:
        settings = Settings.from_env({"REDIS_URL": url})
        made.append(JobQueue(redis.Redis.from_url(url, decode_responses=True), settings))
        return made[-1]

    yield make
    for queue in made:
        queue.close()
        queue.redis.close()


def job(n: int) -> dict[str, Any]:
    return {"jobId": f"job-{n}", "projectId": "proj-1", "requestId": f"req-{n}", "dryRun": True,
            "previewRequest": {"steps": [], "assets": [], "audio": {}}}


def script_clients(rdb: redis.Redis, expect: int | None = None) -> list[dict[str, Any]]:
    """Connections whose last command was a script; with `expect`, wait up to 2 s for that many
    (a closed socket leaves the server's list a moment later)."""
    deadline = time.monotonic() + 2
    while True:
        found = [c for c in rdb.client_list() if c["cmd"] == "evalsha"]
        if expect is None or len(found) == expect or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def test_each_thread_runs_scripts_on_its_own_connection(
    redis_url: str, rdb: redis.Redis, make_queue: MakeQueue
) -> None:
    queue = make_queue(redis_url)
    queue.admit(job(0))
    queue.admit(job(1))
    assert len(script_clients(rdb)) == 1  # one thread, one connection, reused

    def admit(n: int) -> None:
        queue.admit(job(n))

    threads = [threading.Thread(target=admit, args=(n,)) for n in range(2, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert queue.counts().waiting == 5
    # The three threads have ended: their connections closed with them.
    assert len(script_clients(rdb, expect=1)) == 1
    queue.close()
    assert script_clients(rdb, expect=0) == []
    assert queue.admit(job(5)).created  # a closed queue's next call connects again


def test_a_script_the_server_lost_is_loaded_again(redis_url: str, rdb: redis.Redis, make_queue: MakeQueue) -> None:
    queue = make_queue(redis_url)
    queue.admit(job(1))
    rdb.script_flush()  # as after a failover to a replica that never saw the script
    assert queue.admit(job(2)).created
    assert queue.counts().waiting == 2


def test_a_dropped_connection_is_retried_once(redis_url: str, rdb: redis.Redis, make_queue: MakeQueue) -> None:
    queue = make_queue(redis_url)
    queue.admit(job(1))
    # The server closes the script connection (idle timeout, proxy restart, failover).
    killed = script_clients(rdb, expect=1)
    assert len(killed) == 1
    rdb.client_kill_filter(_id=killed[0]["id"])
    assert queue.admit(job(2)).created
    assert queue.counts().waiting == 2


@pytest.mark.redis
def test_unreachable_redis_is_a_clear_503(make_queue: MakeQueue) -> None:
    # Nothing listens on port 1: the call fails at once, without the URL in the message.
    queue = make_queue("redis://:s3cret@127.0.0.1:1/0")
    with pytest.raises(StoreUnavailable) as caught:
        queue.admit(job(1))
    assert caught.value.status_code == 503
    assert "s3cret" not in str(caught.value)


def _interrupt_next_read(queue: JobQueue, exc: BaseException) -> list[int]:
    """Make the next reply read on this thread's script connection raise `exc` (after the
    command went out); returns a list that counts the commands sent."""
    conn = queue._runner._connection()
    sent: list[int] = []
    real_send, real_read = conn.send_packed_command, conn.read_response

    def send(*args: Any, **kwargs: Any) -> Any:
        sent.append(1)
        return real_send(*args, **kwargs)

    def read(*args: Any, **kwargs: Any) -> Any:
        conn.read_response = real_read  # type: ignore[method-assign]
        raise exc

    conn.send_packed_command = send  # type: ignore[method-assign]
    conn.read_response = read  # type: ignore[method-assign]
    return sent


def test_an_interrupted_call_leaves_no_reply_for_the_next(redis_url: str, make_queue: MakeQueue) -> None:
    queue = make_queue(redis_url)
    queue.admit(job(1))
    _interrupt_next_read(queue, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        queue.admit(job(2))  # sent, ran on the server, reply never read
    # The next call must get its own reply, not the admission's left on the wire.
    claimed = queue.claim().job
    assert claimed is not None and claimed.id == "job-1"
    assert queue.admit(job(3)).created


def test_a_timed_out_script_is_not_sent_again(redis_url: str, make_queue: MakeQueue) -> None:
    # A script that ran but answered late must not run twice: claim would lease a second job.
    queue = make_queue(redis_url)
    for n in range(2):
        queue.admit(job(n))
    sent = _interrupt_next_read(queue, redis.TimeoutError("Timeout reading from socket"))
    with pytest.raises(StoreUnavailable):
        queue.claim()
    assert len(sent) == 1
    assert queue.counts().active == 1  # the one claim that ran; its lease expires as usual
