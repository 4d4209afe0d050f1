"""PREVIEW_WORKER_PROCESSES > 1: the long-running worker as a parent that supervises that many
worker processes, each the single-process worker (its own worker id, liveness, scratch space,
PREVIEW_WORKER_CONCURRENCY job loops and, when PREVIEW_METRICS_PORT is set, its own `/metrics`
on the port plus its slot number: the parent has no metrics of its own).

The parent starts `command` once per slot with PREVIEW_WORKER_PROCESSES=1, forwards SIGTERM and
SIGINT to the children, starts again a child that exits while nothing asked it to (after a
back-off that grows while it keeps dying young), and returns once every child has exited after
a stop. A slot whose child died young RESTART_LIMIT times in a row is given up on: the others
are stopped and the exit status is not 0. Each child gets a SIGTERM should the parent die
(Linux), so none is left behind."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from shared.observability import logger

# A child that lived shorter than this "died young": its slot's back-off grows.
YOUNG_S = 30.0
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
# Children dead young in a row after which the slot, and the whole worker, gives up.
RESTART_LIMIT = 5
# Exit status of the parent when a slot was given up on and its child's own was 0 or a signal.
GAVE_UP_EXIT_CODE = 1
POLL_S = 0.1
# After the children's own grace period (PREVIEW_SHUTDOWN_GRACE_SECONDS), how long a stopping
# child may take before it is killed.
STOP_MARGIN_S = 60.0
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Slot:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    young_deaths: int = 0
    restart_at: float = 0.0
    last_code: int = 0
    given_up: bool = False
    # Every child this slot started, first to last.
    pids: list[int] = field(default_factory=list)


def child_env(env: Mapping[str, str], index: int, metrics_port: int) -> dict[str, str]:
    """The environment of the child in slot `index`: a single-process worker, its metrics (if
    any) on a port of its own."""
    own = {**env, "PREVIEW_WORKER_PROCESSES": "1"}
    own["PREVIEW_METRICS_PORT"] = str(metrics_port + index if metrics_port else 0)
    return own


class Supervisor:
    def __init__(self, command: Sequence[str], processes: int, *, metrics_port: int = 0,
                 shutdown_grace_s: float = 20.0, env: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.command = list(command)
        self.env = dict(os.environ if env is None else env)
        self.metrics_port = metrics_port
        self.stop_timeout_s = shutdown_grace_s + STOP_MARGIN_S
        self.slots = [Slot(i) for i in range(processes)]
        self.stopping = threading.Event()
        self.stop_signal: int | None = None  # noted by the signal handler, acted on by `run`
        self.clock = clock

    def _spawn(self, slot: Slot) -> None:
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        slot.process = subprocess.Popen(self.command, env=child_env(self.env, slot.index, self.metrics_port),
                                        preexec_fn=preexec)  # noqa: PLW1509 - the parent has no other threads
        slot.started = self.clock()
        slot.pids.append(slot.process.pid)
        logger.info("worker process started", extra={"slot": slot.index, "pid": slot.process.pid})

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask every child to stop (their graceful stop), and the supervisor to end."""
        self.stopping.set()
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.process.send_signal(signum)

    def stop_from_signal(self, signum: int, frame: object = None) -> None:
        """A signal handler's stop, as `WorkerCore.stop_from_signal`: only noted (no lock, no
        log line: the interrupted main thread may hold them), and `run` acts on it."""
        if self.stop_signal is None:
            self.stop_signal = signum

    def _reap(self, slot: Slot) -> None:
        """A child that exited while the worker runs: its slot starts another after its back-off,
        or gives up."""
        assert slot.process is not None
        code = slot.process.returncode
        lived = self.clock() - slot.started
        slot.process, slot.last_code = None, code
        slot.young_deaths = slot.young_deaths + 1 if lived < YOUNG_S else 0
        if slot.young_deaths >= RESTART_LIMIT:
            slot.given_up = True
            logger.error("worker process keeps failing; stopping the worker",
                         extra={"slot": slot.index, "exitCode": code, "restarts": slot.young_deaths})
            self.stop()
            return
        delay = 0.0 if slot.young_deaths == 0 else min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (slot.young_deaths - 1))
        slot.restart_at = self.clock() + delay
        logger.warning("worker process exited; starting another",
                       extra={"slot": slot.index, "exitCode": code, "livedSeconds": round(lived, 3),
                              "restartInSeconds": delay})

    def run(self) -> int:
        """Until every child has exited after a stop; the worker's exit status."""
        for slot in self.slots:
            self._spawn(slot)
        logger.info("worker processes started", extra={"processes": len(self.slots)})
        while not self.stopping.is_set():
            if self.stop_signal is not None:
                logger.info("stop requested", extra={"signal": signal.Signals(self.stop_signal).name})
                self.stop(signal.SIGTERM)
                break
            for slot in self.slots:
                if self.stopping.is_set():
                    break
                if slot.process is not None and slot.process.poll() is not None:
                    self._reap(slot)
                elif slot.process is None and not slot.given_up and self.clock() >= slot.restart_at:
                    self._spawn(slot)
            self.stopping.wait(POLL_S)
        self.stop()  # a child started just as the stop came gets its signal too
        deadline = self.clock() + self.stop_timeout_s
        codes: list[int] = []
        for slot in self.slots:
            if slot.process is None:  # given up on, or between a death and its restart
                codes.append(slot.last_code if slot.given_up else 0)
                continue
            try:
                slot.process.wait(max(0.0, deadline - self.clock()))
            except subprocess.TimeoutExpired:
                logger.error("worker process did not stop; killing it", extra={"slot": slot.index})
                slot.process.kill()
                slot.process.wait()
            codes.append(slot.process.returncode)
        logger.info("worker processes stopped", extra={"exitCodes": codes})
        if any(slot.given_up for slot in self.slots):
            failed = next(s.last_code for s in self.slots if s.given_up)
            return failed if failed > 0 else GAVE_UP_EXIT_CODE
        # Not 0 when a child did not stop cleanly (its own status, or 1 for a signal).
        return next((code if code > 0 else GAVE_UP_EXIT_CODE for code in codes if code != 0), 0)


def supervise(command: Sequence[str], processes: int, *, metrics_port: int = 0,
              shutdown_grace_s: float = 20.0) -> int:
    """Run `processes` copies of `command` under a `Supervisor` on the main thread, SIGTERM and
    SIGINT forwarded; the exit status."""
    supervisor = Supervisor(command, processes, metrics_port=metrics_port, shutdown_grace_s=shutdown_grace_s)

    signal.signal(signal.SIGTERM, supervisor.stop_from_signal)
    signal.signal(signal.SIGINT, supervisor.stop_from_signal)
    return supervisor.run()
