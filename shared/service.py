"""What each endpoint does, independent of HTTP: the one call a handler makes."""

from __future__ import annotations

import time
from datetime import UTC
from typing import Any

from shared.errors import JobNotCompleted, JobNotFound, StoreUnavailable
from shared.models import (
    ArtifactFile,
    ArtifactResponse,
    EnqueueResponse,
    HealthReport,
    JobStatus,
    QueueCounts,
    RedisHealth,
    WorkerHealth,
    iso_ms,
    utc_now_iso,
)
from shared.observability import logger, record_queue_counts
from shared.queue import JobQueue
from shared.redis_client import get_redis, mask_url
from shared.settings import Settings, get_settings

JOB_PATH = "/api/preview/job"


def get_queue(settings: Settings | None = None) -> JobQueue:
    settings = settings or get_settings()
    client = get_redis(settings)
    cached = _queues.get(id(client))
    if cached is None or cached.settings is not settings:
        cached = _queues[id(client)] = JobQueue(client, settings, get_redis(settings, blocking=True))
    return cached


_queues: dict[int, JobQueue] = {}


def reset_queues() -> None:
    """Forget the cached queues and close the connections their scripts ran on."""
    queues = list(_queues.values())
    _queues.clear()
    for queue in queues:
        queue.close()


def enqueue(body: str | bytes | None, is_base64: bool, origin: str) -> tuple[int, EnqueueResponse]:
    """Validate and admit a job: 202 when new, 200 for an identical replay."""
    from shared.payload import parse_body, validate_payload

    settings = get_settings()
    payload = validate_payload(parse_body(body, is_base64, settings.max_body_bytes), settings)
    result = get_queue(settings).admit(payload)
    job_id = result.jobId
    logger.info("job admitted" if result.created else "job replayed",
                extra={"jobId": job_id, "projectId": payload["projectId"], "state": result.state})
    response = EnqueueResponse(
        jobId=job_id,
        status="queued" if result.created else result.state,
        state=result.state,
        statusUrl=f"{origin}{JOB_PATH}/{job_id}/status",
        artifactUrl=f"{origin}{JOB_PATH}/{job_id}/artifact",
    )
    if result.created:
        from shared.kick import kick_worker

        kick_worker(settings, job_id)
    return (202 if result.created else 200), response


def job_status(job_id: str) -> JobStatus:
    status = get_queue().status(job_id)
    if status is None:
        raise JobNotFound(f"no job {job_id!r}", jobId=job_id)
    return status


def job_artifact(job_id: str, origin: str) -> ArtifactResponse:
    from shared.artifacts import get_store

    settings = get_settings()
    status = job_status(job_id)
    if status.state != "completed":
        raise JobNotCompleted(
            f"job {job_id!r} is {status.state}, not completed", jobId=job_id, state=status.state,
            progress=status.progress,
        )
    store = get_store(settings)
    try:
        manifest = store.read_manifest(status.projectId, job_id)
    except Exception as exc:  # the store's own errors must not leak details
        logger.exception("artifact store read failed", extra={"jobId": job_id})
        raise StoreUnavailable("the artifact store is unreachable; try again shortly") from exc
    if manifest is None:
        raise JobNotFound(f"artifacts of job {job_id!r} are no longer available", jobId=job_id)
    files = manifest.get("files", [])
    names = [f["name"] for f in files]
    main = next((n for n in names if n.startswith("preview.") and n != "preview.json"), "preview.json")
    listed = []
    for entry in files:
        url, _ = store.signed_url(status.projectId, job_id, entry["name"], settings.url_ttl_seconds, origin)
        listed.append(ArtifactFile(name=entry["name"], contentType=entry["contentType"], bytes=entry["bytes"],
                                   sha256=entry["sha256"], url=url))
    main_url, main_expires = store.signed_url(status.projectId, job_id, main, settings.url_ttl_seconds, origin)
    manifest_url, _ = store.signed_url(status.projectId, job_id, "container.json", settings.url_ttl_seconds, origin)
    return ArtifactResponse(
        manifestUrl=manifest_url,
        jobId=job_id,
        url=main_url,
        expiresAt=iso_ms(int(main_expires.astimezone(UTC).timestamp() * 1000)) or "",
        files=listed,
    )


def queue_metrics() -> QueueCounts:
    counts = get_queue().counts()
    record_queue_counts(counts)
    return counts


def health(settings: Settings | None = None) -> HealthReport:
    """Redis reachable, backlog not stuck, a worker seen recently."""
    settings = settings or get_settings()
    url = mask_url(settings.redis_url)
    queue = get_queue(settings)
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
            problems=["redis unreachable"],
        )
    record_queue_counts(counts)
    problems = []
    oldest_age = None if oldest is None else max(0.0, (now_ms - oldest) / 1000)
    if oldest_age is not None and oldest_age > settings.max_wait_seconds:
        problems.append(f"oldest waiting job is {oldest_age:.0f} s old (limit {settings.max_wait_seconds} s)")
    if recent == 0:
        problems.append(f"no worker heartbeat in the last {settings.worker_stale_seconds} s")
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


def probe() -> dict[str, Any]:
    """The scheduled probe: recover expired leases first, then report health."""
    settings = get_settings()
    recovered: dict[str, list[str]] = {"requeued": [], "failed": []}
    try:
        requeued, failed = get_queue(settings).recover_stalled()
        recovered = {"requeued": requeued, "failed": failed}
        from shared.observability import record_job

        for _ in requeued + failed:
            record_job("stalled")
    except StoreUnavailable:
        pass  # the health report below says so
    report = health(settings)
    return {**report.model_dump(mode="json", exclude_none=True), "recovered": recovered}
