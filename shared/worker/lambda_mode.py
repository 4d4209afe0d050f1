"""The worker inside a Lambda invocation: claim and render jobs one after another while the
invocation has time left for the next one, never start a job it cannot finish, and stop a
render (its job failed with the reason) before the invocation's time runs out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared import disk
from shared.models import JobOutcome
from shared.observability import logger
from shared.queue import ClaimedJob
from shared.worker.core import WorkerCore
from shared.worker.deadline import (
    DRY_RUN_MS,
    OVERRUN_GRACE_S,
    RENDER_START_MS,
    estimate_ms,
    read_request,
    request_estimate_ms,
)
from shared.worker.job import NextClaim

__all__ = ["DRY_RUN_MS", "RENDER_START_MS", "drain", "estimate_ms"]


def drain(worker: WorkerCore, remaining_ms: Callable[[], float] | None, max_jobs: int | None,
          safety_ms: int) -> dict[str, Any]:
    """Until the queue is empty, `max_jobs` ran, or the time left could not fit the next job
    (that job goes back unharmed). A job that completes claims the next in the same script (one
    round trip per job), unless the disk is below its floor by then or `max_jobs` would not let
    that one run; the job claimed so meets the time budget as any other."""
    worker.maintain()
    budget = remaining_ms() if remaining_ms is not None else None
    done = 0
    # Without a worker id, as the first claim: an invocation keeps no liveness renewed (no
    # thread does), so a job's lease alone tells when it was abandoned.
    then = NextClaim(None, lambda: (max_jobs is None or done + 1 < max_jobs) and not disk.shortage(worker.settings))
    job: ClaimedJob | None = None  # claimed as the last job completed
    while max_jobs is None or done < max_jobs:
        if job is None:
            low_disk = disk.shortage(worker.settings)
            if low_disk:  # below the free-disk floor: the jobs stay queued until there is room
                logger.warning("not claiming jobs: low on disk", extra={"reason": low_disk})
                break
            job = worker.queue.claim().job
            if job is None:
                break
        request = read_request(job.payload)  # once: for the estimate and for the render
        limit_s: float | None = None
        if remaining_ms is not None and budget is not None:
            needed = request_estimate_ms(request, worker.settings.render_ms_per_video_second) + safety_ms
            if needed > budget:
                # Even a fresh invocation could not finish it: retrying would only block the
                # queue, so it fails now with a reason an operator can act on.
                reason = (f"rendering needs about {needed / 1000:.0f} s, more than the worker "
                          f"function's {budget / 1000:.0f} s; run a long-running worker for such jobs")
                worker.count(worker.runner.fail_now(job, reason))
                job = None
                continue
            left = remaining_ms()
            if left < needed:
                worker.queue.release(job)
                worker.count(JobOutcome.DEFERRED)
                logger.info("not enough time left for the next job; left it queued",
                            extra={"jobId": job.id, "neededMs": needed})
                break
            # The render must end, even stuck, while the invocation can still record why: a
            # killed invocation would leave the job to its lease, and its reason unsaid.
            limit_s = (left - safety_ms) / 1000 - OVERRUN_GRACE_S
        claimed = worker.process_then_claim(job, then, limit_s, request)
        done += 1
        if claimed is not None and claimed.job is None:
            break  # nothing was ready as the job completed
        job = claimed.job if claimed is not None else None  # None: claim on the next turn, if room
    return {"workerId": worker.worker_id, "processed": done, "outcomes": dict(worker.outcomes)}
