"""A claimed job's lease while it renders: one renewer thread per worker renews every lease
it holds, and the render learns of a lost lease or a shutdown at its next progress report."""

from __future__ import annotations

import threading
import time

from shared.errors import LeaseLost, StoreUnavailable
from shared.observability import logger, record_failure
from shared.queue import ClaimedJob, JobQueue


class Stopping(Exception):
    """The worker is shutting down and gives the job back instead of finishing it."""


class Lease:
    """One claimed job's lease as its render sees it: progress goes in, a lost lease or a
    shutdown comes out as an exception at the next progress report."""

    def __init__(self, renewer: LeaseRenewer, job: ClaimedJob, abort: threading.Event) -> None:
        self.renewer = renewer
        self.job = job
        self.abort = abort
        self.lost = threading.Event()
        self.percent: int | None = None
        self.sent: int | None = None
        self.last_beat = time.monotonic()

    def check(self) -> None:
        if self.lost.is_set():
            raise LeaseLost(f"lease on job {self.job.id!r} was lost")
        if self.abort.is_set():
            raise Stopping()

    def progress(self, percent: int) -> None:
        """The render's progress callback."""
        self.percent = max(0, min(100, int(percent)))
        self.check()

    def stop(self) -> None:
        self.renewer.remove(self)


class LeaseRenewer:
    """One thread per worker renews the leases of all its running jobs, so a render holding
    the CPU cannot starve them, and a job costs no thread of its own."""

    TICK_S = 0.25

    def __init__(self, queue: JobQueue, interval_s: float) -> None:
        self.queue = queue
        self.interval = interval_s
        self._leases: dict[str, Lease] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, job: ClaimedJob, abort: threading.Event) -> Lease:
        lease = Lease(self, job, abort)
        with self._lock:
            self._leases[job.token] = lease
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lease-renewer", daemon=True)
                self._thread.start()
        return lease

    def remove(self, lease: Lease) -> None:
        with self._lock:
            self._leases.pop(lease.job.token, None)

    def _run(self) -> None:
        while True:
            time.sleep(min(self.interval, self.TICK_S))
            with self._lock:
                leases = list(self._leases.values())
                if not leases:
                    # Nothing to renew: end, so idle workers (warm Lambdas) hold no thread.
                    self._thread = None
                    return
            now = time.monotonic()
            for lease in leases:
                due = now - lease.last_beat >= self.interval
                fresh = lease.percent is not None and lease.percent != lease.sent
                if due or fresh:
                    self._beat(lease)

    def _beat(self, lease: Lease) -> None:
        percent = lease.percent
        try:
            self.queue.heartbeat(lease.job, percent)
        except LeaseLost:
            lease.lost.set()
            self.remove(lease)
            return
        except StoreUnavailable:
            # Keep trying: the lease survives a Redis blip shorter than its remaining time.
            logger.warning("heartbeat failed: redis unreachable", extra={"jobId": lease.job.id})
            return
        except Exception:
            record_failure("heartbeat")
            logger.exception("heartbeat failed", extra={"jobId": lease.job.id})
            return
        lease.sent = percent
        lease.last_beat = time.monotonic()
