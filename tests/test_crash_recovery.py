"""Crash recovery with real worker processes: the job of a worker killed with SIGKILL goes back
to waiting within seconds (its liveness lapses; its 30 s lease does not have to run out), and a
worker that is alive but busy holding the CPU never loses its job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from shared.keys import QueueKeys
from tests.conftest import ROOT
from tests.test_worker_process import WorkerProcesses, heavy_job, queue_for, wait_for

pytestmark = [pytest.mark.process, pytest.mark.slow]

BUSY_SECONDS = 8.0


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    # The production lease and liveness periods: what a kill costs with the defaults.
    return {**os.environ, "REDIS_URL": redis_url, "DATA_DIR": str(tmp_path / "data"), "PREVIEW_LEASE_MS": "30000",
            "PREVIEW_WORKER_LIVENESS_MS": "3000", "PREVIEW_WORKER_CONCURRENCY": "1", "PREVIEW_METRICS_PORT": "0",
            "PREVIEW_BACKOFF_MS": "100"}


@pytest.fixture
def workers(env: dict[str, str]) -> Iterator[WorkerProcesses]:
    group = WorkerProcesses(env)
    yield group
    group.stop_all()


def render_job() -> dict[str, Any]:
    """A real render of several seconds (30 steps of 720p): long enough to be killed midway."""
    job = heavy_job()
    job["previewRequest"]["steps"] = job["previewRequest"]["steps"][:30]
    job["previewRequest"]["options"]["resolution"] = "1280x720"
    return job


def alive_workers(rdb: redis.Redis) -> set[str]:
    return set(rdb.zrangebyscore(QueueKeys("preview-jobs").alive, time.time() * 1000, "+inf"))


def test_the_job_of_a_killed_worker_is_back_in_waiting_within_5_s(env: dict[str, str], workers: WorkerProcesses,
                                                                  rdb: redis.Redis) -> None:
    queue = queue_for(env)
    job_key = QueueKeys("preview-jobs").job("heavy-1")
    queue.admit(render_job())
    # Given a worker in the middle of a real render, and a second, idle worker
    first = workers.start()
    wait_for(lambda: (s := queue.status("heavy-1")) and s.state == "active" and 0 < s.progress < 60, 90)
    first_id = rdb.hget(job_key, "worker")
    assert first_id and f":{first.pid}:" in first_id
    workers.start()
    wait_for(lambda: len(alive_workers(rdb)) == 2, 30, 0.05)
    # When the rendering worker is killed with SIGKILL
    first.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    first.wait(10)
    # Then its job is back in waiting (one attempt counted) within 5 s, long before its lease ends
    taken_back = wait_for(lambda: rdb.hget(job_key, "attemptsMade") == "1" and time.monotonic(), 30, 0.002)
    reason = rdb.hget(job_key, "failedReason")
    back_in_waiting = taken_back - killed
    # And the second worker completes it
    status = wait_for(lambda: (s := queue.status("heavy-1")) and s.state == "completed" and s, 90, 0.05)
    completed = time.monotonic() - killed
    print(f"\nkill -> back in waiting {back_in_waiting:.2f} s, kill -> completed {completed:.2f} s "
          f"(lease 30 s, liveness 3 s)")
    assert reason == f"worker {first_id} stopped (attempt 1)"
    assert back_in_waiting < 5.0
    assert status.attemptsMade == 2
    files = sorted(p.name for p in (Path(env["DATA_DIR"]) / "previews" / "proj-faults" / "heavy-1").iterdir())
    assert files == ["captions.vtt", "container.json", "poster.png", "preview.json", "preview.mp4"]


def test_a_restarted_worker_takes_back_the_job_of_the_one_killed(env: dict[str, str], workers: WorkerProcesses,
                                                                 rdb: redis.Redis) -> None:
    """The single-worker case a supervisor restarts (systemd Restart=always)."""
    queue = queue_for(env)
    job_key = QueueKeys("preview-jobs").job("heavy-1")
    queue.admit(render_job())
    first = workers.start()
    wait_for(lambda: (s := queue.status("heavy-1")) and s.state == "active" and 0 < s.progress < 60, 90)
    first.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    first.wait(10)
    workers.start()
    taken_back = wait_for(lambda: rdb.hget(job_key, "attemptsMade") == "1" and time.monotonic(), 30, 0.002)
    print(f"\nkill and restart -> back in waiting {taken_back - killed:.2f} s")
    assert "stopped (attempt 1)" in (rdb.hget(job_key, "failedReason") or "")
    assert taken_back - killed < 8.0


def test_a_busy_worker_never_loses_its_jobs(env: dict[str, str], workers: WorkerProcesses, rdb: redis.Redis) -> None:
    queue = queue_for(env)
    jobs = [f"busy-{n}" for n in range(2)]
    for job_id in jobs:
        job = heavy_job(job_id)
        job["dryRun"] = True
        queue.admit(job)
    # Given a worker whose two job loops both hold the CPU for longer than twice the liveness
    # period, and an idle worker running its recovery pass every second
    busy = subprocess.Popen(
        [sys.executable, "-m", "tests.busy_worker"],
        cwd=ROOT, env={**env, "PREVIEW_WORKER_CONCURRENCY": "2", "BUSY_SECONDS": str(BUSY_SECONDS)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers.procs.append(busy)
    wait_for(lambda: queue.counts().active == 2, 60, 0.05)
    workers.start()
    # And the test's own recovery pass every 0.1 s on top
    taken: list[str] = []
    done = threading.Event()

    def recover() -> None:
        while not done.is_set():
            requeued, failed = queue.recover_stalled()
            taken.extend(requeued + failed)
            time.sleep(0.1)

    checker = threading.Thread(target=recover)
    checker.start()
    try:
        started = time.monotonic()

        def finished() -> list[Any] | None:
            statuses = [queue.status(job_id) for job_id in jobs]
            return statuses if all(s and s.state == "completed" for s in statuses) else None

        statuses = wait_for(finished, BUSY_SECONDS + 60, 0.05)
    finally:
        done.set()
        checker.join(5)
    print(f"\nbusy renders of {BUSY_SECONDS:.0f} s (liveness 3 s): completed after {time.monotonic() - started:.1f} s, "
          f"taken back: {taken}")
    # Then nothing was taken back: each job completed on its first attempt
    assert taken == []
    assert [s.attemptsMade for s in statuses] == [1, 1]


def test_a_redis_outage_longer_than_the_liveness_period_costs_no_live_worker_its_job(
        tmp_path: Path, env: dict[str, str]) -> None:
    from local.redis_server import RedisServer

    # A server of this test's own: it is stopped for a while.
    with RedisServer(tmp_path / "redis") as server:
        env = {**env, "REDIS_URL": server.url}
        queue = queue_for(env)
        job = heavy_job("busy-0")
        job["dryRun"] = True
        queue.admit(job)
        # Given a worker busy rendering and an idle one checking for stopped workers each second
        group = WorkerProcesses(env)
        try:
            busy = subprocess.Popen([sys.executable, "-m", "tests.busy_worker"], cwd=ROOT,
                                    env={**env, "BUSY_SECONDS": "10"}, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            group.procs.append(busy)
            wait_for(lambda: (s := queue.status("busy-0")) and s.state == "active", 60, 0.05)
            group.start()
            rdb = redis.Redis.from_url(server.url, decode_responses=True)
            wait_for(lambda: len(alive_workers(rdb)) == 2, 30, 0.05)
            # When Redis is out of everyone's reach for 5 s, longer than the 3 s liveness period
            assert server.process is not None
            os.kill(server.process.pid, signal.SIGSTOP)
            time.sleep(5.0)
            os.kill(server.process.pid, signal.SIGCONT)
            # Then no worker counts as stopped for it: the busy worker completes its job, first attempt
            status = wait_for(lambda: (s := queue.status("busy-0")) and s.state == "completed" and s, 60, 0.05)
            assert status.attemptsMade == 1
            rdb.close()
        finally:
            group.stop_all()
