"""What each endpoint and scheduled function does, independent of HTTP and of how its
dependencies are built: each use case takes the queue, store, kick or settings it needs, so
it can run against fakes. Handlers get the real ones from `shared.wiring`."""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from datetime import UTC
from typing import Any, Protocol

from shared import contract, disk, retention
from shared.artifacts import ArtifactStore, layout
from shared.errors import (
    ArtifactPruned,
    InvalidPayload,
    InvalidRequest,
    JobNotCompleted,
    JobNotFound,
    PreviewError,
    StoreUnavailable,
)
from shared.keys import STATES
from shared.kick import kick_all
from shared.models import (
    AdmitResult,
    ArtifactFile,
    ArtifactResponse,
    HealthReport,
    JobDetail,
    JobOutcome,
    JobPage,
    JobStatus,
    QueueCounts,
    RedisHealth,
    RequestSummary,
    WorkerHealth,
    iso_ms,
    utc_now_iso,
)
from shared.observability import in_lambda, info_line, logger, record_health, record_job, record_queue_counts
from shared.queue import JobQueue
from shared.settings import Settings, mask_url


class Kick(Protocol):
    def __call__(self, job_id: str) -> None: ...


def enqueue(document: Any, *, settings: Settings, queue: JobQueue, kick: Kick) -> AdmitResult:
    """Validate and admit a job (`created` is False for an identical replay); a new job
    nudges the worker."""
    payload, text = contract.validate_for_admission(document, settings)  # serialised once
    result = queue.admit(payload, text)
    info_line("job admitted" if result.created else "job replayed",
              {"jobId": result.jobId, "projectId": payload["projectId"], "state": result.state})
    if result.created:
        kick(result.jobId)
    return result


def enqueue_many(documents: list[Any], *, settings: Settings, queue: JobQueue,
                 kick: Kick) -> list[AdmitResult | PreviewError]:
    """`enqueue` for several documents at once, each answered in its place as `enqueue` would
    answer it alone: its result, or the `InvalidPayload` / `Conflict` / `QueueFull` it would
    raise. The valid ones are admitted in order in one atomic script per batch
    (`JobQueue.admit_many`), so the backlog limit holds exactly and a jobId given twice is a
    replay (or conflict) of its first admission. `StoreUnavailable` is raised for all. Each new
    job is kicked once, all of them together after the answers are logged (`kick_all`: a
    batch's kicks overlap instead of adding up)."""
    answers: list[AdmitResult | PreviewError | None] = []
    valid: list[tuple[int, dict[str, Any]]] = []
    for document in documents:
        try:
            valid.append((len(answers), contract.validate_payload(document, settings)))
            answers.append(None)
        except PreviewError as exc:  # InvalidPayload, InvalidRequest
            answers.append(exc)
    admitted = queue.admit_many([payload for _, payload in valid]) if valid else []
    created: list[str] = []
    for (place, payload), answer in zip(valid, admitted, strict=True):
        answers[place] = answer
        if isinstance(answer, AdmitResult):
            info_line("job admitted" if answer.created else "job replayed",
                      {"jobId": answer.jobId, "projectId": payload["projectId"], "state": answer.state})
            if answer.created:
                created.append(answer.jobId)
    kick_all(kick, created)  # one kick per new job, sent together rather than one after another
    return [answer for answer in answers if answer is not None]


# POST /api/preview/jobs takes at most this many jobs in one body (the body limit,
# PREVIEW_MAX_BODY_BYTES, still applies to the whole body).
MAX_BATCH = 100


def batch_jobs(document: dict[str, Any]) -> list[Any]:
    """The `jobs` of a batch body `{"jobs": [job, ...]}` (1 to MAX_BATCH of them); anything
    else is an `InvalidRequest` for the whole request, before any job is looked at."""
    unknown = sorted(key for key in document if key != "jobs")
    if unknown:
        raise InvalidRequest(f"the batch body takes only \"jobs\"; unknown key {unknown[0][:40]!r}",
                             errors=[{"path": f"/{_escape(unknown[0][:40])}", "message": "unknown key"}])
    jobs = document.get("jobs")
    if not isinstance(jobs, list):
        raise InvalidRequest('the batch body must be {"jobs": [job, ...]}: "jobs" is '
                             + ("missing" if "jobs" not in document else "not an array"),
                             errors=[{"path": "/jobs", "message": "must be an array of jobs"}])
    if not 1 <= len(jobs) <= MAX_BATCH:
        raise InvalidRequest(f"a batch holds 1 to {MAX_BATCH} jobs; this one has {len(jobs)}",
                             errors=[{"path": "/jobs", "message": f"must hold 1 to {MAX_BATCH} jobs"}])
    return jobs


def _not_an_object() -> InvalidPayload:  # what parse_body answers for such a body alone
    return InvalidPayload("the job must be a JSON object", [{"path": "/", "message": "must be an object"}])


