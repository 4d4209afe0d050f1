"""The render worker: its parts (lease renewer, scratch space, the job runner) and its two run
modes, inside a Lambda invocation or as a long-running process."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from shared import service
from shared.models import JobOutcome
from shared.observability import record_queue_counts, record_worker_heartbeat
from shared.queue import ClaimedJob, JobQueue
from shared.settings import Settings
from shared.worker import lambda_mode, process_mode
from shared.worker.job import JobRunner, Publisher, RenderFn
from shared.worker.lease import LeaseRenewer
from shared.worker.scratch import Scratch


class Worker:
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

    def count(self, outcome: JobOutcome) -> None:
        with self._lock:
            self.outcomes[outcome] += 1

    def process(self, job: ClaimedJob) -> JobOutcome:
        outcome = self.runner.process(job)
        self.count(outcome)
        return outcome

    def maintain(self) -> None:
        """Heartbeat of the worker itself, queue gauges, and recovery of leases other workers lost."""
        self.queue.record_worker(self.worker_id)
        record_worker_heartbeat()
        record_queue_counts(self.queue.counts())
        service.recover(self.queue)

    def run_until_idle(self, remaining_ms: Callable[[], float] | None = None, max_jobs: int | None = None,
                       safety_ms: int = 2000) -> dict[str, Any]:
        """Lambda mode (`remaining_ms`: the invocation's time left): a summary of the run."""
        with self.scratch.for_loop():
            return lambda_mode.drain(self, remaining_ms, max_jobs, safety_ms)

    def run_forever(self, concurrency: int | None = None) -> None:
        """Process mode: `concurrency` job loops (PREVIEW_WORKER_CONCURRENCY) until `stop()`."""
        process_mode.run(self, concurrency or self.settings.worker_concurrency)

    def stop(self) -> None:
        self.stop_event.set()
