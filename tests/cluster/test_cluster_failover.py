"""The master owning the queue's slot dies (SIGKILL) while clients enqueue through the handler
and a long-running worker renders: during the gap every answer is a quick 503, the service
comes back by itself once the replica is promoted, no accepted job is lost, and the worker
process rides it out. An admission is acknowledged only once the replica has it: one its replica
never received is a 503 (so its loss breaks no promise), and a dead replica is waited for only
until the cluster marks it failed."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from local.redis_cluster import RedisCluster
from shared import wiring
from shared.errors import StoreUnavailable
from shared.redis_client import ClusterScriptRunner
from tests.cluster.helpers import dry_job, enqueue_event, make_queue, queue_master, queue_slot
from tests.conftest import ROOT
from tests.handlers import invoke

pytestmark = [pytest.mark.redis, pytest.mark.process, pytest.mark.slow]

CLIENTS = 6


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = None
        with contextlib.suppress(StoreUnavailable):
            value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def new_master(cluster: RedisCluster, old: int) -> bool:
    return cluster.master_of_slot(queue_slot()).port != old


def test_failover_under_load_loses_no_accepted_job(cluster_url: str, clean_cluster: RedisCluster,
                                                   report: Callable[[str], None]) -> None:
    wiring.services()  # one process's services, shared by the client threads (as in the emulator)
    master = queue_master(clean_cluster)
    results: list[tuple[float, float, int, str]] = []  # start, seconds, status, job id
    stop = threading.Event()

    def client(n: int) -> None:
        # As a client should: a 503 is retried with the same body (a replay if the job did get
        # in), and the client stops only with its last job answered
        i, status = 0, 202
        while status == 503 or not stop.is_set():
            if status != 503:
                job_id = f"load-{n}-{i}"
                i += 1
            started = time.monotonic()
            status = invoke("enqueue_job", enqueue_event(job_id))["statusCode"]
            results.append((started, time.monotonic() - started, status, job_id))
            time.sleep(0.05 if status == 503 else 0.01)  # backing off a little after a 503

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    assert results and all(r[2] == 202 for r in results)
    killed_at = time.monotonic()
    master.kill()
    try:
        wait_for(lambda: new_master(clean_cluster, master.port), 20)
        promoted_at = time.monotonic()
        # Service resumes by itself: every client admits again
        wait_for(lambda: all(any(r[2] == 202 and r[0] > promoted_at and r[3].startswith(f"load-{n}-")
                                 for r in results[-200:]) for n in range(CLIENTS)), 10)
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)

    statuses = {r[2] for r in results}
    failures = [r for r in results if r[2] == 503]
    assert statuses <= {200, 202, 503}, statuses  # never a 500
    assert failures, "the kill made no request fail: not a failover test"
    max_503 = max(r[1] for r in failures)
    assert max_503 < 2.0, max_503  # each 503 answers fast
    assert max(r[1] for r in results) < 2.0
    gap = max(r[0] + r[1] for r in failures) - min(r[0] for r in failures)
    first_after = min(r[0] + r[1] for r in results if r[2] == 202 and r[0] > killed_at and
                      r[0] > min(f[0] for f in failures))
    accepted = {r[3] for r in results if r[2] in (200, 202)}
    replays = sum(r[2] == 200 for r in results)  # retries of a 503 whose job had got in
    queue = wiring.services().queue
    lost = sorted(job_id for job_id in accepted if queue.status(job_id) is None)
    counts = queue.counts()
    report(f"failover under load ({CLIENTS} clients): gap {gap:.2f} s of 503s, service back "
           f"{first_after - killed_at:.2f} s after the kill (replica promoted after "
           f"{promoted_at - killed_at:.2f} s); {len(failures)} answers 503 ({replays} retries were replays), "
           f"max 503 latency {max_503 * 1000:.0f} ms; {len(accepted)} jobs accepted, {len(lost)} lost")
    assert lost == []
    assert len({r[3] for r in results}) == len(accepted)  # every job was answered 2xx in the end
    assert counts.waiting == counts.total == len(accepted)


def test_the_worker_process_survives_a_failover(cluster_url: str, clean_cluster: RedisCluster, tmp_path: Path,
                                                report: Callable[[str], None]) -> None:
    env = {**os.environ, "REDIS_URL": cluster_url, "DATA_DIR": str(tmp_path / "data"), "PREVIEW_LEASE_MS": "2000",
           "PREVIEW_WORKER_CONCURRENCY": "2", "PREVIEW_METRICS_PORT": "0", "PREVIEW_BACKOFF_MS": "100"}
    log = tmp_path / "worker.log"
    queue, close = make_queue(cluster_url)
    with log.open("wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "functions.render_worker"], cwd=ROOT, env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        for n in range(3):
            queue.admit(dry_job(f"before-{n}"))
        wait_for(lambda: queue.counts().completed == 3, 30)
        master = queue_master(clean_cluster)
        killed_at = time.monotonic()
        master.kill()
        # Jobs admitted while the slot has no master get in once the replica took over
        for n in range(3):
            wait_for(lambda n=n: queue.admit(dry_job(f"after-{n}")), 20)  # type: ignore[misc]
        admitted_at = time.monotonic()
        wait_for(lambda: queue.counts().completed == 6, 30)
        done_at = time.monotonic()
        assert worker.poll() is None, log.read_text()[-3000:]
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, log.read_text()[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
        close()
    text = log.read_text()
    assert "worker loop error" not in text and "Traceback" not in text, text[-3000:]
    assert "redis unreachable" in text  # it did see the gap, and waited it out
    report(f"worker process through a failover: admissions back {admitted_at - killed_at:.2f} s after the kill, "
           f"all 6 jobs completed {done_at - killed_at:.2f} s after it, exit code 0 on SIGTERM")


def test_a_write_the_replica_never_got_was_never_acknowledged(cluster_url: str, clean_cluster: RedisCluster,
                                                             report: Callable[[str], None]) -> None:
    """The window asynchronous replication leaves, made certain: the queue's replica is stalled
    and cut off from its master when a job is admitted, and the master dies before the replica
    has it. The admission was
    answered 503 (not 202), so no promise is broken when the promoted replica lacks the job, and
    the client's retry with the same body admits it there."""
    assert invoke("enqueue_job", enqueue_event("window-1"))["statusCode"] == 202
    master = queue_master(clean_cluster)
    replica = clean_cluster.replicas_of(master)[0]
    assert replica.process is not None
    replica.process.send_signal(signal.SIGSTOP)
    try:
        with master.client() as client:  # the replication link cut while the replica cannot reconnect
            assert client.client_kill_filter(_type="replica") == 1
        response = invoke("enqueue_job", enqueue_event("window-2"))
        with master.client() as client:
            stored_on_master = client.exists(wiring.services().queue.keys.job("window-2"))
        master.kill()
    finally:
        replica.process.send_signal(signal.SIGCONT)
    assert response["statusCode"] == 503, response["body"]
    assert stored_on_master  # the script ran: only its acknowledgement was held back
    killed_at = time.monotonic()
    wait_for(lambda: new_master(clean_cluster, master.port), 20)
    queue = wiring.services().queue
    assert wait_for(lambda: queue.status("window-1"), 10)  # confirmed before: it survived
    assert queue.status("window-2") is None  # never confirmed: gone with the master
    retried = wait_for(lambda: (r := invoke("enqueue_job", enqueue_event("window-2")))["statusCode"] != 503 and r, 10)
    assert retried["statusCode"] == 202, retried["body"]
    assert queue.counts().waiting == 2
    report(f"unreplicated admission: answered 503 while the replica stalled; after the master's death "
           f"the retry was admitted anew {time.monotonic() - killed_at:.2f} s after the kill")


