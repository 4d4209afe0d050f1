"""The worker's queue semantics with controlled renders: retries and dead letters, leases
that outlive a render holding the CPU, Lambda time budgets, graceful shutdown."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from shared import disk, prometheus_metrics, wiring
from shared.contract import JobRequest
from shared.errors import InvalidAsset, TransientRenderError
from shared.queue import JobQueue
from shared.settings import Settings
from shared.worker import Worker


class FolderStore:
    """A store that keeps what was published, to count artifact sets."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str, list[str]]] = []

    def publish(self, project_id: str, job_id: str, src_dir: Path) -> dict[str, Any]:
        self.published.append((project_id, job_id, sorted(p.name for p in src_dir.iterdir())))
        return {}


def configure(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    wiring.reset()
    return wiring.services().settings


def queue() -> JobQueue:
    return wiring.services().queue


def payload(n: int | str = 1, **extra: Any) -> dict[str, Any]:
    return {"jobId": f"job-{n}", "projectId": "proj-1", "requestId": f"req-{n}", "dryRun": False,
            "previewRequest": {"steps": [{"title": "one", "durationSec": 2}], "assets": [], "audio": {}}, **extra}


def write_file(request: JobRequest, out: Path, settings: Settings, progress: Any) -> None:
    for pct in (10, 50, 100):
        if progress:
            progress(pct)
    (out / "preview.json").write_text("{}")


def make_worker(settings: Settings, render: Any = write_file, store: Any = None) -> tuple[Worker, Any]:
    store = store or FolderStore()
    return Worker(settings, queue(), store, render=render), store


def outcome_count(outcome: str) -> float:
    return prometheus_metrics.REGISTRY.get_sample_value("preview_worker_job_outcomes_total", {"outcome": outcome}) or 0


def test_completed_job_is_published_once(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = configure(monkeypatch)
    queue().admit(payload())
    worker, store = make_worker(settings)
    before = outcome_count("completed")
    assert worker.run_until_idle()["processed"] == 1
    status = queue().status("job-1")
    assert status is not None and (status.state, status.progress, status.attemptsMade) == ("completed", 100, 1)
    assert store.published == [("proj-1", "job-1", ["preview.json"])]
    assert outcome_count("completed") == before + 1


def test_failing_render_retries_with_backoff_then_dead_letters(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = configure(monkeypatch, PREVIEW_BACKOFF_MS="100", PREVIEW_JOB_ATTEMPTS="3")
    calls: list[float] = []

    def flaky(*args: Any) -> None:
        calls.append(time.monotonic())
        raise TransientRenderError("S3 timed out fetching asset 'img-1'")

    queue().admit(payload())
    worker, store = make_worker(settings, render=flaky)
    deadline = time.monotonic() + 10
    while len(calls) < 3 and time.monotonic() < deadline:
        worker.run_until_idle()
        time.sleep(0.02)
    status = queue().status("job-1")
    assert status is not None and status.state == "failed"
    assert (status.attemptsMade, status.failedReason) == (3, "S3 timed out fetching asset 'img-1'")
    # Backoff grows: ~100 ms then ~200 ms (with ±20 % jitter).
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    assert gaps[0] >= 0.08 and gaps[1] >= 0.16 and gaps[1] > gaps[0] * 1.2
    assert worker.outcomes["retried"] == 2 and worker.outcomes["failed"] == 1
    assert store.published == []
    assert "Traceback" in (queue().job_fields("job-1", "stacktrace")["stacktrace"] or "")


def test_unexpected_exception_is_retried_with_its_type(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = configure(monkeypatch, PREVIEW_JOB_ATTEMPTS="1")

    def broken(*args: Any) -> None:
        raise ZeroDivisionError("division by zero")

    queue().admit(payload())
    worker, _ = make_worker(settings, render=broken)
    worker.run_until_idle()
    status = queue().status("job-1")
    assert status is not None and status.failedReason == "ZeroDivisionError: division by zero"


def test_invalid_asset_fails_at_once(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = configure(monkeypatch, PREVIEW_BACKOFF_MS="10")

    def bad_asset(*args: Any) -> None:
        raise InvalidAsset("asset 'img-1' is not a decodable image")

    queue().admit(payload())
    worker, _ = make_worker(settings, render=bad_asset)
    before = outcome_count("invalid")
    worker.run_until_idle()
    status = queue().status("job-1")
    assert status is not None and (status.state, status.attemptsMade) == ("failed", 1)
    assert status.failedReason == "asset 'img-1' is not a decodable image"
    assert outcome_count("invalid") == before + 1


def test_payload_invalid_under_current_config_fails_at_once(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a job admitted while its bucket was allowed, and a worker whose config no longer allows it
    settings = configure(monkeypatch, PREVIEW_ASSET_BUCKETS="old-bucket")
    doc = payload()
    doc["previewRequest"]["assets"] = [{"id": "a", "type": "image", "uri": "s3://old-bucket/a.png"}]
    queue().admit(doc)
    settings = configure(monkeypatch, PREVIEW_ASSET_BUCKETS="new-bucket")
    worker, _ = make_worker(settings)
    worker.run_until_idle()
    status = queue().status("job-1")
    assert status is not None and status.state == "failed"
    assert "not an allowed asset bucket" in (status.failedReason or "")


def test_a_job_stored_around_admission_fails_at_once_with_its_reason(redis_url: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # Given jobs put in the queue without admission (another producer, an older version)
    settings = configure(monkeypatch, PREVIEW_BACKOFF_MS="10")
    wrong_type, dangling = payload(1), payload(2)
    wrong_type["previewRequest"]["options"] = {"includeCaptions": "false"}
    dangling["previewRequest"]["steps"] = [{"asset": "ghost"}]
    queue().admit(wrong_type)
    queue().admit(dangling)
    worker, store = make_worker(settings)
    worker.run_until_idle()
    # Then each fails without retries, saying why, and nothing is published
    for job_id, reason in (("job-1", "/previewRequest/options/includeCaptions"), ("job-2", "unknown asset id 'ghost'")):
        status = queue().status(job_id)
        assert status is not None and (status.state, status.attemptsMade) == ("failed", 1)
        assert reason in (status.failedReason or "")
    assert worker.outcomes == {"invalid": 2} and store.published == []


@pytest.mark.slow
def test_render_longer_than_the_lease_is_not_rerun(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = configure(monkeypatch, PREVIEW_LEASE_MS="1000")
    runs: list[str] = []

    def cpu_hog(doc: JobRequest, out: Path, s: Settings, progress: Any) -> None:
        # Pure-Python work holds the GIL for 3 lease lengths; the heartbeat thread must still run.
        runs.append(doc.job_id)
        end = time.monotonic() + 3.0
        n = 0
        while time.monotonic() < end:
            n += sum(i * i for i in range(2000))
        (out / "preview.json").write_text(str(n))

    queue().admit(payload())
    worker, store = make_worker(settings, render=cpu_hog)
    runner = threading.Thread(target=worker.run_until_idle)
    runner.start()
    # While it renders, a second worker keeps looking for stalled jobs and work to claim.
    rival, _ = make_worker(settings)
    deadline = time.monotonic() + 5
    while not runs and time.monotonic() < deadline:
        time.sleep(0.01)
    stolen = []
    while runner.is_alive():
        rival.maintain()
        claim = rival.queue.claim().job
        if claim is not None:
            stolen.append(claim.id)
        time.sleep(0.1)
    runner.join()
    assert stolen == []
    status = queue().status("job-1")
    assert status is not None and (status.state, status.attemptsMade) == ("completed", 1)
    assert runs == ["job-1"] and len(store.published) == 1


def test_idle_worker_holds_no_renewer_thread_and_exports_gauges(redis_url: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    settings = configure(monkeypatch, PREVIEW_LEASE_MS="1000")
    # Given a warm Lambda container invoked many times
    for n in range(5):
        queue().admit(payload(n))
        make_worker(settings)[0].run_until_idle()
    time.sleep(0.6)
    # Then no lease-renewer thread outlives its jobs
    assert not [t for t in threading.enumerate() if t.name == "lease-renewer"]
    # And a worker's maintenance refreshes the per-state gauges its /metrics serves
    make_worker(settings)[0].maintain()
    value = prometheus_metrics.REGISTRY.get_sample_value("preview_queue_jobs", {"queue": "preview-jobs",
                                                                           "state": "completed"})
    assert value == 5
    assert (prometheus_metrics.REGISTRY.get_sample_value("preview_worker_last_heartbeat_seconds") or 0) > 0


def test_lambda_budget_never_starts_a_job_it_cannot_finish(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = configure(monkeypatch, PREVIEW_RENDER_MS_PER_VIDEO_SECOND="1000")
    queue().admit(payload(1))
    queue().admit(payload(2))
    worker, store = make_worker(settings)
    # The invocation's budget, then: plenty for the first job, too little for the second
    remaining = iter([60_000, 60_000, 5_000])
    summary = worker.run_until_idle(remaining_ms=lambda: next(remaining))
    assert summary["processed"] == 1 and summary["outcomes"]["deferred"] == 1
    second = queue().status("job-2")
    assert second is not None and (second.state, second.attemptsMade) == ("waiting", 0)


def test_lambda_fails_a_job_no_invocation_could_finish(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = configure(monkeypatch, PREVIEW_RENDER_MS_PER_VIDEO_SECOND="100000")
    queue().admit(payload(1, priority="high"))  # 2 s of video: ~200 s to render
    queue().admit(payload(2, dryRun=True))  # a dry run needs little time
    worker, _ = make_worker(settings)
    summary = worker.run_until_idle(remaining_ms=lambda: 60_000)
    # The oversized job fails at once instead of blocking the queue forever...
    first = queue().status("job-1")
    assert first is not None and (first.state, first.attemptsMade) == ("failed", 1)
    assert "more than the worker function's 60 s" in (first.failedReason or "")
    # ...and the queue moves on in the same invocation.
    assert summary["outcomes"] == {"invalid": 1, "dryrun": 1}
    assert queue().status("job-2").state == "completed"  # type: ignore[union-attr]


def queue_calls(monkeypatch: pytest.MonkeyPatch, queue: JobQueue) -> Counter[str]:
    """How often the worker's queue is asked to claim, complete (with `claim_next` or not) and
    release, counted as the calls are made."""
    calls: Counter[str] = Counter()

    def counting(name: str) -> Any:
        call = getattr(queue, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            calls[name + ("+claim" if kwargs.get("claim_next") else "")] += 1
            return call(*args, **kwargs)

        return counted

    for name in ("claim", "complete", "release"):
        monkeypatch.setattr(queue, name, counting(name))
    return calls


def never_claimed(job_id: str) -> bool:
    """Still waiting as admitted: no claim ever leased it (a release keeps `processedOn`)."""
    status = queue().status(job_id)
    fields = queue().job_fields(job_id, "processedOn", "token", "worker")
    return status is not None and (status.state, status.attemptsMade) == ("waiting", 0) and not any(fields.values())


def test_lambda_claims_each_next_job_as_it_completes_one(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = configure(monkeypatch)
    for n in range(3):
        queue().admit(payload(n))
    worker, store = make_worker(settings)
    calls = queue_calls(monkeypatch, worker.queue)
    summary = worker.run_until_idle(remaining_ms=lambda: 600_000)
    assert summary == {"workerId": worker.worker_id, "processed": 3, "outcomes": {"completed": 3}}
    # One claim, then each completion claims the next; the last finds the queue empty
    assert calls == {"claim": 1, "complete+claim": 3}
    assert [job_id for _, job_id, _ in store.published] == ["job-0", "job-1", "job-2"]
    # Claimed as the first one was: without liveness (an invocation renews none)
    assert queue().redis.zcard(queue().keys.alive) == 0


def test_lambda_max_jobs_claims_no_job_it_would_not_run(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = configure(monkeypatch)
    for n in range(5):
        queue().admit(payload(n))
    worker, _ = make_worker(settings)
    calls = queue_calls(monkeypatch, worker.queue)
    summary = worker.run_until_idle(remaining_ms=lambda: 600_000, max_jobs=3)
    assert summary["processed"] == 3 and summary["outcomes"] == {"completed": 3}
    # The third job's completion claims nothing: no job was taken only to be given back
    assert calls == {"claim": 1, "complete+claim": 2, "complete": 1}
    counts = queue().counts()
    assert (counts.completed, counts.waiting, counts.active) == (3, 2, 0)
    assert never_claimed("job-3") and never_claimed("job-4")


def test_lambda_releases_a_next_job_that_does_not_fit_the_time_left(redis_url: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    settings = configure(monkeypatch, PREVIEW_RENDER_MS_PER_VIDEO_SECOND="1000")
    for n in range(3):
        queue().admit(payload(n))
    worker, _ = make_worker(settings)
    calls = queue_calls(monkeypatch, worker.queue)
    # The invocation's budget, then: plenty for the first job, too little for the second (it
    # needs 7 s: 5 s of render, 2 s of safety)
    remaining = [60_000, 60_000, 4_000]
    summary = worker.run_until_idle(remaining_ms=lambda: remaining.pop(0))
    assert remaining == [] and summary["processed"] == 1
    assert summary["outcomes"] == {"completed": 1, "deferred": 1}
    # The second job came with the first one's completion, and went straight back
    assert calls == {"claim": 1, "complete+claim": 1, "release": 1}
    second = queue().status("job-1")
    assert second is not None and (second.state, second.attemptsMade) == ("waiting", 0)
    assert queue().job_fields("job-1", "token", "worker") == {"token": None, "worker": None}
    counts = queue().counts()
    assert (counts.completed, counts.waiting, counts.active) == (1, 2, 0)
    assert never_claimed("job-2")
    # Given back in its place: the next claim takes it first
    again = queue().claim().job
    assert again is not None and again.id == "job-1"


def test_lambda_makes_no_next_claim_once_below_the_disk_floor(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = configure(monkeypatch, PREVIEW_MIN_FREE_DISK_MB="100")
    free = {"mb": 1000.0}
    monkeypatch.setattr(disk, "free_mb", lambda path: free["mb"])

    def fills_the_disk(request: JobRequest, out: Path, s: Settings, progress: Any) -> None:
        write_file(request, out, s, progress)
        free["mb"] = 50.0  # what is left once this job is done

    for n in range(2):
        queue().admit(payload(n))
    worker, store = make_worker(settings, render=fills_the_disk)
    calls = queue_calls(monkeypatch, worker.queue)
    summary = worker.run_until_idle(remaining_ms=lambda: 600_000)
    assert summary["processed"] == 1 and summary["outcomes"] == {"completed": 1}
    # The completion asked for no next job, and none was claimed after it
    assert calls == {"claim": 1, "complete": 1}
    assert never_claimed("job-1") and len(store.published) == 1


def test_lost_lease_stops_the_render_and_keeps_the_new_owner(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = configure(monkeypatch, PREVIEW_LEASE_MS="1000")
    queue = wiring.services().queue
    queue.admit(payload())
    stolen = threading.Event()

    def slow(doc: JobRequest, out: Path, s: Settings, progress: Any) -> None:
        # Simulate a partition: the lease is taken over by someone else mid-render.
        queue.redis.zadd(queue.keys.active, {"job-1": 0})
        queue.recover_stalled()
        stolen.set()
        for pct in range(100):
            time.sleep(0.05)
            progress(pct)

    worker, store = make_worker(settings, render=slow)
    assert worker.run_until_idle(max_jobs=1)["outcomes"] == {"lost": 1}
    assert stolen.is_set() and store.published == []
    status = queue.status("job-1")
    assert status is not None and (status.state, status.attemptsMade) == ("waiting", 1)


def test_shutdown_hands_back_a_job_after_the_grace_period(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = configure(monkeypatch, PREVIEW_SHUTDOWN_GRACE_SECONDS="0")
    started = threading.Event()

    def endless(doc: JobRequest, out: Path, s: Settings, progress: Any) -> None:
        started.set()
        while True:
            time.sleep(0.05)
            progress(1)

    queue().admit(payload())
    worker, _ = make_worker(settings, render=endless)
    runner = threading.Thread(target=worker.run_forever, kwargs={"concurrency": 2})
    runner.start()
    assert started.wait(5)
    worker.stop()
    runner.join(10)
    assert not runner.is_alive()
    status = queue().status("job-1")
    assert status is not None and (status.state, status.attemptsMade) == ("waiting", 0)
    assert worker.outcomes["released"] == 1


@pytest.mark.slow
def test_long_running_worker_drains_the_queue_concurrently(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = configure(monkeypatch, PREVIEW_QUEUE_MAX="100")
    active = {"now": 0, "max": 0}
    lock = threading.Lock()

    def tracked(doc: JobRequest, out: Path, s: Settings, progress: Any) -> None:
        with lock:
            active["now"] += 1
            active["max"] = max(active["max"], active["now"])
        time.sleep(0.1)
        with lock:
            active["now"] -= 1
        (out / "preview.json").write_text("{}")

    for n in range(12):
        queue().admit(payload(n))
    worker, store = make_worker(settings, render=tracked)
    runner = threading.Thread(target=worker.run_forever, kwargs={"concurrency": 3})
    runner.start()
    deadline = time.monotonic() + 10
    while queue().counts().completed < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.stop()
    runner.join(10)
    assert queue().counts().completed == 12
    assert active["max"] == 3 and len(store.published) == 12
