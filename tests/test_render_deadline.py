"""Render deadlines: a render past its job's deadline is stopped (at its next progress report)
or, stuck where it cannot see it, given up on by the lease renewer; the job is retried or
dead-lettered with the reason, a late finish is refused, and the worker keeps its capacity."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from shared import prometheus_metrics
from shared.contract import JobRequest
from shared.errors import TransientRenderError
from shared.models import JobStatus
from shared.queue import JobQueue
from shared.render.assets import AssetLoader
from shared.settings import Settings
from shared.worker import Worker
from shared.worker.deadline import DEADLINE_FLOOR_S, OVERRUN_GRACE_S, render_deadline_s
from shared.worker.process_mode import STUCK_EXIT_CODE
from tests.conftest import ROOT, wait_for
from tests.test_worker import configure, queue

# The renewer looks at its leases every 0.25 s; Redis round trips and thread switches on two
# busy cores come on top.
MARGIN_S = 2.5


def payload(n: int | str, **extra: Any) -> dict[str, Any]:
    return {"jobId": f"job-{n}", "projectId": "proj-1", "requestId": f"req-{n}", "dryRun": False,
            "previewRequest": {"steps": [{"title": "one", "durationSec": 2}], "assets": [], "audio": {}}, **extra}


class FolderStore:
    def __init__(self) -> None:
        self.published: list[str] = []

    def publish(self, project_id: str, job_id: str, src_dir: Path) -> dict[str, Any]:
        assert (src_dir / "preview.json").exists()
        self.published.append(job_id)
        return {}


def write_file(out: Path, progress: Callable[[int], None] | None) -> None:
    if progress:
        progress(50)
    (out / "preview.json").write_text("{}")


def job_loops() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("job-loop-") and t.is_alive()]


def stuck_renders() -> float:
    sample = prometheus_metrics.REGISTRY.get_sample_value("preview_failures_total", {"component": "stuck_render"})
    return sample or 0


def state_of(job_id: str) -> JobStatus | None:
    return queue().status(job_id)


class Running:
    """A worker in process mode on a thread of its own, and the exit status it returned."""

    def __init__(self, worker: Worker, concurrency: int) -> None:
        self.worker = worker
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, args=(concurrency,))
        self.thread.start()

    def _run(self, concurrency: int) -> None:
        self.code = self.worker.run_forever(concurrency)

    def stop(self, timeout: float = 20) -> int | None:
        self.worker.stop()
        self.thread.join(timeout)
        return self.code


@pytest.fixture
def forever() -> Iterator[Callable[..., Running]]:
    """Start workers in process mode on threads; stopped at the end."""
    started: list[Running] = []

    def run(worker: Worker, concurrency: int = 1) -> Running:
        started.append(Running(worker, concurrency))
        return started[-1]

    yield run
    for running in started:
        running.stop()


# -- the deadline itself -------------------------------------------------------------------


def test_a_deadline_follows_the_jobs_length_and_size_between_a_floor_and_the_cap() -> None:
    settings = Settings()
    short = payload(1)
    long = payload(2)
    long["previewRequest"]["steps"] = [{"durationSec": 30} for _ in range(18)]
    full_hd = payload(3)
    full_hd["previewRequest"]["steps"] = [{"durationSec": 30} for _ in range(4)]
    full_hd["previewRequest"]["options"] = {"resolution": "1920x1080", "fps": 60}
    # A short job gets the floor (room for slow asset reads); a long one a multiple of its estimate
    assert render_deadline_s(short, settings) == DEADLINE_FLOOR_S
    assert render_deadline_s(long, settings) == 3 * (3 + 540 * 0.5) == 819
    # ...which grows with the pixels per second it encodes
    assert render_deadline_s(full_hd, settings) == math.ceil(3 * (3 + 120 * 0.5) * 4.5) == 851
    # and PREVIEW_RENDER_DEADLINE_SECONDS caps every one
    capped = Settings.from_env({"PREVIEW_RENDER_DEADLINE_SECONDS": "300"})
    assert [render_deadline_s(p, capped) for p in (short, long, full_hd)] == [180, 300, 300]
    assert render_deadline_s({"jobId": "broken"}, capped) == 180


def test_a_slow_s3_body_read_ends_within_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.contract import Asset
    from shared.render import assets

    class TrickleBody:
        reads = 0

        def read(self, n: int) -> bytes:
            # 16 bytes each 50 ms, for 2 s in all
            self.reads += 1
            time.sleep(0.05)
            return b"\x89" * 16 if self.reads <= 40 else b""

        def close(self) -> None:
            pass

    class Client:
        def get_object(self, **_: Any) -> dict[str, Any]:
            return {"Body": TrickleBody(), "ContentLength": 1_000_000}

    monkeypatch.setattr(assets, "S3_BODY_SECONDS", 0.5)
    settings = Settings.from_env({"PREVIEW_ASSET_BUCKETS": "asset-bucket"})
    loader = AssetLoader(settings, s3_client=Client())
    started = time.monotonic()
    with pytest.raises(TransientRenderError, match="reading it from S3 took over 0.5 s"):
        loader.fetch(Asset(id="pic", type="image", uri="s3://asset-bucket/pic.png"))
    assert time.monotonic() - started < 2


# -- a long-running worker -----------------------------------------------------------------


@pytest.mark.slow
def test_a_stuck_render_fails_its_job_at_the_deadline_and_the_worker_goes_on(
        redis_url: str, monkeypatch: pytest.MonkeyPatch, forever: Callable[..., Running]) -> None:
    settings = configure(monkeypatch, PREVIEW_RENDER_DEADLINE_SECONDS="1", PREVIEW_BACKOFF_MS="100")
    release = threading.Event()
    finished_late: list[str] = []

    def render(request: JobRequest, out: Path, s: Settings, progress: Any) -> None:
        if request.job_id == "job-stuck":
            # Blocked where no progress report comes: native code, a hung read; then it ends
            # without another report.
            release.wait(60)
            finished_late.append(request.job_id)
            write_file(out, None)
            return
        write_file(out, progress)

    # Given a worker with one job loop, a job on its last attempt whose render gets stuck, and
    # a job behind it
    queue().admit(payload("stuck", attempts=1))
    queue().admit(payload("next"))
    stuck_before = stuck_renders()
    loops_before = set(job_loops())
    store = FolderStore()
    worker = Worker(settings, queue(), store, render=render)
    started = time.monotonic()
    runner = forever(worker)
    # Then the stuck job is dead-lettered with the reason soon after its deadline
    failed = wait_for(lambda: (s := state_of("job-stuck")) and s.state == "failed" and s, 1 + OVERRUN_GRACE_S + 10)
    took = time.monotonic() - started
    print(f"stuck render's job failed after {took:.2f} s (deadline 1 s, grace {OVERRUN_GRACE_S} s)")
    assert failed.failedReason == "render deadline exceeded (1s)" and failed.attemptsMade == 1
    assert took < 1 + OVERRUN_GRACE_S + MARGIN_S
    assert stuck_renders() == stuck_before + 1
    # And the next job is rendered while the stuck render still blocks its thread
    wait_for(lambda: (s := state_of("job-next")) and s.state == "completed", 10)
    assert not finished_late and store.published == ["job-next"]
    # When the stuck render finally returns, its result is refused: the job stays failed
    release.set()
    wait_for(lambda: finished_late, 5)
    wait_for(lambda: worker.outcomes["lost"] == 1, 5)
    assert state_of("job-stuck").state == "failed"  # type: ignore[union-attr]
    assert store.published == ["job-next"]
    assert worker.outcomes["failed"] == 1 and worker.outcomes["completed"] == 1
    # and the worker still runs one job loop, not two
    queue().admit(payload("after"))
    wait_for(lambda: (s := state_of("job-after")) and s.state == "completed", 10)
    assert len(set(job_loops()) - loops_before) == 1
    assert runner.stop() == 0


@pytest.mark.slow
def test_a_render_that_reports_progress_but_never_ends_is_stopped_and_retried(
        redis_url: str, monkeypatch: pytest.MonkeyPatch, forever: Callable[..., Running]) -> None:
    settings = configure(monkeypatch, PREVIEW_RENDER_DEADLINE_SECONDS="1", PREVIEW_BACKOFF_MS="1000")
    calls: list[str] = []
    stopped: list[BaseException] = []

    def render(request: JobRequest, out: Path, s: Settings, progress: Any) -> None:
        calls.append(request.job_id)
        if len(calls) == 1:
            try:
                while True:  # an encoder that never reaches its end
                    time.sleep(0.02)
                    progress(10)
            except BaseException as exc:
                stopped.append(exc)
                raise
        write_file(out, progress)

    queue().admit(payload(1, attempts=3))
    store = FolderStore()
    worker = Worker(settings, queue(), store, render=render)
    started = time.monotonic()
    forever(worker)
    # The render is stopped by its own progress report once the deadline passes, and the job
    # goes to a retry (an attempt counted) with the reason
    delayed = wait_for(lambda: (s := state_of("job-1")) and s.state == "delayed" and s, 10, 0.005)
    took = time.monotonic() - started
    print(f"endless render stopped after {took:.2f} s (deadline 1 s)")
    assert (delayed.attemptsMade, delayed.failedReason) == (1, "render deadline exceeded (1s)")
    assert took < 1 + MARGIN_S
    assert [type(e).__name__ for e in stopped] == ["DeadlineExceeded"]
    # The retry renders normally and completes
    done = wait_for(lambda: (s := state_of("job-1")) and s.state == "completed" and s, 10)
    assert done.attemptsMade == 2 and store.published == ["job-1"]
    assert worker.outcomes["retried"] == 1 and worker.outcomes["completed"] == 1


@pytest.mark.slow
def test_normal_renders_within_their_deadline_are_unaffected(
        redis_url: str, monkeypatch: pytest.MonkeyPatch, forever: Callable[..., Running]) -> None:
    settings = configure(monkeypatch, PREVIEW_RENDER_DEADLINE_SECONDS="3")

    def render(request: JobRequest, out: Path, s: Settings, progress: Any) -> None:
        for pct in range(0, 100, 10):  # 1.5 s, half the deadline
            time.sleep(0.15)
            progress(pct)
        write_file(out, progress)

    for n in range(3):
        queue().admit(payload(n))
    store = FolderStore()
    worker = Worker(settings, queue(), store, render=render)
    forever(worker, 2)
    wait_for(lambda: queue().counts().completed == 3, 20, 0.05)
    assert sorted(store.published) == ["job-0", "job-1", "job-2"]
    assert worker.outcomes == {"completed": 3}
    assert all(state_of(f"job-{n}").attemptsMade == 1 for n in range(3))  # type: ignore[union-attr]


@pytest.mark.slow
def test_more_stuck_renders_than_job_loops_make_the_worker_exit_non_zero(
        redis_url: str, monkeypatch: pytest.MonkeyPatch, forever: Callable[..., Running]) -> None:
    settings = configure(monkeypatch, PREVIEW_RENDER_DEADLINE_SECONDS="1")
    release = threading.Event()

    def render(request: JobRequest, out: Path, s: Settings, progress: Any) -> None:
        release.wait(60)

    for n in range(3):
        queue().admit(payload(n, attempts=1))
    worker = Worker(settings, queue(), FolderStore(), render=render)
    try:
        runner = forever(worker)
        # One stuck render is replaced by a fresh loop; a second one stuck at once ends the process
        runner.thread.join(2 * (1 + OVERRUN_GRACE_S) + 15)
        assert not runner.thread.is_alive()
        assert runner.code == STUCK_EXIT_CODE
        states = {n: state_of(f"job-{n}").state for n in range(3)}  # type: ignore[union-attr]
        assert states == {0: "failed", 1: "failed", 2: "waiting"}
        assert state_of("job-0").failedReason == "render deadline exceeded (1s)"  # type: ignore[union-attr]
    finally:
        release.set()


# -- inside a Lambda invocation ------------------------------------------------------------


@pytest.mark.slow
def test_lambda_render_ends_within_the_invocations_time(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A cap far above the invocation's time: the time left is what bounds the render
    settings = configure(monkeypatch, PREVIEW_RENDER_DEADLINE_SECONDS="900", PREVIEW_RENDER_MS_PER_VIDEO_SECOND="100")
    release = threading.Event()

    def render(request: JobRequest, out: Path, s: Settings, progress: Any) -> None:
        release.wait(60)  # stuck: only the watchdog can end the job

    queue().admit(payload(1, attempts=1))
    worker = Worker(settings, queue(), FolderStore(), render=render)
    invocation_ends = time.monotonic() + 7.0
    runner = threading.Thread(target=worker.run_until_idle,
                              kwargs={"remaining_ms": lambda: (invocation_ends - time.monotonic()) * 1000})
    runner.start()
    try:
        # 7 s left, 2 s of safety, 2 s of grace: the render may take 2 s (whole seconds)
        failed = wait_for(lambda: (s := state_of("job-1")) and s.state == "failed" and s, 10)
        left = invocation_ends - time.monotonic()
        print(f"stuck Lambda render's job failed with {left:.2f} s of the invocation left")
        assert failed.failedReason == "render deadline exceeded (2s)"
        assert left > 0
    finally:
        release.set()
        runner.join(10)


# -- a real worker process on a hung S3 read -----------------------------------------------


@pytest.fixture
def silent_s3() -> Iterator[str]:
    """An S3 endpoint that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(2)
    server.close()
    for conn in held:
        conn.close()


