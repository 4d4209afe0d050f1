"""A job's progress as it is polled: one bar redrawn in place (\\r) on a terminal, a plain line
per change of state or progress otherwise (a CI log, a pipe)."""

from __future__ import annotations

import time
from typing import Any, TextIO


class Progress:
    def __init__(self, stream: TextIO, job_id: str, *, tty: bool | None = None, width: int = 30) -> None:
        self.stream = stream
        self.job_id = job_id
        self.tty = stream.isatty() if tty is None else tty
        self.width = width
        self.started = time.monotonic()
        self._last: tuple[Any, ...] | None = None
        self._drawn = 0

    def update(self, status: dict[str, Any]) -> None:
        state = str(status.get("state", "?"))
        percent = max(0, min(100, int(status.get("progress") or 0)))
        attempts = f" attempt {status.get('attemptsMade')}/{status.get('attemptsMax')}" \
            if status.get("attemptsMade") else ""
        if self.tty:
            filled = self.width * percent // 100
            bar = "#" * filled + "-" * (self.width - filled)
            line = f"{self.job_id} [{bar}] {percent:3d}% {state}{attempts} {time.monotonic() - self.started:5.1f} s"
            self.stream.write("\r" + line.ljust(self._drawn))
            self._drawn = len(line)
            self.stream.flush()
            return
        key = (state, percent, attempts)
        if key != self._last:
            self._last = key
            self.stream.write(f"{self.job_id} {state} {percent}%{attempts}\n")
            self.stream.flush()

    def finish(self) -> None:
        """End the bar's line, so what follows starts on its own."""
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = 0
