"""The render worker's core: its parts (lease renewer, scratch space, the job runner), one job
at a time, its own maintenance. The run modes drive it (see `shared.worker.worker`)."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Callable

from shared import service
from shared.contract import JobRequest
from shared.models import JobOutcome
from shared.observability import record_queue_counts, record_worker_heartbeat
from shared.queue import ClaimedJob, ClaimOutcome, JobQueue
from shared.settings import Settings
from shared.worker.job import JobRunner, NextClaim, Publisher, RenderFn
from shared.worker.lease import LeaseRenewer
from shared.worker.scratch import Scratch


class WorkerCore:
    def __init__(self, settings: Settings, queue: JobQueue, store: Publisher, render: RenderFn | None = None,
                 worker_id: str | None = None) -> None:
        self.settings = settings
        self.queue = queue
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stop_event = threading.Event()
        # After a stop request, jobs still running get the grace period, then this is set.
        self.abort_event = threading.Event()
        self.outcomes: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.scratch = Scratch(settings.data_dir, self.worker_id)
        self.runner = JobRunner(settings, queue, store, LeaseRenewer(queue, settings.lease_ms / 3000),
                                self.scratch, self.abort_event, render)
        # Job threads left in a render stuck past its deadline (their jobs' failures recorded);
        # the run mode may replace them (`on_stuck`) and decide when there are too many.
        self.stuck: set[threading.Thread] = set()
        self.on_stuck: Callable[[], None] | None = None
        self.exit_code = 0
        self.stop_signal: int | None = None  # set by `stop_from_signal`, acted on by the main loop
        self.runner.on_abandon = self._abandoned

    def count(self, outcome: JobOutcome) -> None:
        with self._lock:
            self.outcomes[outcome] += 1

    def process(self, job: ClaimedJob, limit_s: float | None = None, then: NextClaim | None = None,
                request: JobRequest | None = None) -> JobOutcome:
        outcome = self.runner.process(job, limit_s, then, request)
        self.count(outcome)
        return outcome

    def process_then_claim(self, job: ClaimedJob, then: NextClaim, limit_s: float | None = None,
                           request: JobRequest | None = None) -> ClaimOutcome | None:
        """Process a job (as `process`) and, as it completes, claim the next one in the same
        script (None when no claim was made: the job did not complete, or `then.wanted()` said
        no)."""
        then.claim = None
        try:
            self.process(job, limit_s, then, request)
        except BaseException:
            claimed, then.claim = then.claim, None
            if claimed is not None and claimed.job is not None:
                with contextlib.suppress(Exception):  # else its lease brings it back
                    self.queue.release(claimed.job)
            raise
        claimed, then.claim = then.claim, None
        return claimed

    def _abandoned(self, thread: threading.Thread, outcome: JobOutcome | None) -> None:
        if outcome is not None:
            self.count(outcome)
        with self._lock:
            self.stuck = {t for t in self.stuck if t.is_alive()} | {thread}
        if self.on_stuck is not None:
            self.on_stuck()

    def stuck_threads(self) -> int:
        """Job threads still stuck in a render their job no longer waits for."""
        with self._lock:
            return sum(1 for t in self.stuck if t.is_alive())

    def maintain(self, *, full: bool = True) -> None:
        """Heartbeat of the worker itself and queue gauges (`full`), and recovery of the jobs
        of workers that stopped (cheap: run each second by a long-running worker)."""
        if full:
            self.queue.record_worker(self.worker_id)
            record_worker_heartbeat()
            record_queue_counts(self.queue.counts())
        service.recover(self.queue)

    def stop(self) -> None:
        self.stop_event.set()

    def stop_from_signal(self, signum: int, frame: object = None) -> None:
        """A signal handler's stop: it only notes the signal, and the main loop stops the worker
        within SIGNAL_POLL_S. A handler runs between two bytecodes of the main thread, which may
        hold the lock `stop_event.set()` or a log line would take: taking it again there hung
        the worker for good (two SIGTERMs in a row, as a supervisor's and a process group's)."""
        if self.stop_signal is None:
            self.stop_signal = signum