@pytest.mark.process
@pytest.mark.slow
def test_worker_process_fails_a_job_stuck_on_a_hung_s3_read_and_renders_the_next(
        redis_url: str, tmp_path: Path, silent_s3: str) -> None:
    env = {**os.environ, "REDIS_URL": redis_url, "DATA_DIR": str(tmp_path / "data"), "PREVIEW_METRICS_PORT": "0",
           "PREVIEW_WORKER_CONCURRENCY": "1", "PREVIEW_RENDER_DEADLINE_SECONDS": "2",
           "PREVIEW_ASSET_BUCKETS": "stuck-assets", "AWS_ENDPOINT_URL_S3": silent_s3}
    settings = Settings.from_env(env)
    jobs = JobQueue(redis.Redis.from_url(redis_url, decode_responses=True), settings)
    hung = payload("hung", attempts=1)
    hung["previewRequest"]["steps"] = [{"title": "one", "durationSec": 1, "asset": "pic"}]
    hung["previewRequest"]["assets"] = [{"id": "pic", "type": "image", "uri": "s3://stuck-assets/pic.png"}]
    small = payload("small")
    small["previewRequest"]["options"] = {"resolution": "160x90", "fps": 5}
    jobs.admit(hung)
    jobs.admit(small)
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "functions.render_worker"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        claimed = wait_for(lambda: (s := jobs.status("job-hung")) and s.state == "active", 30)
        assert claimed
        started = time.monotonic()
        failed = wait_for(lambda: (s := jobs.status("job-hung")) and s.state == "failed" and s, 20)
        took = time.monotonic() - started
        print(f"job on a hung S3 read failed {took:.2f} s after its claim was seen (deadline 2 s)")
        assert failed.failedReason == "render deadline exceeded (2s)"
        assert took < 2 + OVERRUN_GRACE_S + MARGIN_S
        # while the read still hangs (the client's own timeout is 30 s), the next job renders
        done = wait_for(lambda: (s := jobs.status("job-small")) and s.state == "completed" and s, 30)
        assert done.attemptsMade == 1
        files = sorted(p.name for p in (tmp_path / "data" / "previews" / "proj-1" / "job-small").iterdir())
        assert files == ["captions.vtt", "container.json", "poster.png", "preview.json", "preview.mp4"]
        assert not (tmp_path / "data" / "previews" / "proj-1" / "job-hung").exists()
        # and the worker still stops on SIGTERM at once, though the read still hangs
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert "render stuck past its deadline" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        jobs.redis.close()
