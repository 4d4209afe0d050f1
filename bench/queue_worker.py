"""A no-op worker process for the queue bench, ours, bullmq's or SAQ's, run as users run theirs.

    python -m bench.queue_worker ours      the service's worker as `python -m functions.render_worker`
                                           builds it (settings from the environment, the service's
                                           logging to stdout), with a render and a store that do
                                           nothing: PREVIEW_WORKER_CONCURRENCY job loops on the main
                                           thread (so the start-up heap is frozen, as in production);
                                           with PREVIEW_WORKER_PROCESSES above 1, that many such
                                           processes under the service's supervisor
    python -m bench.queue_worker bullmq    a bullmq Worker, concurrency BENCH_CONCURRENCY, on
                                           BENCH_QUEUE at REDIS_URL, a no-op async processor
    python -m bench.queue_worker saq       a SAQ Worker, concurrency BENCH_CONCURRENCY, on BENCH_QUEUE
                                           at REDIS_URL, a no-op async function "preview"

With BENCH_PICKUP_FILE set, each job's pickup time (time.perf_counter: CLOCK_MONOTONIC, the same
clock in every process of the machine) goes there as a line "<jobId> <seconds>", written after
the time was taken. With BENCH_LOG_TOGGLE set, SIGUSR1 flips ours between LOG_LEVEL INFO and
WARNING. All stop on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any


def _recorder() -> IO[str] | None:
    path = os.environ.get("BENCH_PICKUP_FILE")
    return open(path, "a", encoding="utf-8", buffering=1) if path else None  # noqa: SIM115


def run_ours() -> int:
    from bench.queue_fixtures import NullStore
    from shared import wiring
    from shared.worker import Worker

    record = _recorder()

    def render(request: Any, out: Path, settings: Any, progress: Any) -> None:
        if record is not None:
            record.write(f"{request.job_id} {time.perf_counter()}\n")

    services = wiring.services()
    if services.settings.worker_processes > 1:  # as functions.render_worker runs several
        from shared.worker.processes import supervise

        return supervise([sys.executable, "-m", "bench.queue_worker", "ours"], services.settings.worker_processes)
    worker = Worker(services.settings, services.queue, NullStore(), render=render)
    signal.signal(signal.SIGTERM, worker.stop_from_signal)
    if os.environ.get("BENCH_LOG_TOGGLE"):
        _toggle_log_level_on_sigusr1()
    try:
        return worker.run_forever()
    finally:
        wiring.reset()


def _toggle_log_level_on_sigusr1() -> None:
    """SIGUSR1 flips the service's logger between INFO and WARNING, as LOG_LEVEL would set it at
    start-up (the level is read on every line), so the bench can time one worker process at both
    levels in alternating phases: the same process, heap and CPU placement on both sides."""
    import logging

    from shared.observability import logger

    std = logging.getLogger(logger.name)

    def toggle(*_: object) -> None:
        std.setLevel(logging.WARNING if std.getEffectiveLevel() <= logging.INFO else logging.INFO)

    signal.signal(signal.SIGUSR1, toggle)


def run_bullmq() -> int:
    import asyncio

    from bullmq import Worker as BullWorker

    from bench.queue_fixtures import KEEP_COMPLETED_COUNT, KEEP_COMPLETED_SECONDS

    record = _recorder()

    async def processor(job: Any, token: str) -> None:
        if record is not None:
            record.write(f"{job.id} {time.perf_counter()}\n")

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        worker = BullWorker(os.environ["BENCH_QUEUE"], processor, {
            "connection": os.environ["REDIS_URL"],
            "concurrency": int(os.environ.get("BENCH_CONCURRENCY", "8")),
            "removeOnComplete": {"count": KEEP_COMPLETED_COUNT, "age": KEEP_COMPLETED_SECONDS},
        })
        await stop.wait()
        await worker.close()

    asyncio.run(main())
    return 0


def run_saq() -> int:
    import asyncio

    from saq import Queue, Worker

    record = _recorder()

    async def preview(ctx: dict[str, Any], **payload: Any) -> None:
        if record is not None:
            record.write(f"{ctx['job'].key} {time.perf_counter()}\n")

    async def main() -> None:
        queue = Queue.from_url(os.environ["REDIS_URL"], name=os.environ["BENCH_QUEUE"])
        await queue.connect()
        # Its defaults otherwise (job timeout, upkeep timers, a blocking dequeue); Worker.start
        # returns on SIGTERM.
        worker = Worker(queue, [("preview", preview)], concurrency=int(os.environ.get("BENCH_CONCURRENCY", "8")))
        try:
            await worker.start()
        finally:
            await queue.disconnect()

    asyncio.run(main())
    return 0


if __name__ == "__main__":
    side = sys.argv[1:]
    sys.exit(run_bullmq() if side == ["bullmq"] else run_saq() if side == ["saq"] else run_ours())
