"""The long-running worker as a real process: killed mid-render, stopped with SIGTERM."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from PIL import Image

from shared.queue import JobQueue
from shared.settings import Settings
from tests.conftest import ROOT, wait_for

pytestmark = [pytest.mark.process, pytest.mark.slow]


def png(colour: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (640, 360), colour).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def heavy_job(job_id: str = "heavy-1") -> dict[str, Any]:
    """100 full-HD steps: a couple of seconds of real rendering, long enough to interrupt."""
    assets = [{"id": f"img-{i}", "type": "image", "uri": png((40 * i, 120, 200 - 30 * i))} for i in range(5)]
    steps = [{"title": f"Step {i}", "text": "Move the strip and twist it once more.", "durationSec": 5,
              "asset": f"img-{i % 5}"} for i in range(100)]
    return {"jobId": job_id, "projectId": "proj-faults", "requestId": "req-1", "dryRun": False,
            "previewRequest": {"steps": steps, "assets": assets, "audio": {},
                               "options": {"resolution": "1920x1080", "format": "mp4"}}}


class WorkerProcesses:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, **extra: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "functions.render_worker"], cwd=ROOT,
                                env={**self.env, **extra}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": redis_url, "DATA_DIR": str(tmp_path / "data"), "PREVIEW_LEASE_MS": "2000",
            "PREVIEW_WORKER_CONCURRENCY": "1", "PREVIEW_METRICS_PORT": "0", "PREVIEW_BACKOFF_MS": "100"}


@pytest.fixture
def workers(env: dict[str, str]) -> Iterator[WorkerProcesses]:
    group = WorkerProcesses(env)
    yield group
    group.stop_all()


def queue_for(env: dict[str, str]) -> JobQueue:
    settings = Settings.from_env(env)
    return JobQueue(redis.Redis.from_url(env["REDIS_URL"], decode_responses=True), settings)


def test_killed_worker_job_is_completed_by_another(env: dict[str, str], workers: WorkerProcesses) -> None:
    queue = queue_for(env)
    queue.admit(heavy_job())
    # Given a worker that dies with SIGKILL in the middle of a render
    first = workers.start()
    wait_for(lambda: (s := queue.status("heavy-1")) and s.state == "active" and 0 < s.progress < 90, 60, 0.005)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert queue.status("heavy-1").state == "active"  # type: ignore[union-attr]
    # When another worker runs
    workers.start()
    # Then it recovers the job once the dead worker's lease expires, and completes it
    status = wait_for(lambda: (s := queue.status("heavy-1")) and s.state == "completed" and s, 90, 0.05)
    assert status.attemptsMade == 2
    assert "lease expired" not in (status.failedReason or "")
    project = Path(env["DATA_DIR"]) / "previews" / "proj-faults"
    # Exactly one set of artifacts, no half-written staging folders left in the store
    # (the store's lock file aside).
    assert sorted(p.name for p in project.iterdir() if p.name != ".lock") == ["heavy-1"]
    files = sorted(p.name for p in (project / "heavy-1").iterdir())
    assert files == ["captions.vtt", "container.json", "poster.png", "preview.json", "preview.mp4"]
    # The dead worker's half-rendered scratch files were swept by the next worker on this host
    scratch = Path(env["DATA_DIR"]) / "tmp"
    assert not [p for p in scratch.iterdir() if f"_{first.pid}_" in p.name]


def sigterm_mid_render(env: dict[str, str], workers: WorkerProcesses,
                       grace_seconds: int) -> tuple[subprocess.Popen[bytes], JobQueue]:
    """Start a worker on a heavy job, send SIGTERM while it renders; the worker and the queue."""
    queue = queue_for(env)
    queue.admit(heavy_job())
    worker = workers.start(PREVIEW_SHUTDOWN_GRACE_SECONDS=str(grace_seconds))
    wait_for(lambda: (s := queue.status("heavy-1")) and s.state == "active" and 0 < s.progress < 90, 60, 0.005)
    worker.send_signal(signal.SIGTERM)
    return worker, queue


def test_sigterm_hands_the_active_job_back(env: dict[str, str], workers: WorkerProcesses) -> None:
    worker, queue = sigterm_mid_render(env, workers, grace_seconds=0)
    assert worker.wait(30) == 0
    status = queue.status("heavy-1")
    assert status is not None and (status.state, status.attemptsMade) == ("waiting", 0)
    # Nothing half-written is published
    assert not (Path(env["DATA_DIR"]) / "previews" / "proj-faults" / "heavy-1").exists()
    # And the worker no longer counts as alive
    assert queue.workers_seen(0)[0] == 0


def test_sigterm_lets_the_active_job_finish_within_the_grace_period(env: dict[str, str],
                                                                   workers: WorkerProcesses) -> None:
    worker, queue = sigterm_mid_render(env, workers, grace_seconds=60)
    assert worker.wait(60) == 0
    status = queue.status("heavy-1")
    assert status is not None and (status.state, status.attemptsMade) == ("completed", 1)


def test_long_running_worker_serves_prometheus_metrics(env: dict[str, str], workers: WorkerProcesses) -> None:
    import urllib.request

    from local.redis_server import free_port

    port = free_port()
    queue = queue_for(env)
    job = heavy_job("small-1")
    job["dryRun"] = True
    queue.admit(job)
    workers.start(PREVIEW_METRICS_PORT=str(port))
    wait_for(lambda: (s := queue.status("small-1")) and s.state == "completed", 60, 0.05)

    def scrape() -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                return str(response.read().decode())
        except OSError:
            return ""

    text = wait_for(lambda: (t := scrape()) and 'outcome="dryrun"' in t and t, 10, 0.1)
    assert 'preview_worker_job_outcomes_total{outcome="dryrun"} 1.0' in text
    assert "preview_worker_job_duration_seconds_bucket" in text


# A worker process built as `python -m functions.render_worker` builds it, watched from a thread
# of its own: once the worker's start-up has frozen the heap, the numbers, then a stop.
FREEZE_PROBE = """
import gc, json, threading, time
from shared import wiring

