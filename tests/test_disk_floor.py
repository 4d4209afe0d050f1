"""The free-disk floor (PREVIEW_MIN_FREE_DISK_MB): below it on DATA_DIR's disk the long-running
worker claims no job (they wait, unharmed) and health answers 503 saying why; once there is room
again the jobs are rendered. The floor is set above the real free space, so no disk is filled,
except in the last test, which takes a few hundred MB away for a moment with a preallocated file
to watch the worker resume by itself."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared import disk, wiring
from shared.settings import Settings
from shared.worker import Worker
from tests.conftest import load_event
from tests.handlers import body, invoke, invoke_fixture

SHORTAGE = re.compile(r"free disk (\d+) MB below the (\d+) MB floor on (.+): the worker claims no job")


def enqueue(job_id: str) -> None:
    event = load_event("enqueue_job", "success")  # a dry run
    document = json.loads(event["body"])
    document.update(jobId=job_id, requestId=f"req-{job_id}")
    event["body"] = json.dumps(document)
    assert invoke("enqueue_job", event)["statusCode"] == 202


def state(job_id: str) -> dict[str, Any]:
    event = load_event("job_status", "success")
    event["pathParameters"] = {"jobId": job_id}
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/api/preview/job/{job_id}/status"
    document: dict[str, Any] = body(invoke("job_status", event))
    return document


def health() -> tuple[int, dict[str, Any]]:
    response = invoke_fixture("worker_health", "healthy")
    return response["statusCode"], body(response)


def wait_until(condition: Any, timeout: float, what: str) -> float:
    """Seconds it took for `condition()` to hold."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"{what} within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.fixture
def running_worker() -> Iterator[Any]:
    """Start the long-running worker (process mode) on the current settings; stopped after."""
    started: list[tuple[Worker, threading.Thread]] = []

    def start() -> Worker:
        worker = wiring.services().new_worker()
        thread = threading.Thread(target=worker.run_forever, name="test-worker", daemon=True)
        thread.start()
        started.append((worker, thread))
        return worker

    def stop() -> None:
        while started:
            worker, thread = started.pop()
            worker.stop()
            thread.join(30)
            assert not thread.is_alive()

    start.stop = stop  # type: ignore[attr-defined]
    yield start
    stop()


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def set_floor(monkeypatch: pytest.MonkeyPatch, floor_mb: float) -> Settings:
    monkeypatch.setenv("PREVIEW_MIN_FREE_DISK_MB", f"{floor_mb:.0f}")
    wiring.reset()
    return wiring.services().settings


def test_below_the_floor_nothing_is_claimed_and_health_says_why(
        redis_url: str, monkeypatch: pytest.MonkeyPatch, running_worker: Any, caplog: pytest.LogCaptureFixture) -> None:
    # Given a floor 1 GB above the free space there is
    data_dir = Settings.from_env().data_dir
    floor = disk.free_mb(data_dir) + 1024
    set_floor(monkeypatch, floor)
    jobs = ["floor-job-0", "floor-job-1"]
    for job in jobs:
        enqueue(job)
    # When the worker runs
    running_worker()
    # Then it keeps its heartbeat but claims nothing: the jobs wait, not one attempt spent
    wait_until(lambda: health()[1].get("workers", {}).get("recent", 0) >= 1, 10, "a worker heartbeat")
    time.sleep(2.5)  # over two checks of the floor
    assert [(state(j)["state"], state(j)["attemptsMade"]) for j in jobs] == [("waiting", 0), ("waiting", 0)]
    # ...and health answers 503 with the reason, the configured data dir named as it is set
    status, report = health()
    assert status == 503 and report["status"] == "unhealthy"
    low = [m for p in report["problems"] if (m := SHORTAGE.fullmatch(p))]
    assert len(low) == 1, report["problems"]
    free, shown_floor, shown_dir = low[0].groups()
    assert int(shown_floor) == round(floor) and int(free) < int(shown_floor) and shown_dir == str(data_dir)
    assert not [p for p in report["problems"] if "heartbeat" in p]  # the worker is alive, only waiting
    probe = invoke_fixture("health_probe", "scheduled")
    assert probe["status"] == "unhealthy" and [p for p in probe["problems"] if SHORTAGE.fullmatch(p)]
    # One log line for the change of state, not one per loop or per check
    assert messages(caplog).count("not claiming jobs: low on disk") == 1, messages(caplog)

    # When the floor is lowered (the worker restarted with the new setting)
    running_worker.stop()
    set_floor(monkeypatch, 0)
    running_worker()
    # Then the jobs are rendered and health is back
    took = wait_until(lambda: all(state(j)["state"] == "completed" for j in jobs), 30, "both jobs completed")
    print(f"\nboth jobs completed {took:.2f} s after the floor was lowered")
    assert health()[0] == 200


def test_the_worker_function_claims_nothing_below_the_floor(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The render worker function (scheduled, or kicked by an enqueue: in the emulator it runs
    beside the long-running worker) keeps the same floor."""
    set_floor(monkeypatch, disk.free_mb(Settings.from_env().data_dir) + 1024)
    enqueue("function-job")
    summary = invoke_fixture("render_worker", "scheduled")
    assert summary["processed"] == 0 and state("function-job")["state"] == "waiting"
    set_floor(monkeypatch, 0)
    assert invoke_fixture("render_worker", "scheduled")["processed"] == 1
    assert state("function-job")["state"] == "completed"


@pytest.mark.slow
def test_the_worker_resumes_by_itself_when_space_comes_back(
        redis_url: str, monkeypatch: pytest.MonkeyPatch, running_worker: Any, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    data_dir = Settings.from_env().data_dir
    free = disk.free_mb(data_dir)
    if free < 2048:
        pytest.skip(f"only {free:.0f} MB free: not taking any of it away")
    # Given a floor 300 MB below the free space, and a worker running
    floor = free - 300
    set_floor(monkeypatch, floor)
    running_worker()
    wait_until(lambda: health()[1].get("workers", {}).get("recent", 0) >= 1, 10, "a worker heartbeat")
    # When 600 MB are taken (preallocated, not written) and a job arrives
    ballast = tmp_path / "ballast"
    fd = os.open(ballast, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        try:
            os.posix_fallocate(fd, 0, 600 * disk.MB)
        except OSError as exc:
            pytest.skip(f"no preallocation on this file system: {exc}")
    finally:
        os.close(fd)
    try:
        if disk.free_mb(data_dir) >= floor:
            pytest.skip("preallocation did not take the space on this file system")
        time.sleep(1.5)  # the floor is read once a second
        enqueue("resume-job")
        time.sleep(2.5)
        # Then it waits, and health says why
        assert state("resume-job")["state"] == "waiting"
        assert [p for p in health()[1]["problems"] if SHORTAGE.fullmatch(p)]
    finally:
        ballast.unlink()
    # When the space comes back, the worker claims again by itself
    took = wait_until(lambda: state("resume-job")["state"] == "completed", 15, "the job completed")
    print(f"\nthe job completed {took:.2f} s after the space came back")
    assert health()[0] == 200
    logged = messages(caplog)
    assert logged.count("not claiming jobs: low on disk") == 1, logged
    assert [m for m in logged if m.startswith("claiming jobs again")], logged