def test_admissions_stop_waiting_for_a_replica_that_died(cluster_url: str, clean_cluster: RedisCluster,
                                                        report: Callable[[str], None]) -> None:
    """A dead replica cannot confirm anything: admissions answer 503 until the cluster marks it
    failed (its node timeout), and from then on its master's writes no longer wait for it."""
    assert invoke("enqueue_job", enqueue_event("lone-0"))["statusCode"] == 202
    master = queue_master(clean_cluster)
    replica = clean_cluster.replicas_of(master)[0]
    replica.kill()
    killed_at = time.monotonic()
    answers: list[tuple[float, int]] = []

    def admitted() -> bool:
        started = time.monotonic()
        status = invoke("enqueue_job", enqueue_event("lone-1"))["statusCode"]
        answers.append((time.monotonic() - started, status))
        return status == 202 or status == 200

    wait_for(admitted, 15, interval=0.05)
    back = time.monotonic() - killed_at
    started = time.monotonic()
    fast = [invoke("enqueue_job", enqueue_event(f"lone-{n}")) for n in range(2, 12)]
    assert all(r["statusCode"] == 202 for r in fast)
    assert time.monotonic() - started < 10 * ClusterScriptRunner.REPLICA_WAIT_MS / 1000 / 2  # none waited
    assert {status for _, status in answers} <= {200, 202, 503}
    assert max(seconds for seconds, _ in answers) < 2.0
    assert wiring.services().queue.counts().waiting == 12
    report(f"replica killed: {sum(s == 503 for _, s in answers)} admissions answered 503, service back "
           f"{back:.2f} s after the kill without it")
