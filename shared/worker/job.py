"""One claimed job, from lease to outcome: check what configuration may have changed,
render into scratch space within the job's deadline, publish the artifacts, then complete the
job, or record a failure (retried or not), or give the job back at shutdown."""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from shared import contract
from shared.contract import JobRequest
from shared.errors import InvalidPayload, LeaseLost, PermanentRenderError, RenderError, StoreUnavailable
from shared.models import JobOutcome
from shared.observability import debug_enabled, info_line, logger, record_failure, record_job
from shared.queue import ClaimedJob, ClaimOutcome, JobQueue
from shared.settings import Settings
from shared.worker.deadline import deadline_for, read_request
from shared.worker.lease import Lease, LeaseRenewer, Stopping
from shared.worker.scratch import Scratch

RenderFn = Callable[[JobRequest, Path, Settings, Callable[[int], None] | None], Any]
# Told of a job thread left in a render past its deadline (the job's failure is recorded), with
# the outcome counted for it, if any.
AbandonFn = Callable[[threading.Thread, JobOutcome | None], None]


class NextClaim:
    """A job loop's request to claim its next job as it completes this one (one round trip):
    `wanted()` is asked at that moment (not when stopping, not below the disk floor), and
    `claim` holds what the claim found. `worker_id` as for `JobQueue.claim`: None for a
    claimer without liveness (a Lambda invocation)."""

    __slots__ = ("worker_id", "wanted", "claim")

    def __init__(self, worker_id: str | None, wanted: Callable[[], bool]) -> None:
        self.worker_id = worker_id
        self.wanted = wanted
        self.claim: ClaimOutcome | None = None


class Publisher(Protocol):
    def publish(self, project_id: str, job_id: str, src_dir: Path) -> dict[str, Any]: ...