worker = wiring.services().worker
seen = {"before": gc.get_freeze_count()}

def watch():
    deadline = time.monotonic() + 20  # a worker that never freezes is stopped all the same
    while not gc.get_freeze_count() and time.monotonic() < deadline:
        time.sleep(0.001)
    seen["frozen"], seen["tracked"] = gc.get_freeze_count(), len(gc.get_objects())
    worker.stop()

threading.Thread(target=watch, daemon=True).start()
seen["code"] = worker.run_forever()

def full_collection_s():
    return min(-time.perf_counter() + (gc.collect(), time.perf_counter())[1] for _ in range(5))

seen["after"], seen["tracked_after"] = gc.get_freeze_count(), len(gc.get_objects())
seen["frozen_s"] = full_collection_s()
gc.unfreeze()
seen["unfrozen_s"] = full_collection_s()
print(json.dumps(seen))
"""


def test_the_worker_freezes_its_start_up_heap(env: dict[str, str]) -> None:
    import json

    result = subprocess.run([sys.executable, "-c", FREEZE_PROBE], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60, check=True)
    seen = json.loads(result.stdout.splitlines()[-1])
    assert seen["before"] == 0 and seen["code"] == 0
    # what the imports and the wiring made (some 35,000 objects), out of the collector's sight...
    assert seen["frozen"] > 10_000, seen
    assert seen["tracked"] < 1_000, seen
    # ...and out of a full collection's walk once the worker has run: it stays frozen (but for
    # the few objects freed since), and what a collection walks is what the run made
    assert seen["after"] > seen["frozen"] * 0.9 and seen["tracked_after"] < seen["frozen"] // 5, seen
    assert seen["frozen_s"] < seen["unfrozen_s"], seen


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_burst_of_sigterms_stops_the_worker(env: dict[str, str], workers: WorkerProcesses, processes: str) -> None:
    """SIGTERM after SIGTERM (a supervisor's forward and a process group's, an impatient operator):
    the worker, and the supervisor of several, stop as for one. A handler that took a lock the
    interrupted main thread held (an Event's, a log line's) hung the process for good."""
    queue = queue_for(env)
    worker = workers.start(PREVIEW_WORKER_PROCESSES=processes, PREVIEW_SHUTDOWN_GRACE_SECONDS="1")
    wait_for(lambda: queue.workers_seen(0)[0] == int(processes), 30)
    deadline = time.monotonic() + 20
    while worker.poll() is None and time.monotonic() < deadline:  # signals all through its stop
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signal.SIGTERM)
    assert worker.poll() is not None, "the worker hung on a burst of SIGTERMs"
    # 0, or killed by a signal that came after the interpreter gave its handler up at exit
    assert worker.wait(1) in (0, -signal.SIGTERM)
    if processes == "2":  # and no child is left behind
        wait_for(lambda: queue.workers_seen(0)[0] == 0, 10)
