"""The render worker's core: its parts (lease renewer, scratch space, the job runner), one job
at a time, its own maintenance. The run modes drive it (see `shared.worker.worker`)."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections import Counter

from shared import service
from shared.models import JobOutcome
from shared.observability import record_queue_counts, record_worker_heartbeat
from shared.queue import ClaimedJob, JobQueue
from shared.settings import Settings
from shared.worker.job import JobRunner, Publisher, RenderFn
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

    def stop(self) -> None:
        self.stop_event.set()
