"""Typed records: job status, queue counts, admission results, job outcomes, API responses."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal, Self

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


class ApiModel:
    """A frozen record, most of them a response body: built from keywords (every field without
    a default given, no other), its fields the annotated class attributes in their order (a
    subclass's after its base's), the defaults the values assigned to them (a list default is
    copied for each record). Types are the caller's to keep (mypy checks them); `as_json()` is
    the body, its fields in their order.

    Not a dataclass: each of those is code generated and compiled as its module loads, which
    every HTTP function's cold start would pay for each of these records."""

    __field_names__: ClassVar[tuple[str, ...]] = ()
    __field_defaults__: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = [name for name, annotation in cls.__dict__.get("__annotations__", {}).items()
               if not str(annotation).startswith(("ClassVar", "typing.ClassVar"))]
        cls.__field_names__ = (*cls.__field_names__, *(name for name in own if name not in cls.__field_names__))
        cls.__field_defaults__ = {**cls.__field_defaults__,
                                  **{name: cls.__dict__[name] for name in own if name in cls.__dict__}}

    def __init__(self, **values: Any) -> None:
        defaults = self.__field_defaults__
        missing = [name for name in self.__field_names__ if name not in values and name not in defaults]
        unknown = values.keys() - set(self.__field_names__)
        if missing or unknown:
            problem = f"missing {', '.join(missing)}" if missing else f"no field {', '.join(sorted(unknown))}"
            raise TypeError(f"{type(self).__name__}: {problem}")
        for name in self.__field_names__:
            if name in values:
                value = values[name]
            else:
                value = defaults[name]
                if isinstance(value, list | dict):
                    value = value.copy()
            object.__setattr__(self, name, value)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The fields, in their order."""
        return cls.__field_names__

    @classmethod
    def required_fields(cls) -> tuple[str, ...]:
        """The fields without a default (which every construction must give)."""
        return tuple(name for name in cls.__field_names__ if name not in cls.__field_defaults__)

    def as_dict(self) -> dict[str, Any]:
        """Every field's value as it is (nested records stay records), in their order."""
        return {name: getattr(self, name) for name in self.__field_names__}

    def as_json(self, *, exclude_none: bool = False) -> dict[str, Any]:
        """The record as a JSON object, nested records too; `exclude_none` leaves out the fields
        (of this record and of the records in it) that are None."""
        body = {}
        for name in self.__field_names__:
            value = getattr(self, name)
            if value is None and exclude_none:
                continue
            if isinstance(value, ApiModel):
                value = value.as_json(exclude_none=exclude_none)
            elif isinstance(value, list):
                value = [v.as_json(exclude_none=exclude_none) if isinstance(v, ApiModel) else v for v in value]
            body[name] = value
        return body

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: {name} cannot be set")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: {name} cannot be deleted")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    def __hash__(self) -> int:
        return hash((type(self), *(_hashable(value) for value in self.as_dict().values())))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self.as_dict().items())
        return f"{type(self).__name__}({shown})"


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


class QueueCounts(ApiModel):
    name: str
    waiting: int
    active: int
    completed: int
    failed: int
    delayed: int
    total: int


class HistoryEntry(ApiModel):
    """One failure of a job before an operator retried it."""

    attemptsMade: int
    failedReason: str | None
    finishedOn: str | None
    retriedOn: str | None


def _history(text: str | None) -> list[HistoryEntry]:
    try:
        entries = json.loads(text) if text else []
    except ValueError:
        return []
    if not isinstance(entries, list):  # cjson writes an empty table as {}
        return []
    return [HistoryEntry(attemptsMade=int(e.get("attemptsMade") or 0), failedReason=e.get("failedReason") or None,
                         finishedOn=iso_ms(e.get("finishedOn")), retriedOn=iso_ms(e.get("retriedOn")))
            for e in entries if isinstance(e, dict)]


class JobSummary(ApiModel):
    """A job as the operator's listing shows it (read without its payload)."""

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

    # The hash fields these come from (the listing reads only these).
    FIELDS: ClassVar[tuple[str, ...]] = ("id", "projectId", "state", "priority", "progress", "attemptsMade",
                                         "attemptsMax", "createdAt", "processedOn", "finishedOn", "failedReason")

    @classmethod
    def _values(cls, fields: Mapping[str, str | None]) -> dict[str, Any]:
        return {
            "jobId": fields["id"],
            "projectId": fields.get("projectId") or "",
            "state": fields["state"],
            "priority": fields.get("priority") or DEFAULT_PRIORITY,
            "progress": int(float(fields.get("progress") or 0)),
            "attemptsMade": int(fields.get("attemptsMade") or 0),
            "attemptsMax": int(fields.get("attemptsMax") or 1),
            "createdAt": iso_ms(fields.get("createdAt")),
            "processedOn": iso_ms(fields.get("processedOn")),
            "finishedOn": iso_ms(fields.get("finishedOn")),
            "failedReason": fields.get("failedReason") or None,
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, str | None]) -> JobSummary:
        return cls(**cls._values(fields))


class JobStatus(JobSummary):
    """What the status route answers: the job, and the failures an operator retried it after."""

    history: list[HistoryEntry] = []

    FIELDS: ClassVar[tuple[str, ...]] = (*JobSummary.FIELDS, "history")

    @classmethod
    def from_hash(cls, fields: Mapping[str, str | None], **extra: Any) -> Self:
        """The record of a job's hash fields (`extra`: the fields a subclass adds)."""
        return cls(**cls._values(fields), history=_history(fields.get("history")), **extra)


class RequestSummary(ApiModel):
    """What a job asks for, read from its payload (which a completed job no longer holds)."""

    requestId: str
    title: str | None
    dryRun: bool
    steps: int
    durationSec: float
    assets: int
    format: str
    resolution: str
    fps: int
    includeCaptions: bool


class JobDetail(JobStatus):
    """The operator's view of one job: its status with the stack trace of its failure, the
    worker holding it while active, and a summary of its payload while the job keeps one."""

    stacktrace: str | None
    worker: str | None
    request: RequestSummary | None


class JobPage(ApiModel):
    """One page of the jobs in a state; `nextCursor` asks for the next page (None: the last)."""

    state: JobState
    jobs: list[JobSummary]
    nextCursor: str | None
    counts: QueueCounts


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
