"""The render worker: its core plus the two run modes, inside a Lambda invocation or as a
long-running process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.worker import lambda_mode, process_mode
from shared.worker.core import WorkerCore


class Worker(WorkerCore):
    def run_until_idle(self, remaining_ms: Callable[[], float] | None = None, max_jobs: int | None = None,
                       safety_ms: int = 2000) -> dict[str, Any]:
        """Lambda mode (`remaining_ms`: the invocation's time left): a summary of the run."""
        with self.scratch.for_loop():
            return lambda_mode.drain(self, remaining_ms, max_jobs, safety_ms)

    def run_forever(self, concurrency: int | None = None) -> int:
        """Process mode: `concurrency` job loops (PREVIEW_WORKER_CONCURRENCY) until `stop()`;
        returns the process's exit status."""
        return process_mode.run(self, concurrency or self.settings.worker_concurrency)