class JobRunner:
    def __init__(self, settings: Settings, queue: JobQueue, store: Publisher, renewer: LeaseRenewer,
                 scratch: Scratch, abort: threading.Event, render: RenderFn | None = None) -> None:
        self.settings = settings
        self.queue = queue
        self.store = store
        self.renewer = renewer
        self.scratch = scratch
        self.abort = abort
        self._render = render
        self.on_abandon: AbandonFn | None = None
        renewer.on_overrun = self._overrun

    @property
    def render(self) -> RenderFn:
        if self._render is None:
            # Loaded with the first job: PyAV, Pillow and numpy cost a second at start-up.
            from shared.render import render_preview

            self._render = render_preview
        return self._render

    def process(self, job: ClaimedJob, limit_s: float | None = None, then: NextClaim | None = None,
                request: JobRequest | None = None) -> JobOutcome:
        """Run one claimed job to its outcome; the metric counts it, the log says it. Its render
        may take its deadline (`shared.worker.deadline`), and no more than `limit_s`. With
        `then`, completing the job also claims the next one (into `then.claim`). `request`: the
        job's payload as `read_request` read it, when the caller did already."""
        started = time.monotonic()
        # Read once: for the deadline and for the render.
        if request is None:
            request = read_request(job.payload)
        deadline_s = deadline_for(request, self.settings)
        if limit_s is not None:
            deadline_s = max(1, min(deadline_s, int(limit_s)))
        log = {"jobId": job.id, "projectId": job.project_id, "attempt": job.attempts_made + 1,
               "deadlineSeconds": deadline_s}
        if debug_enabled():  # at INFO not even the call: a tenth of the job line's cost
            logger.debug("job started", extra=log)
        lease = self.renewer.add(job, self.abort, deadline_s)
        try:
            with self.scratch.for_job(job.id) as workdir:
                outcome = self._run(job, workdir, lease, then, request)
        finally:
            # Whatever happened, this worker stops renewing: a job it could not finish must
            # become recoverable when its lease runs out.
            lease.stop()
        seconds = time.monotonic() - started
        if outcome.counted:
            record_job(outcome, seconds)
        log["outcome"], log["seconds"] = outcome, round(seconds, 3)  # one dict: no merge in the line
        info_line("job finished", log)
        return outcome

    def _run(self, job: ClaimedJob, workdir: Path, lease: Lease, then: NextClaim | None,
             request: JobRequest | None) -> JobOutcome:
        try:
            # The contract was enforced at admission; what can change since is this service's
            # configuration (allowed buckets), so only those rules are checked again.
            problems = contract.config_errors(job.payload, self.settings)
            if problems:
                raise InvalidPayload("the job payload is no longer acceptable", problems)
            if request is None:  # it breaks the contract: read it again for the reason
                request = JobRequest.from_payload(job.payload)
            self.render(request, workdir, self.settings, lease.progress)
            lease.rendered()
            self.store.publish(job.project_id, job.id, workdir)
            lease.stop()
            if then is not None and then.wanted():
                then.claim = self.queue.complete(job, {"dryRun": request.dry_run}, claim_next=True,
                                                 worker_id=then.worker_id)
            else:
                self.queue.complete(job, {"dryRun": request.dry_run})
            return JobOutcome.DRYRUN if request.dry_run else JobOutcome.COMPLETED
        except LeaseLost:
            if lease.overrun:
                logger.warning("render ended after its job was given up on; its result is dropped",
                               extra={"jobId": job.id, "seconds": round(time.monotonic() - lease.started, 3)})
            else:
                logger.warning("lease lost; another worker owns the job now", extra={"jobId": job.id})
            return JobOutcome.LOST
        except Stopping:
            lease.stop()
            return JobOutcome.RELEASED if self.queue.release(job) else JobOutcome.LOST
        except (InvalidPayload, PermanentRenderError) as exc:
            return self._fail(job, lease, _reason(exc), "", retryable=False)
        except StoreUnavailable:
            raise
        except Exception as exc:
            retryable = exc.retryable if isinstance(exc, RenderError) else True
            if not isinstance(exc, RenderError):
                record_failure("render")
                logger.exception("render failed unexpectedly", extra={"jobId": job.id})
            return self._fail(job, lease, _reason(exc), traceback.format_exc(), retryable=retryable)

    def fail_now(self, job: ClaimedJob, reason: str) -> JobOutcome:
        """Fail a claimed job at once, without running it (no retry can help)."""
        outcome = self._fail(job, self.renewer.add(job, self.abort), reason, "", retryable=False)
        record_job(outcome)
        return outcome

    def _overrun(self, lease: Lease) -> None:
        """The watchdog gave up on a render stuck past its deadline: record the job's failure
        now (the token still holds, so a late finish of the render is refused as lost), and let
        the run mode replace the job thread it holds."""
        job = lease.job
        seconds = time.monotonic() - lease.started
        record_failure("stuck_render")
        logger.error("render stuck past its deadline; its job is failed and the render abandoned",
                     extra={"jobId": job.id, "deadlineSeconds": lease.limit_s, "seconds": round(seconds, 3),
                            "jobThread": lease.thread.name})
        outcome: JobOutcome | None = None
        try:
            outcome = self._fail(job, lease, lease.reason, "", retryable=True)
        except StoreUnavailable:
            # Unrenewed, the lease runs out and recovery counts the attempt.
            logger.warning("redis unreachable; the stuck job's lease will expire", extra={"jobId": job.id})
        except Exception:
            logger.exception("recording the stuck job's failure failed", extra={"jobId": job.id})
        if outcome is not None and outcome.counted:
            record_job(outcome, seconds)
        else:
            outcome = None
        if self.on_abandon is not None:
            self.on_abandon(lease.thread, outcome)

    def _fail(self, job: ClaimedJob, lease: Lease, reason: str, stack: str, *, retryable: bool) -> JobOutcome:
        lease.stop()
        try:
            state = self.queue.fail(job, reason, stack, retryable=retryable)
        except LeaseLost:
            return JobOutcome.LOST
        logger.warning("job attempt failed", extra={"jobId": job.id, "reason": reason, "state": state})
        if not retryable:
            return JobOutcome.INVALID
        return JobOutcome.RETRIED if state == "delayed" else JobOutcome.FAILED


def _reason(exc: BaseException) -> str:
    if isinstance(exc, InvalidPayload):
        details = "; ".join(f"{e['path']}: {e['message']}" for e in exc.errors[:5])
        return f"invalid payload: {details}"
    message = getattr(exc, "message", None) or str(exc) or exc.__class__.__name__
    return message if isinstance(exc, RenderError) else f"{exc.__class__.__name__}: {message}"
