"""A long-running worker's liveness: one thread renews it every sixth of
PREVIEW_WORKER_LIVENESS_MS (3 s: every 0.5 s), so the jobs of a worker that was killed go back
to waiting within a few seconds instead of at the end of their 30 s lease.

The timings, with the defaults:
- A renewal is one short script on the thread's own connection; a render holding the CPU
  does not delay it beyond the interpreter's thread switch interval (5 ms).
- Five renewals in a row may fail before the liveness lapses: a Redis blip of up to about
  2.5 s (the period less one interval) never costs a live worker its jobs.
- A longer outage seen by every worker (a restart, a failover) stops the checks too;
  the first check after it gives every worker one more period to renew (recover.lua).
- Only a worker cut off alone for longer than the period loses its jobs while alive; its
  next heartbeat finds the lease gone and its render stops (delivery is at least once).
- The lease stays the outer bound: a job whose worker keeps its liveness but no longer renews
  the job's lease is taken back when the lease expires, as is the job of a claimer without
  liveness (a Lambda invocation).
"""

from __future__ import annotations

import threading

from shared.errors import StoreUnavailable
from shared.observability import logger, record_failure
from shared.queue import JobQueue


class Liveness:
    def __init__(self, queue: JobQueue, worker_id: str) -> None:
        self.queue = queue
        self.worker_id = worker_id
        self.interval = queue.settings.worker_liveness_ms / 6000
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._renewed = False
        self._failing = False

    def start(self) -> None:
        self.renew()
        self._thread = threading.Thread(target=self._run, name="liveness", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """No more renewals (the worker ends its liveness with `JobQueue.forget_worker`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.renew()

    def renew(self) -> None:
        try:
            listed = self.queue.renew_liveness(self.worker_id)
        except StoreUnavailable:
            if not self._failing:
                logger.warning("liveness renewal failed: redis unreachable", extra={"workerId": self.worker_id})
            self._failing = True
            return
        except Exception:
            record_failure("liveness")
            logger.exception("liveness renewal failed", extra={"workerId": self.worker_id})
            return
        if self._renewed and not listed:
            logger.warning("liveness had lapsed; jobs of this worker may have been taken back",
                           extra={"workerId": self.worker_id})
        self._renewed = True
        self._failing = False
