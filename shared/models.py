"""Typed records: job status, queue counts, admission results, job outcomes, API responses."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from shared.contract import DEFAULT_PRIORITY

JobState = Literal["waiting", "active", "delayed", "completed", "failed"]


class JobOutcome(StrEnum):
    """How one attempt at a job ended in a worker (the `outcome` label of the job metric)."""

    COMPLETED = "completed"
    DRYRUN = "dryrun"  # a dry run completed
    RETRIED = "retried"  # failed, will be tried again after a backoff
    FAILED = "failed"  # failed for the last time: a dead letter
    INVALID = "invalid"  # failed at once: retrying cannot help (bad payload or asset)
    STALLED = "stalled"  # its worker vanished; recovery put it back or failed it
    LOST = "lost"  # another worker owns the job now (this one's lease ran out)
    RELEASED = "released"  # handed back unharmed at shutdown
    DEFERRED = "deferred"  # left queued: the Lambda invocation had too little time left

    @property
    def counted(self) -> bool:
        """Whether the job metric counts it (lost, released and deferred are no outcome of
        the job itself: someone else finishes it)."""
        return self not in (JobOutcome.LOST, JobOutcome.RELEASED, JobOutcome.DEFERRED)


COUNTED_OUTCOMES = tuple(o for o in JobOutcome if o.counted)


def iso_ms(epoch_ms: int | str | None) -> str | None:
    """Epoch milliseconds as `2025-10-08T12:00:00.000Z` (None stays None)."""
    if epoch_ms in (None, ""):
        return None
    moment = datetime.fromtimestamp(int(epoch_ms) / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def utc_now_iso() -> str:
    return iso_ms(int(datetime.now(tz=UTC).timestamp() * 1000)) or ""


class ApiModel(BaseModel):
    model_config = ConfigDict(frozen=True)


class QueueCounts(ApiModel):
    name: str
    waiting: int
    active: int
    completed: int
    failed: int
    delayed: int
    total: int


class JobStatus(ApiModel):
    jobId: str
    projectId: str
    state: JobState
    priority: str
    progress: int
    attemptsMade: int
    attemptsMax: int
    createdAt: str | None
    processedOn: str | None
    finishedOn: str | None
    failedReason: str | None

    @classmethod
    def from_hash(cls, fields: dict[str, str]) -> JobStatus:
        return cls(
            jobId=fields["id"],
            projectId=fields.get("projectId", ""),
            state=fields["state"],  # type: ignore[arg-type]
            priority=fields.get("priority", DEFAULT_PRIORITY),
            progress=int(float(fields.get("progress") or 0)),
            attemptsMade=int(fields.get("attemptsMade") or 0),
            attemptsMax=int(fields.get("attemptsMax") or 1),
            createdAt=iso_ms(fields.get("createdAt")),
            processedOn=iso_ms(fields.get("processedOn")),
            finishedOn=iso_ms(fields.get("finishedOn")),
            failedReason=fields.get("failedReason") or None,
        )


class AdmitResult(ApiModel):
    jobId: str
    created: bool
    state: JobState


class EnqueueResponse(ApiModel):
    jobId: str
    status: str
    state: JobState
    statusUrl: str
    artifactUrl: str


class ArtifactFile(ApiModel):
    name: str
    contentType: str
    bytes: int
    sha256: str
    url: str | None = None


class ArtifactResponse(ApiModel):
    jobId: str
    url: str
    expiresAt: str
    files: list[ArtifactFile]
    manifestUrl: str


class RedisHealth(ApiModel):
    status: Literal["connected", "disconnected"]
    url: str
    error: str | None = None


class WorkerHealth(ApiModel):
    recent: int
    lastSeen: str | None


class HealthReport(ApiModel):
    status: Literal["healthy", "unhealthy"]
    timestamp: str
    redis: RedisHealth
    queue: QueueCounts | dict[str, Any]
    workers: WorkerHealth | None = None
    oldestWaitingSeconds: float | None = None
    problems: list[str] = []
