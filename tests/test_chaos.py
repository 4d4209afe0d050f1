"""Chaos: long-running worker processes killed with SIGKILL at random while a batch of small
real renders drains. Every job must end completed, once, with one artifact set, and nothing
temporary may be left under DATA_DIR once the last worker has exited cleanly.

The counts are shown in the terminal summary ("chaos" section)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis
from PIL import Image

from shared import wiring
from shared.artifacts import layout
from shared.queue import JobQueue
from shared.settings import Settings
from tests.conftest import ROOT, load_event
from tests.handlers import body, invoke

pytestmark = [pytest.mark.process, pytest.mark.slow]

JOBS = 24
WORKERS = 3
MAX_KILLS = 10
WARM_S = 1.5  # a worker process imports PyAV and claims its first job within about a second
BOUND_S = 50  # the whole drain, kills and restarts included
FORMATS = ("mp4", "webm", "gif")
PROJECT = "proj-chaos"

FIGURES: list[str] = []


class _Summary:
    """Puts the chaos figures into the terminal summary."""

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if FIGURES:
            terminalreporter.section("chaos")
            for line in FIGURES:
                terminalreporter.write_line(line)


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Any:
    manager = request.config.pluginmanager
    if not manager.has_plugin("chaos-figures"):
        manager.register(_Summary(), "chaos-figures")

    def add(line: str) -> None:
        print(line)
        FIGURES.append(line)

    return add


def png(colour: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (320, 180), colour).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def small_job(n: int) -> dict[str, Any]:
    """A real render of a few tenths of a second: 320x180, 24 s in 12 steps, every other with an image."""
    steps = [{"title": f"Step {k}", "text": "Fold the strip and join its ends.", "durationSec": 2,
              **({"asset": "img"} if k % 2 else {})} for k in range(12)]
    return {"jobId": f"chaos-{n:02d}", "projectId": PROJECT, "requestId": f"req-{n}", "dryRun": False,
            "previewRequest": {"steps": steps, "assets": [{"id": "img", "type": "image",
                                                           "uri": png((30 * (n % 8), 120, 200))}],
                               "audio": {}, "options": {"resolution": "320x180", "fps": 30,
                                                        "format": FORMATS[n % len(FORMATS)]}}}


def enqueue(document: dict[str, Any]) -> None:
    """Through the enqueue function, as an HTTP API event."""
    event = load_event("enqueue_job", "minimal")
    event["body"] = json.dumps(document)
    event["headers"]["content-length"] = str(len(event["body"]))
    response = invoke("enqueue_job", event)
    assert response["statusCode"] == 202, body(response)


class Workers:
    """`python -m functions.render_worker` processes, as deploy/preview-worker.service runs them."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []
        self.started: dict[int, float] = {}

    def start(self, *, code: str | None = None, **extra: str) -> subprocess.Popen[bytes]:
        command = ["-c", code] if code else ["-m", "functions.render_worker"]
        with (self.logs / f"worker-{len(self.procs)}.log").open("wb") as log:
            proc = subprocess.Popen([sys.executable, *command], cwd=ROOT, env={**self.env, **extra},
                                    stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        self.started[proc.pid] = time.monotonic()
        return proc

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def wait_up(self, queue: JobQueue, procs: list[subprocess.Popen[bytes]], timeout: float = 30) -> None:
        """Until each of `procs` has sent its first worker heartbeat (its id holds its pid)."""
        deadline = time.monotonic() + timeout
        pids = {str(p.pid) for p in procs}
        while time.monotonic() < deadline:
            seen = {str(member).split(":")[1] for member in queue.redis.zrange(queue.keys.workers, 0, -1)}
            if pids <= seen:
                return
            time.sleep(0.05)
        raise AssertionError(f"workers {sorted(pids)} not up within {timeout} s")

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for path in sorted(self.logs.glob("worker-*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    with contextlib.suppress(json.JSONDecodeError):  # a line cut short by SIGKILL
                        lines.append(json.loads(line))
        return lines


def test_workers_killed_at_random_while_a_batch_drains(redis_url: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch, report: Any) -> None:
    data_dir = tmp_path / "data"
    env = {**os.environ, "REDIS_URL": redis_url, "DATA_DIR": str(data_dir), "PREVIEW_LEASE_MS": "2000",
           "PREVIEW_WORKER_CONCURRENCY": "1", "PREVIEW_METRICS_PORT": "0", "PREVIEW_BACKOFF_MS": "100",
           "PREVIEW_JOB_ATTEMPTS": "10", "PREVIEW_QUEUE_MAX": "100", "PREVIEW_SHUTDOWN_GRACE_SECONDS": "10"}
    for key in ("DATA_DIR", "PREVIEW_QUEUE_MAX", "PREVIEW_JOB_ATTEMPTS", "PREVIEW_LEASE_MS"):
        monkeypatch.setenv(key, env[key])
    wiring.reset()
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    logs = tmp_path / "logs"
    logs.mkdir()
    workers = Workers(env, logs)
    queue = JobQueue(redis.Redis.from_url(redis_url, decode_responses=True), Settings.from_env(env))
    try:
        # Given a batch of small real renders admitted through the enqueue function
        for n in range(JOBS):
            enqueue(small_job(n))
        # When three workers drain it while, every 0.4 to 1.5 s, one of them (a warm one if any)
        # dies by SIGKILL and another starts in its place
        started = time.monotonic()
        for _ in range(WORKERS):
            workers.start()
        kills = 0
        mid_render = 0
        while queue.counts().completed < JOBS:
            assert time.monotonic() - started < BOUND_S, f"not drained in {BOUND_S} s: {queue.counts()}"
            time.sleep(rng.uniform(0.4, 1.5))
            if kills < MAX_KILLS:
                # A warm worker (started over a second ago) is likely mid-render
                alive = workers.alive()
                warm = [p for p in alive if time.monotonic() - workers.started[p.pid] > WARM_S]
                victim = rng.choice(warm or alive)
                active = queue.counts().active
                victim.send_signal(signal.SIGKILL)
                victim.wait(10)
                kills += 1
                mid_render += active > 0
                workers.start()
        drained = time.monotonic() - started
        # Then the workers stop cleanly; a last one starts (sweeping what the killed ones left
        # in the scratch space) and stops too
        running = workers.alive()
        workers.wait_up(queue, running)  # not while still importing, before its signal handlers
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        assert [proc.wait(30) for proc in running] == [0] * len(running)
        last = workers.start()
        workers.wait_up(queue, [last])  # it swept the scratch space before its first heartbeat
        last.send_signal(signal.SIGTERM)
        assert last.wait(30) == 0

        # Every job completed (none failed) ...
        counts = queue.counts()
        assert (counts.completed, counts.failed, counts.waiting, counts.active, counts.delayed) == (JOBS, 0, 0, 0, 0)
        completed_set = queue.redis.zrange(queue.keys.completed, 0, -1)
        ids = [small_job(n)["jobId"] for n in range(JOBS)]
        assert sorted(completed_set) == ids
        statuses = {job_id: queue.status(job_id) for job_id in ids}
        assert all(s is not None and s.state == "completed" for s in statuses.values())
        attempts = sum(s.attemptsMade for s in statuses.values() if s is not None)
        # ... once: no worker saw a second completion of any job
        finished = [line for line in workers.log_lines() if line.get("message") == "job finished"]
        completions = Counter(line["jobId"] for line in finished if line.get("outcome") == "completed")
        assert max(completions.values(), default=0) == 1, completions.most_common(3)
        # ... with exactly one artifact set each, matching its manifest
        project = data_dir / "previews" / PROJECT
        assert sorted(p.name for p in project.iterdir() if p.name != ".lock") == ids
        for n, job_id in enumerate(ids):
            folder = project / job_id
            manifest = json.loads((folder / layout.MANIFEST).read_text())
            listed = {entry["name"]: entry for entry in manifest["files"]}
            assert sorted(p.name for p in folder.iterdir()) == sorted([*listed, layout.MANIFEST])
            assert layout.video_name(FORMATS[n % len(FORMATS)]) in listed
            for name, entry in listed.items():
                assert layout.sha256_file(folder / name) == entry["sha256"], f"{job_id}/{name}"
                assert (folder / name).stat().st_size == entry["bytes"]
        # ... and nothing temporary left under DATA_DIR
        scratch = data_dir / "tmp"
        assert not scratch.exists() or list(scratch.iterdir()) == []
        assert not [p for p in data_dir.rglob("*") if p.name.startswith((".tmp-", ".old-", ".del-"))]

        retries = attempts - JOBS
        report(f"chaos (seed {seed}): {JOBS} jobs, {WORKERS} workers, {kills} SIGKILLs ({mid_render} while a job was "
               f"active), {len(workers.procs)} worker processes started")
        report(f"chaos: drained in {drained:.1f} s; {attempts} attempts = {retries} retries; "
               f"{len(completed_set)} completed (completion logged once for {len(completions)} jobs, "
               f"never twice); {len(ids)} artifact sets, each matching its manifest; 0 failed; "
               f"0 scratch or staging folders left")
    finally:
        workers.kill_all()
        queue.redis.close()


# The worker process as users run it, but each publish stops after copying its first file.
STALLED_PUBLISH = """
import os, sys, time
from pathlib import Path
from shared.artifacts import files
copy = files.copy_synced
def stalled(src, dst):
    copy(src, dst)
    Path(os.environ["PUBLISH_MARK"]).write_text(str(dst.parent))
    time.sleep(600)
files.copy_synced = stalled
from functions.render_worker.__main__ import main
sys.exit(main())
"""


def test_a_worker_killed_while_publishing_leaves_nothing_behind(redis_url: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "data"
    env = {**os.environ, "REDIS_URL": redis_url, "DATA_DIR": str(data_dir), "PREVIEW_LEASE_MS": "2000",
           "PREVIEW_WORKER_CONCURRENCY": "1", "PREVIEW_METRICS_PORT": "0", "PREVIEW_BACKOFF_MS": "100"}
    monkeypatch.setenv("DATA_DIR", env["DATA_DIR"])
    wiring.reset()
    logs = tmp_path / "logs"
    logs.mkdir()
    workers = Workers(env, logs)
    queue = JobQueue(redis.Redis.from_url(redis_url, decode_responses=True), Settings.from_env(env))
    mark = tmp_path / "publishing"
    try:
        enqueue(small_job(0))
        # Given a worker killed with SIGKILL halfway through publishing the artifacts
        stalled = workers.start(code=STALLED_PUBLISH, PUBLISH_MARK=str(mark))
        deadline = time.monotonic() + 60
        while not mark.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        staging = Path(mark.read_text())
        assert staging.is_dir() and staging.name.startswith(".tmp-")
        stalled.send_signal(signal.SIGKILL)
        stalled.wait(10)
        # When the next worker runs, renders the job again and stops
        workers.start()
        deadline = time.monotonic() + 60
        while (s := queue.status("chaos-00")) is not None and s.state != "completed":
            assert time.monotonic() < deadline, s
            time.sleep(0.05)
        running = workers.alive()
        workers.wait_up(queue, running)
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        assert [proc.wait(30) for proc in running] == [0] * len(running)
        # Then the job has one artifact set, and the half-published copy is gone with the
        # killed worker's scratch space
        status = queue.status("chaos-00")
        assert status is not None and (status.state, status.attemptsMade) == ("completed", 2)
        folder = data_dir / "previews" / PROJECT / "chaos-00"
        manifest = json.loads((folder / layout.MANIFEST).read_text())
        assert sorted(p.name for p in folder.iterdir()) == sorted([*(e["name"] for e in manifest["files"]),
                                                                   layout.MANIFEST])
        assert not staging.exists()
        assert not [p for p in data_dir.rglob("*") if p.name.startswith((".tmp-", ".old-", ".del-"))]
        assert list((data_dir / "tmp").iterdir()) == []
    finally:
        workers.kill_all()
        queue.redis.close()
