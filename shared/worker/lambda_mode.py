"""The worker inside a Lambda invocation: claim and render jobs one after another while the
invocation has time left for the next one, and never start a job it cannot finish."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.contract import JobRequest
from shared.errors import InvalidPayload
from shared.models import JobOutcome
from shared.observability import logger
from shared.worker.core import WorkerCore

# A dry run only plans and checks its assets.
DRY_RUN_MS = 2000
# Start-up of a render (imports, opening the encoder) before the first frame.
RENDER_START_MS = 3000


def estimate_ms(payload: dict[str, Any], ms_per_video_second: int) -> int:
    """A conservative render budget: fixed start-up plus a cost per second of video."""
    try:
        request = JobRequest.from_payload(payload)
    except InvalidPayload:
        return DRY_RUN_MS  # it fails at once when processed
    if request.dry_run:
        return DRY_RUN_MS
    return int(RENDER_START_MS + request.video_ms / 1000 * ms_per_video_second)


def drain(worker: WorkerCore, remaining_ms: Callable[[], float] | None, max_jobs: int | None,
          safety_ms: int) -> dict[str, Any]:
    """Until the queue is empty, `max_jobs` ran, or the time left could not fit the next job
    (that job goes back unharmed)."""
    worker.maintain()
    budget = remaining_ms() if remaining_ms is not None else None
    done = 0
    while max_jobs is None or done < max_jobs:
        job = worker.queue.claim().job
        if job is None:
            break
        if remaining_ms is not None and budget is not None:
            needed = estimate_ms(job.payload, worker.settings.render_ms_per_video_second) + safety_ms
            if needed > budget:
                # Even a fresh invocation could not finish it: retrying would only block the
                # queue, so it fails now with a reason an operator can act on.
                reason = (f"rendering needs about {needed / 1000:.0f} s, more than the worker "
                          f"function's {budget / 1000:.0f} s; run a long-running worker for such jobs")
                worker.count(worker.runner.fail_now(job, reason))
                continue
            if remaining_ms() < needed:
                worker.queue.release(job)
                worker.count(JobOutcome.DEFERRED)
                logger.info("not enough time left for the next job; left it queued",
                            extra={"jobId": job.id, "neededMs": needed})
                break
        worker.process(job)
        done += 1
    return {"workerId": worker.worker_id, "processed": done, "outcomes": dict(worker.outcomes)}