def _escape(key: str) -> str:  # a JSON Pointer token
    return key.replace("~", "~0").replace("/", "~1")


def enqueue_batch(document: dict[str, Any], *, settings: Settings, queue: JobQueue,
                  kick: Kick) -> list[AdmitResult | PreviewError]:
    """A batch body's jobs, each answered in its place as POST /api/preview/job answers it
    alone (`enqueue_many`; a job that is not a JSON object gets the single route's 400)."""
    jobs = batch_jobs(document)
    answers: list[AdmitResult | PreviewError | None] = [None if isinstance(job, dict) else _not_an_object()
                                                        for job in jobs]
    objects = [job for job in jobs if isinstance(job, dict)]
    admitted = iter(enqueue_many(objects, settings=settings, queue=queue, kick=kick) if objects else [])
    return [answer if answer is not None else next(admitted) for answer in answers]


def job_status(queue: JobQueue, job_id: str) -> JobStatus:
    status = queue.status(job_id)
    if status is None:
        raise JobNotFound(f"no job {job_id!r}", jobId=job_id)
    return status


def job_artifact(queue: JobQueue, store: ArtifactStore, job_id: str, *, origin: str,
                 ttl_seconds: int) -> ArtifactResponse:
    """Signed URLs of every file of a completed job's preview (`origin`: for local links)."""
    status = job_status(queue, job_id)
    if status.state != "completed":
        raise JobNotCompleted(
            f"job {job_id!r} is {status.state}, not completed", jobId=job_id, state=status.state,
            progress=status.progress,
        )
    try:
        manifest = store.read_manifest(status.projectId, job_id)
    except ArtifactPruned:  # a 404 that says why
        raise
    except Exception as exc:  # the store's own errors must not leak details
        logger.exception("artifact store read failed", extra={"jobId": job_id})
        raise StoreUnavailable("the artifact store is unreachable; try again shortly") from exc
    if manifest is None:
        raise JobNotFound(f"artifacts of job {job_id!r} are no longer available", jobId=job_id)

    def sign(name: str) -> tuple[str, Any]:
        return store.signed_url(status.projectId, job_id, name, ttl_seconds, origin)

    files = manifest.get("files", [])
    listed = [ArtifactFile(name=f["name"], contentType=f["contentType"], bytes=f["bytes"], sha256=f["sha256"],
                           url=sign(f["name"])[0]) for f in files]
    main_url, main_expires = sign(layout.main_file([f["name"] for f in files]))
    return ArtifactResponse(
        manifestUrl=sign(layout.MANIFEST)[0],
        jobId=job_id,
        url=main_url,
        expiresAt=iso_ms(int(main_expires.astimezone(UTC).timestamp() * 1000)) or "",
        files=listed,
    )


def queue_metrics(queue: JobQueue) -> QueueCounts:
    counts = queue.counts()
    record_queue_counts(counts)
    return counts


def health(queue: JobQueue, settings: Settings) -> HealthReport:
    """Redis reachable, backlog not stuck, a worker seen recently, room on the disk."""
    url = mask_url(settings.redis_url)
    # Inside Lambda, DATA_DIR is this function's own /tmp, not the worker's: nothing to tell.
    low_disk = None if in_lambda() else disk.shortage(settings)
    try:
        counts = queue.counts()
        oldest = queue.oldest_waiting_ms()
        now_ms = int(time.time() * 1000)
        recent, last_seen = queue.workers_seen(now_ms - settings.worker_stale_seconds * 1000)
    except StoreUnavailable as exc:
        return HealthReport(
            status="unhealthy",
            timestamp=utc_now_iso(),
            redis=RedisHealth(status="disconnected", url=url, error=exc.message),
            queue={"name": settings.queue_name},
            problems=["redis unreachable", *([low_disk] if low_disk else [])],
        )
    record_queue_counts(counts)
    problems = []
    oldest_age = None if oldest is None else max(0.0, (now_ms - oldest) / 1000)
    record_health(settings.queue_name, oldest_age, recent)
    if oldest_age is not None and oldest_age > settings.max_wait_seconds:
        problems.append(f"oldest waiting job is {oldest_age:.0f} s old (limit {settings.max_wait_seconds} s)")
    if recent == 0:
        problems.append(f"no worker heartbeat in the last {settings.worker_stale_seconds} s")
    if low_disk:
        problems.append(f"{low_disk}: the worker claims no job")
    unfinished = counts.waiting + counts.delayed + counts.active
    caps = retention.caps(settings)
    for state, kept, cap in (("completed", counts.completed, caps.completed), ("failed", counts.failed, caps.failed)):
        if kept + unfinished >= cap:
            problems.append(f"{kept} {state} jobs kept, the cap PREVIEW_FINISHED_MEMORY_MB gives is {cap}: "
                            "admission answers 429 until the oldest age out")
    return HealthReport(
        status="unhealthy" if problems else "healthy",
        timestamp=utc_now_iso(),
        redis=RedisHealth(status="connected", url=url),
        queue=counts,
        workers=WorkerHealth(recent=recent, lastSeen=iso_ms(last_seen)),
        oldestWaitingSeconds=oldest_age,
        problems=problems,
    )


