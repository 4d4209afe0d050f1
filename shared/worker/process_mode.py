"""The worker as a long-running process (or the emulator's thread): `concurrency` job loops
that wake on a blocking Redis wait, a maintenance loop, and a graceful stop: running jobs get
the grace period to finish, then are handed back to the queue."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import threading
import time

from shared.disk import DiskGate
from shared.errors import StoreUnavailable
from shared.observability import logger, record_failure
from shared.queue import ClaimOutcome
from shared.worker.core import WorkerCore
from shared.worker.job import NextClaim
from shared.worker.liveness import Liveness

IDLE_WAIT_S = 1.0
# Exit status of a worker with more job threads stuck in renders than it has job loops.
STUCK_EXIT_CODE = 70
# How often the jobs of stopped workers are looked for: with the liveness period (3 s) this
# puts a killed worker's job back in waiting within about 4 s.
RECOVER_EVERY_S = 1.0
# How soon the main loop acts on a stop signal (`WorkerCore.stop_from_signal`).
SIGNAL_POLL_S = 0.05
NOTHING_CLAIMED = ClaimOutcome(job=None)


def freeze_startup_heap() -> None:
    """Move everything alive now out of the garbage collector's sight (`gc.freeze`). A worker
    process holds some 47,000 objects after its imports, and each full collection walked them
    all: about 30 ms with every job loop stopped, felt by the jobs picked up meanwhile (the
    pickup p99). What start-up built lives as long as the process anyway."""
    gc.collect()
    gc.freeze()


def run(worker: WorkerCore, concurrency: int) -> int:
    """Until `worker.stop()`; returns the process's exit status. Run on the main thread (the
    worker process itself, not the emulator's or a test's thread), it first freezes the heap
    start-up built."""
    settings = worker.settings
    if threading.current_thread() is threading.main_thread():
        freeze_startup_heap()
    with contextlib.suppress(OSError):
        worker.scratch.sweep()
    liveness = Liveness(worker.queue, worker.worker_id)
    liveness.start()
    gate = DiskGate(settings)  # one for all the loops: one check per second, one log line per change
    threads: list[threading.Thread] = []

    def start_loop() -> None:
        thread = threading.Thread(target=_job_loop, args=(worker, gate), name=f"job-loop-{len(threads)}",
                                  daemon=True)
        threads.append(thread)
        thread.start()

    def replace_stuck() -> None:
        # A job thread stuck in a render past its deadline cannot be killed: another takes its
        # place, until more are stuck than there are loops; then the process exits for its
        # supervisor to start it again.
        if worker.stuck_threads() > concurrency:
            logger.error("too many renders stuck past their deadlines; exiting to be restarted",
                         extra={"workerId": worker.worker_id, "stuck": worker.stuck_threads()})
            worker.exit_code = STUCK_EXIT_CODE
            worker.stop()
        elif not worker.stop_event.is_set():
            start_loop()

    worker.on_stuck = replace_stuck
    for _ in range(concurrency):
        start_loop()
    logger.info("worker started", extra={"workerId": worker.worker_id, "concurrency": concurrency})
    interval = min(5.0, settings.lease_ms / 2000)
    tick = min(RECOVER_EVERY_S, settings.worker_liveness_ms / 3000, interval)
    next_full = next_tick = 0.0
    while not worker.stop_event.is_set():
        if worker.stop_signal is not None:
            logger.info("stop requested", extra={"signal": signal.Signals(worker.stop_signal).name})
            worker.stop()
            break
        if time.monotonic() >= next_tick:
            full = time.monotonic() >= next_full
            try:
                worker.maintain(full=full)
                if full:
                    next_full = time.monotonic() + interval
            except StoreUnavailable:
                logger.warning("redis unreachable; retrying")
            next_tick = time.monotonic() + tick
        worker.stop_event.wait(max(0.0, min(SIGNAL_POLL_S, next_tick - time.monotonic())))
    loops = [t for t in list(threads) if t not in worker.stuck]  # the stuck ones' jobs are settled
    grace_deadline = time.monotonic() + settings.shutdown_grace_seconds
    for thread in loops:
        thread.join(max(0.0, grace_deadline - time.monotonic()))
    if any(t.is_alive() for t in loops):
        # Past the grace period: running renders abort and their jobs go back to waiting.
        worker.abort_event.set()
        for thread in loops:
            thread.join(30)
    # The jobs are handed back: the liveness ends, and any job still held is taken back by
    # the next recovery pass of another worker.
    liveness.stop()
    with contextlib.suppress(StoreUnavailable):
        worker.queue.forget_worker(worker.worker_id)
    logger.info("worker stopped", extra={"workerId": worker.worker_id, "outcomes": dict(worker.outcomes)})
    return worker.exit_code


def leave(worker: WorkerCore, code: int) -> int:
    """The process's exit status; or, with renders still stuck past their deadlines (their jobs
    settled), the end of the process now: the interpreter would wait at exit for their threads
    (it joins the thread pools' threads), as long as they stay stuck."""
    stuck = worker.stuck_threads()
    if stuck:
        logger.warning("exiting with renders still stuck past their deadlines", extra={"stuck": stuck})
        logging.shutdown()
        os._exit(code)
    return code


def _job_loop(worker: WorkerCore, gate: DiskGate) -> None:
    # A busy loop claims its next job as it completes one (one round trip per job), unless the
    # worker is stopping or the disk is below its floor by then.
    then = NextClaim(worker.worker_id, lambda: not worker.stop_event.is_set() and not gate.blocked())
    this_thread = threading.current_thread()
    with worker.scratch.for_loop():
        while not worker.stop_event.is_set():
            try:
                if gate.blocked():  # below the free-disk floor: leave the jobs queued
                    worker.stop_event.wait(IDLE_WAIT_S)
                    continue
                claim = worker.queue.claim(worker_id=worker.worker_id)
                while claim.job is not None:
                    claim = worker.process_then_claim(claim.job, then) or NOTHING_CLAIMED
                    if this_thread in worker.stuck:
                        return  # given up on past its deadline: another loop took its place
                    if claim.job is not None and worker.stop_event.is_set():
                        # Claimed as the worker began to stop: straight back to waiting.
                        worker.queue.release(claim.job)
                        claim = NOTHING_CLAIMED
                if worker.stop_event.is_set():
                    break
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
