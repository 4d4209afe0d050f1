"""A claimed job's lease while it renders: one renewer thread per worker renews every lease
it holds, and the render learns of a lost lease, a shutdown or its passed deadline at its next
progress report. The same thread is the watchdog of renders that stop reporting: past its
deadline (and a short grace) a lease is no longer renewed and its job is given up on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from shared.errors import LeaseLost, StoreUnavailable, TransientRenderError
from shared.observability import logger, record_failure
from shared.queue import ClaimedJob, JobQueue
from shared.worker.deadline import OVERRUN_GRACE_S, deadline_reason


class Stopping(Exception):
    """The worker is shutting down and gives the job back instead of finishing it."""


class DeadlineExceeded(TransientRenderError):
    """The render ran past its deadline: the attempt fails (another may be luckier)."""


class Lease:
    """One claimed job's lease as its render sees it: progress goes in, a lost lease, a
    shutdown or a passed deadline comes out as an exception at the next progress report."""

    def __init__(self, renewer: LeaseRenewer, job: ClaimedJob, abort: threading.Event,
                 limit_s: int | None = None) -> None:
        self.renewer = renewer
        self.job = job
        self.abort = abort
        self.lost = threading.Event()
        self.percent: int | None = None
        self.sent: int | None = None
        self.started = time.monotonic()
        self.last_beat = self.started
        self.limit_s = limit_s
        # None once the render is over (publishing has timeouts of its own).
        self.deadline = None if limit_s is None else self.started + limit_s
        # Set by the watchdog when it gave up on the render (the job's failure is recorded).
        self.overrun = False
        self.thread = threading.current_thread()

    @property
    def reason(self) -> str:
        return deadline_reason(self.limit_s or 0)

    def check(self) -> None:
        if self.lost.is_set():
            raise LeaseLost(f"lease on job {self.job.id!r} was lost")
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise DeadlineExceeded(self.reason)
        if self.abort.is_set():
            raise Stopping()

    def progress(self, percent: int) -> None:
        """The render's progress callback."""
        self.percent = max(0, min(100, int(percent)))
        self.check()

    def rendered(self) -> None:
        """The render is over: its deadline no longer applies. Raises `LeaseLost` when the
        watchdog gave up on it first (then its job is no longer this worker's)."""
        self.renewer.disarm(self)
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
        # Called (on the renewer thread) with a lease whose render overran its deadline and
        # did not stop: the lease is no longer renewed and nothing else will end its job.
        self.on_overrun: Callable[[Lease], None] | None = None

    def add(self, job: ClaimedJob, abort: threading.Event, limit_s: int | None = None) -> Lease:
        lease = Lease(self, job, abort, limit_s)
        with self._lock:
            self._leases[job.token] = lease
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lease-renewer", daemon=True)
                self._thread.start()
        return lease

    def remove(self, lease: Lease) -> None:
        with self._lock:
            self._leases.pop(lease.job.token, None)

    def disarm(self, lease: Lease) -> None:
        with self._lock:  # not while the watchdog decides about it
            if self._leases.get(lease.job.token) is lease:
                lease.deadline = None

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
                deadline = lease.deadline
                if deadline is not None and now >= deadline + OVERRUN_GRACE_S:
                    self._give_up(lease)
                    continue
                due = now - lease.last_beat >= self.interval
                fresh = lease.percent is not None and lease.percent != lease.sent
                if due or fresh:
                    self._beat(lease)

    def _give_up(self, lease: Lease) -> None:
        """The render is stuck where it cannot see its deadline (native code, a hung read):
        stop renewing, mark the lease lost (a late finish is refused) and hand it over."""
        with self._lock:
            if self._leases.get(lease.job.token) is not lease or lease.deadline is None:
                return  # it finished or stopped meanwhile
            del self._leases[lease.job.token]
            lease.overrun = True
        lease.lost.set()
        if self.on_overrun is None:
            return
        try:
            self.on_overrun(lease)
        except Exception:
            record_failure("worker")
            logger.exception("handling a render past its deadline failed", extra={"jobId": lease.job.id})

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
