"""The worker as a long-running process (or the emulator's thread): `concurrency` job loops
that wake on a blocking Redis wait, a maintenance loop, and a graceful stop: running jobs get
the grace period to finish, then are handed back to the queue."""

from __future__ import annotations

import contextlib
import threading
import time

from shared.disk import DiskGate
from shared.errors import StoreUnavailable
from shared.observability import logger, record_failure
from shared.worker.core import WorkerCore

IDLE_WAIT_S = 1.0


def run(worker: WorkerCore, concurrency: int) -> None:
    """Until `worker.stop()`."""
    settings = worker.settings
    with contextlib.suppress(OSError):
        worker.scratch.sweep()
    gate = DiskGate(settings)  # one for all the loops: one check per second, one log line per change
    threads = [threading.Thread(target=_job_loop, args=(worker, gate), name=f"job-loop-{i}", daemon=True)
               for i in range(concurrency)]
    for thread in threads:
        thread.start()
    logger.info("worker started", extra={"workerId": worker.worker_id, "concurrency": concurrency})
    interval = min(5.0, settings.lease_ms / 2000)
    while not worker.stop_event.is_set():
        try:
            worker.maintain()
        except StoreUnavailable:
            logger.warning("redis unreachable; retrying")
        worker.stop_event.wait(interval)
    grace_deadline = time.monotonic() + settings.shutdown_grace_seconds
    for thread in threads:
        thread.join(max(0.0, grace_deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        # Past the grace period: running renders abort and their jobs go back to waiting.
        worker.abort_event.set()
        for thread in threads:
            thread.join(30)
    with contextlib.suppress(StoreUnavailable):
        worker.queue.forget_worker(worker.worker_id)
    logger.info("worker stopped", extra={"workerId": worker.worker_id, "outcomes": dict(worker.outcomes)})


def _job_loop(worker: WorkerCore, gate: DiskGate) -> None:
    with worker.scratch.for_loop():
        while not worker.stop_event.is_set():
            try:
                if gate.blocked():  # below the free-disk floor: leave the jobs queued
                    worker.stop_event.wait(IDLE_WAIT_S)
                    continue
                claim = worker.queue.claim()
                if claim.job is not None:
                    worker.process(claim.job)
                    continue
                wait = IDLE_WAIT_S
                if claim.next_due_ms is not None:
                    wait = min(wait, max(0.0, claim.next_due_ms / 1000 - time.time()))
                if wait > 0:
                    worker.queue.wait_for_work(wait)
            except StoreUnavailable:
                logger.warning("redis unreachable; retrying in 1 s")
                worker.stop_event.wait(1.0)
            except Exception:
                record_failure("worker")
                logger.exception("worker loop error")
                worker.stop_event.wait(1.0)
