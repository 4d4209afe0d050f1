"""The use cases on fakes: no Redis, no store, no socket. Each takes what it needs, so a
queue that answers from memory is enough to see what admission, status, artifact and health
do with its answers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared import service
from shared.contract import canonical_json
from shared.errors import InvalidPayload, JobNotCompleted, JobNotFound, StoreUnavailable
from shared.models import AdmitResult, JobStatus, QueueCounts
from shared.settings import Settings

SETTINGS = Settings.from_env({})
JOB = {"jobId": "job-1", "projectId": "proj-1", "requestId": "req-1", "dryRun": True,
       "previewRequest": {"steps": [], "assets": [], "audio": {}}}


class FakeQueue:
    """Answers like JobQueue, from a dict."""

    def __init__(self, state: str = "completed", down: bool = False) -> None:
        self.admitted: list[dict[str, Any]] = []
        self.state = state
        self.down = down

    def admit(self, payload: dict[str, Any], document: str | None = None) -> AdmitResult:
        assert document is None or document == canonical_json(payload)  # what JobQueue.admit would store
        created = payload["jobId"] not in {p["jobId"] for p in self.admitted}
        self.admitted.append(payload)
        return AdmitResult(jobId=payload["jobId"], created=created, state="waiting")

    def status(self, job_id: str) -> JobStatus | None:
        if job_id != "job-1":
            return None
        return JobStatus(jobId=job_id, projectId="proj-1", state=self.state, priority="normal",  # type: ignore[arg-type]
                         progress=100, attemptsMade=1, attemptsMax=5, createdAt=None, processedOn=None,
                         finishedOn=None, failedReason=None)

    def counts(self) -> QueueCounts:
        if self.down:
            raise StoreUnavailable("Redis is unreachable; try again shortly")
        return QueueCounts(name="q", waiting=1, active=0, completed=0, failed=0, delayed=0, total=1)

    def oldest_waiting_ms(self) -> int | None:
        return None

    def workers_seen(self, since_ms: int) -> tuple[int, int | None]:
        return 0, None


class FakeStore:
    def __init__(self, manifest: dict[str, Any] | None) -> None:
        self.manifest = manifest

    def read_manifest(self, project_id: str, job_id: str) -> dict[str, Any] | None:
        return self.manifest

    def signed_url(self, project_id: str, job_id: str, name: str, ttl: int, base: str | None) -> tuple[str, datetime]:
        return f"{base}/{project_id}/{job_id}/{name}", datetime(2030, 1, 1, tzinfo=UTC)

    def publish(self, project_id: str, job_id: str, src_dir: Path) -> dict[str, Any]:
        raise AssertionError("not used")

    def delete(self, project_id: str, job_id: str) -> None:
        raise AssertionError("not used")


def test_admission_kicks_the_worker_once_per_new_job() -> None:
    queue, kicked = FakeQueue(), []
    first = service.enqueue(dict(JOB), settings=SETTINGS, queue=queue, kick=kicked.append)  # type: ignore[arg-type]
    again = service.enqueue(dict(JOB), settings=SETTINGS, queue=queue, kick=kicked.append)  # type: ignore[arg-type]
    assert (first.created, again.created) == (True, False)
    assert kicked == ["job-1"]


def test_an_invalid_job_reaches_neither_queue_nor_worker() -> None:
    queue, kicked = FakeQueue(), []
    with pytest.raises(InvalidPayload):
        service.enqueue({**JOB, "jobId": "../x"}, settings=SETTINGS, queue=queue, kick=kicked.append)  # type: ignore[arg-type]
    assert queue.admitted == [] and kicked == []


def test_artifact_lists_every_file_and_points_at_the_video() -> None:
    files = [{"name": n, "contentType": "x", "bytes": 1, "sha256": "0" * 64}
             for n in ("captions.vtt", "poster.png", "preview.json", "preview.webm")]
    store = FakeStore({"files": files})
    answer = service.job_artifact(FakeQueue(), store, "job-1", origin="http://o", ttl_seconds=60)  # type: ignore[arg-type]
    assert answer.url == "http://o/proj-1/job-1/preview.webm"
    assert answer.manifestUrl == "http://o/proj-1/job-1/container.json"
    assert [f.url for f in answer.files][0] == "http://o/proj-1/job-1/captions.vtt"
    assert answer.expiresAt == "2030-01-01T00:00:00.000Z"
    dry_run = FakeStore({"files": files[2:3]})
    assert service.job_artifact(FakeQueue(), dry_run, "job-1", origin="", ttl_seconds=60).url.endswith(  # type: ignore[arg-type]
        "/preview.json")


def test_artifact_refusals() -> None:
    with pytest.raises(JobNotFound):
        service.job_artifact(FakeQueue(), FakeStore(None), "other", origin="", ttl_seconds=60)  # type: ignore[arg-type]
    with pytest.raises(JobNotCompleted):
        service.job_artifact(FakeQueue("active"), FakeStore(None), "job-1", origin="", ttl_seconds=60)  # type: ignore[arg-type]
    with pytest.raises(JobNotFound, match="no longer available"):
        service.job_artifact(FakeQueue(), FakeStore(None), "job-1", origin="", ttl_seconds=60)  # type: ignore[arg-type]


def test_health_says_why_it_is_unhealthy() -> None:
    report = service.health(FakeQueue(), SETTINGS)  # type: ignore[arg-type]
    assert report.status == "unhealthy" and report.problems == ["no worker heartbeat in the last 900 s"]
    down = service.health(FakeQueue(down=True), SETTINGS)  # type: ignore[arg-type]
    assert down.redis.status == "disconnected" and service.health_status_code(down) == 503