def health_status_code(report: HealthReport) -> int:
    return 200 if report.status == "healthy" else 503


def recover(queue: JobQueue) -> tuple[list[str], list[str]]:
    """Jobs whose worker vanished (its liveness lapsed, or the lease expired) go back to waiting
    or, out of attempts, to failed; each is counted as a `stalled` outcome. Used by every
    worker's maintenance (each second in a long-running worker, and at its start) and by the
    health probe."""
    requeued, failed = queue.recover_stalled()
    for _ in requeued + failed:
        record_job(JobOutcome.STALLED)
    if requeued or failed:
        logger.warning("took back the jobs of stopped workers", extra={"requeued": requeued, "failed": failed})
    return requeued, failed


def probe(queue: JobQueue, settings: Settings) -> dict[str, Any]:
    """The scheduled probe: recover expired leases first, then report health."""
    recovered: dict[str, list[str]] = {"requeued": [], "failed": []}
    try:
        requeued, failed = recover(queue)
        recovered = {"requeued": requeued, "failed": failed}
    except StoreUnavailable:
        pass  # the health report below says so
    report = health(queue, settings)
    return {**report.as_json(exclude_none=True), "recovered": recovered}


# -- operator use cases ------------------------------------------------------------------

CANCEL_REASON = "cancelled by request"
DEFAULT_PAGE, MAX_PAGE = 20, 100
_CURSOR_PROBLEM = "cursor is not one this route gave for this state; start again without it"


def encode_cursor(state: str, position: tuple[str, str]) -> str:
    """An opaque cursor: the state and the (score, id) of a page's last job."""
    raw = json.dumps([state, *position], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(state: str, cursor: str) -> tuple[str, str]:
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        listed, score, job_id = value
        finite = math.isfinite(float(score))
    except (ValueError, TypeError, binascii.Error):
        raise InvalidRequest(_CURSOR_PROBLEM) from None
    if listed != state or not finite or not contract.is_id(job_id):
        raise InvalidRequest(_CURSOR_PROBLEM)
    return str(score), str(job_id)


def list_jobs(queue: JobQueue, *, state: str | None, limit: str | None, cursor: str | None) -> JobPage:
    """A page of the jobs in `state` (default waiting): waiting, delayed and active in the
    order a worker takes them or their lease runs out, completed and failed newest first."""
    state = state or "waiting"
    if state not in STATES:
        raise InvalidRequest(f"state must be one of {', '.join(STATES)}; got {state[:40]!r}")
    try:
        size = DEFAULT_PAGE if limit in (None, "") else int(limit)
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_PAGE:
        raise InvalidRequest(f"limit must be a whole number from 1 to {MAX_PAGE}")
    after = decode_cursor(state, cursor) if cursor else None
    jobs, position, counts = queue.list_jobs(state, size, after)
    return JobPage(state=state, jobs=jobs,  # type: ignore[arg-type]
                   nextCursor=encode_cursor(state, position) if position else None, counts=counts)


def _request_summary(payload: str | None) -> RequestSummary | None:
    if not payload:
        return None
    try:
        request = contract.JobRequest.from_payload(json.loads(payload))
    except (ValueError, InvalidPayload):
        return None
    return RequestSummary(requestId=request.request_id, title=request.title, dryRun=request.dry_run,
                          steps=len(request.steps), durationSec=request.video_ms / 1000, assets=len(request.assets),
                          format=request.format, resolution=f"{request.width}x{request.height}", fps=request.fps,
                          includeCaptions=request.include_captions)


def job_detail(queue: JobQueue, job_id: str) -> JobDetail:
    """One job for an operator: its status, the stack trace of its failure, its worker while
    active, and what it asks for while its payload is kept."""
    fields = queue.job_fields_all(job_id)
    if fields is None:
        raise JobNotFound(f"no job {job_id!r}", jobId=job_id)
    return JobDetail.from_hash(fields, stacktrace=fields.get("stacktrace") or None,
                               worker=fields.get("worker") if fields.get("state") == "active" else None,
                               request=_request_summary(fields.get("payload")))


def retry_job(queue: JobQueue, kick: Kick, job_id: str) -> JobStatus:
    """A dead letter back in the queue with fresh attempts (its failure kept in its history);
    the worker is nudged as for a new job."""
    status = queue.retry(job_id)
    logger.info("job retried", extra={"jobId": job_id, "retries": len(status.history)})
    kick(job_id)
    return status


def cancel_job(queue: JobQueue, job_id: str) -> JobStatus:
    """A waiting or delayed job dead-lettered with the reason "cancelled by request"."""
    status = queue.cancel(job_id, CANCEL_REASON)
    logger.info("job cancelled", extra={"jobId": job_id})
    return status
