"""The service on a real Redis Cluster (3 masters, 1 replica each): every handler fixture, the
job lifecycle through the handlers and a worker, a client seeded on any of the six nodes, and
the queue's slot migrated to another master under a client whose slot map is stale (ASK in
the middle, MOVED after: answers or 503s, never a 500)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from local.redis_cluster import RedisCluster
from shared import wiring
from shared.errors import LeaseLost, StoreUnavailable
from shared.redis_client import ClusterScriptRunner, LazyRedisCluster
from shared.worker import Worker
from tests.cluster.helpers import dry_job, enqueue_event, job_event, make_queue, queue_master, queue_slot
from tests.conftest import load_event
from tests.handlers import EXPECTED, apply_given, body, invoke, invoke_fixture, run_worker_until_idle
from tests.test_handlers import HTTP_CASES
from tests.test_scheduled import CASES as SCHEDULED_CASES
from tests.test_worker import FolderStore

pytestmark = [pytest.mark.redis, pytest.mark.process]


def given(steps: list[str]) -> None:
    for step in steps:
        if step == "fill-queue":  # the shared helper makes a single-node client
            queue = wiring.services().queue
            for n in range(queue.settings.queue_max):
                queue.admit(dry_job(f"fill-{n}"))
        else:
            apply_given([step])


@pytest.mark.parametrize("case", HTTP_CASES)
def test_fixture_gives_expected_status(case: str, cluster_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREVIEW_QUEUE_MAX")  # the fixtures expect the default limit
    wiring.reset()
    function, name = case.split("/")
    expected = EXPECTED[case]
    given(expected.get("given", []))
    response = invoke_fixture(function, name)
    assert response["statusCode"] == expected["status"], response["body"]


@pytest.mark.parametrize("case", SCHEDULED_CASES)
def test_scheduled_fixture_gives_expected_summary(case: str, cluster_url: str) -> None:
    function, name = case.split("/")
    given(EXPECTED[case].get("given", []))
    result = invoke(function, load_event(function, name))
    for key, value in EXPECTED[case]["expect"].items():
        assert result[key] == value, result


def counts() -> dict[str, Any]:
    document: dict[str, Any] = body(invoke_fixture("queue_metrics", "success"))
    return {k: document[k] for k in ("waiting", "active", "delayed", "completed", "failed", "total")}


def test_job_lifecycle_through_the_handlers(cluster_url: str) -> None:
    assert isinstance(wiring.services().queue.redis, LazyRedisCluster)
    # Enqueued, then seen waiting
    assert invoke("enqueue_job", enqueue_event("life-1"))["statusCode"] == 202
    assert invoke("enqueue_job", enqueue_event("life-1"))["statusCode"] == 200  # an identical replay
    status = invoke("job_status", job_event("job_status", "life-1"))
    assert status["statusCode"] == 200 and body(status)["state"] == "waiting"
    assert invoke("job_artifact", job_event("job_artifact", "life-1"))["statusCode"] == 409
    assert counts() == {"waiting": 1, "active": 0, "delayed": 0, "completed": 0, "failed": 0, "total": 1}
    # Rendered by the worker, then completed with its artifact
    assert run_worker_until_idle()["processed"] == 1
    document = body(invoke("job_status", job_event("job_status", "life-1")))
    assert (document["state"], document["progress"], document["attemptsMade"]) == ("completed", 100, 1)
    artifact = invoke("job_artifact", job_event("job_artifact", "life-1"))
    assert artifact["statusCode"] == 200 and body(artifact)["files"]
    assert counts() == {"waiting": 0, "active": 0, "delayed": 0, "completed": 1, "failed": 0, "total": 1}
    # The worker's heartbeat reached the registry: the health checks pass
    assert invoke_fixture("worker_health", "healthy")["statusCode"] == 200
    assert wiring.services().queue.oldest_waiting_ms() is None
    wiring.services().queue.ping()


def test_failed_attempts_are_retried_then_dead_lettered(cluster_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREVIEW_BACKOFF_MS", "50")
    monkeypatch.setenv("PREVIEW_JOB_ATTEMPTS", "3")
    wiring.reset()
    services = wiring.services()
    calls: list[float] = []

    def flaky(*args: Any) -> None:
        calls.append(time.monotonic())
        from shared.errors import TransientRenderError

        raise TransientRenderError("asset store timed out")

    assert invoke("enqueue_job", enqueue_event("flaky-1"))["statusCode"] == 202
    assert invoke("enqueue_job", enqueue_event("fine-1"))["statusCode"] == 202
    worker = Worker(services.settings, services.queue, FolderStore(), render=flaky)
    worker.run_until_idle()
    assert counts()["delayed"] == 2  # both failed once and back off
    deadline = time.monotonic() + 10
    while counts()["failed"] < 2 and time.monotonic() < deadline:
        worker.run_until_idle()
        time.sleep(0.02)
    assert len(calls) == 6 and worker.outcomes["retried"] == 4 and worker.outcomes["failed"] == 2
    document = body(invoke("job_status", job_event("job_status", "flaky-1")))
    assert (document["state"], document["attemptsMade"], document["failedReason"]) == (
        "failed", 3, "asset store timed out")
    assert counts() == {"waiting": 0, "active": 0, "delayed": 0, "completed": 0, "failed": 2, "total": 2}


def test_an_expired_lease_is_recovered(cluster_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREVIEW_LEASE_MS", "1000")
    wiring.reset()
    queue = wiring.services().queue
    for n in range(3):
        queue.admit(dry_job(f"lease-{n}"))
    claimed = [queue.claim().job for _ in range(2)]
    assert all(claimed)
    assert counts() == {"waiting": 1, "active": 2, "delayed": 0, "completed": 0, "failed": 0, "total": 3}
    # The first holder stops renewing (it died): its lease runs out, the other's is renewed
    dead, alive = claimed[0], claimed[1]
    assert dead is not None and alive is not None
    queue.redis.zadd(queue.keys.active, {dead.id: 0})
    queue.heartbeat(alive)
    requeued, failed = queue.recover_stalled()
    assert (requeued, failed) == ([dead.id], [])
    assert counts() == {"waiting": 2, "active": 1, "delayed": 0, "completed": 0, "failed": 0, "total": 3}
    with pytest.raises(LeaseLost):
        queue.heartbeat(dead)
    again = queue.claim().job
    assert again is not None and again.id in {dead.id, "lease-2"}
    queue.complete(alive)
    assert counts()["completed"] == 1 and counts()["total"] == 3


@pytest.mark.parametrize("index", range(6))
def test_a_client_seeded_on_any_node_works(index: int, clean_cluster: RedisCluster,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    node = clean_cluster.nodes[index]
    monkeypatch.setenv("REDIS_URL", clean_cluster.url_for(node))
    wiring.reset()
    job_id = f"seeded-{index}"
    assert invoke("enqueue_job", enqueue_event(job_id))["statusCode"] == 202
    assert body(invoke("job_status", job_event("job_status", job_id)))["state"] == "waiting"
    queue = wiring.services().queue
    queue.ping()
    assert queue.wait_for_work(0.05)  # the admission's wake-up token
    job = queue.claim().job
    assert job is not None and job.id == job_id
    queue.heartbeat(job, 50)
    queue.complete(job)
    queue.record_worker("seeded-worker")
    assert queue.workers_seen(0)[0] == 1
    assert counts() == {"waiting": 0, "active": 0, "delayed": 0, "completed": 1, "failed": 0, "total": 1}
    assert invoke_fixture("worker_health", "healthy")["statusCode"] == 200


@pytest.mark.usefixtures("cluster_url")
def test_an_unreachable_cluster_is_a_quick_503_without_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://:s3cret@127.0.0.1:1/?cluster=true")
    wiring.reset()
    started = time.monotonic()
    response = invoke("enqueue_job", enqueue_event("nowhere-1"))
    assert response["statusCode"] == 503 and time.monotonic() - started < 2
    assert "s3cret" not in response["body"]
    health = invoke_fixture("worker_health", "healthy")
    assert health["statusCode"] == 503 and "s3cret" not in health["body"]
    assert body(health)["redis"]["url"] == "redis://***@127.0.0.1:1/"


@pytest.fixture
def stale_queues(cluster_url: str) -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for _, close in made:
        close()


def test_a_slot_migration_is_followed_never_a_500(cluster_url: str, clean_cluster: RedisCluster,
                                                 stale_queues: list[Any]) -> None:
    slot = queue_slot()
    source = queue_master(clean_cluster)
    target = next(m for m in clean_cluster.masters() if m.port != source.port)
    queue, close = make_queue(cluster_url)
    stale, close_stale = make_queue(clean_cluster.url_for(clean_cluster.nodes[-1]))
    stale_queues.extend([(queue, close), (stale, close_stale)])
    # Both runners have read the slot map: the slot is on `source`
    assert queue.admit(dry_job("mig-1")).created and stale.admit(dry_job("mig-2")).created
    assert invoke("enqueue_job", enqueue_event("mig-3"))["statusCode"] == 202  # the handlers' services too
    job = queue.claim().job
    assert job is not None
    runner = stale._runner
    assert isinstance(runner, ClusterScriptRunner)
    assert runner._cluster.nodes_manager.slots_cache[slot][0].port == source.port

    # The slot starts moving: every key of it goes to `target`, the slot not handed over yet
    with target.client() as t, source.client() as s:
        t.config_resetstat()
        t.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)
        keys = s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
        assert len(keys) >= 5
        s.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "AUTH", clean_cluster.password,
                          "KEYS", *keys)
        assert s.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0

    # ASK: a script whose keys all moved runs on `target` (ASKING first; the script loaded
    # there, where it never ran), and the slot map still says `source`
    queue.heartbeat(job, 40)
    assert runner._cluster.nodes_manager.slots_cache[slot][0].port == source.port
    assert queue.status(job.id).progress == 40  # type: ignore[union-attr]
    with target.client() as t:
        stats = t.info("commandstats")
    assert stats["cmdstat_asking"]["calls"] >= 1
    assert any(name.startswith("cmdstat_script") for name in stats)  # SCRIPT LOAD on the ASK target
    document = body(invoke("job_status", job_event("job_status", "mig-3")))
    assert document["state"] == "waiting"
    # A script whose keys are split (a new job's hash exists nowhere) gets TRYAGAIN until the
    # migration ends: a quick 503, not a 500
    started = time.monotonic()
    response = invoke("enqueue_job", enqueue_event("mig-4"))
    assert response["statusCode"] == 503, response["body"]
    assert time.monotonic() - started < 2
    with pytest.raises(StoreUnavailable):
        stale.admit(dry_job("mig-5"))

    # The slot is handed over: MOVED for every client still pointing at `source`
    for node in (target, source, *[m for m in clean_cluster.masters() if m.port not in (source.port, target.port)]):
        with node.client() as client:
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target.node_id)
    assert stale.admit(dry_job("mig-5")).created
    assert runner._cluster.nodes_manager.slots_cache[slot][0].port == target.port
    assert invoke("enqueue_job", enqueue_event("mig-4"))["statusCode"] == 202
    queue.complete(job)
    assert counts() == {"waiting": 4, "active": 0, "delayed": 0, "completed": 1, "failed": 0, "total": 5}
    assert queue_master(clean_cluster).port == target.port
    with target.client() as client:
        assert client.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) >= 5


def test_a_script_unknown_to_the_new_master_is_loaded_there(cluster_url: str, clean_cluster: RedisCluster) -> None:
    queue = wiring.services().queue
    assert queue.admit(dry_job("noscript-1")).created
    master = queue_master(clean_cluster)
    with master.client() as client:
        client.script_flush()  # as a replica promoted before the script ever reached it
    assert queue.admit(dry_job("noscript-2")).created
    assert queue.counts().waiting == 2


def test_a_dropped_script_connection_is_retried_once(cluster_url: str, clean_cluster: RedisCluster) -> None:
    queue = wiring.services().queue
    assert queue.admit(dry_job("drop-1")).created
    with queue_master(clean_cluster).client() as client:
        killed = [c for c in client.client_list() if c["cmd"] in ("evalsha", "wait")]  # an admission ends in WAIT
        assert killed
        for info in killed:
            client.client_kill_filter(_id=info["id"])
    assert queue.admit(dry_job("drop-2")).created
    assert queue.counts().waiting == 2


def test_a_timed_out_script_is_never_sent_again(cluster_url: str) -> None:
    queue = wiring.services().queue
    assert queue.claim().job is None  # the claim script is loaded on the master now
    assert queue.admit(dry_job("slow-1")).created
    runner = queue._runner
    assert isinstance(runner, ClusterScriptRunner)
    conn = runner._node_connection(runner._primary(queue_slot()))
    sent: list[int] = []
    real_send, real_read = conn.send_packed_command, conn.read_response

    def send(*args: Any, **kwargs: Any) -> Any:
        sent.append(1)
        return real_send(*args, **kwargs)

    def read(*args: Any, **kwargs: Any) -> Any:
        conn.read_response = real_read  # type: ignore[method-assign]
        raise redis.TimeoutError("Timeout reading from socket")

    conn.send_packed_command = send  # type: ignore[method-assign]
    conn.read_response = read  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        queue.claim()
    assert sent == [1]
    # The claim did run (its reply came too late): the job is leased, and the next call reads
    # its own reply, not the stale one
    assert queue.counts().active == 1
    assert queue.claim().job is None


def test_an_admission_no_replica_confirms_is_a_503_and_its_retry_a_replay(cluster_url: str,
                                                                          clean_cluster: RedisCluster) -> None:
    """Replication is asynchronous, so a 202 waits for the queue's replica to confirm the write
    (WAIT in the same write as the script): a replica that cannot confirm makes it a quick 503,
    and the client's retry with the same body, once the replica is back, is a replay of the job
    the master did store. The worker's own scripts do not wait."""
    assert invoke("enqueue_job", enqueue_event("ack-1"))["statusCode"] == 202  # slot map read, scripts loaded
    queue = wiring.services().queue
    replica = clean_cluster.replicas_of(queue_master(clean_cluster))[0]
    assert replica.process is not None
    replica.process.send_signal(signal.SIGSTOP)  # stalled, for less than the node timeout
    try:
        started = time.monotonic()
        response = invoke("enqueue_job", enqueue_event("ack-2"))
        waited = time.monotonic() - started
        started = time.monotonic()
        job = queue.claim().job
        claimed_in = time.monotonic() - started
    finally:
        replica.process.send_signal(signal.SIGCONT)
    assert response["statusCode"] == 503, response["body"]
    assert body(response)["error"] == "store_unavailable" and "replica" in body(response)["message"]
    assert "127.0.0.1" not in response["body"] and clean_cluster.password not in response["body"]
    assert ClusterScriptRunner.REPLICA_WAIT_MS / 1000 <= waited < 1.5, waited
    assert job is not None and job.id == "ack-1" and claimed_in < 0.3, claimed_in  # no wait for a replica
    retried = invoke("enqueue_job", enqueue_event("ack-2"))
    assert retried["statusCode"] == 200, retried["body"]  # the master had stored it: a replay
    assert counts() == {"waiting": 1, "active": 1, "delayed": 0, "completed": 0, "failed": 0, "total": 2}
    with replica.client() as client:  # and the replica holds both now
        client.execute_command("READONLY")
        assert client.zcard(queue.keys.waiting) == 1 and client.zcard(queue.keys.active) == 1
