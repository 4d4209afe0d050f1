"""The queue bench's measurements, ours and bullmq's side by side: enqueue, claim+complete,
the worker loop, and an idle worker's pickup latency. Each returns its figure; the rounds,
targets and table are queue_bench's."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import harness
from bench.queue_fixtures import (
    KEEP_COMPLETED_COUNT,
    KEEP_COMPLETED_SECONDS,
    NullStore,
    QueueBench,
    Sizes,
    job_payload,
    noop_render,
    prefill,
)
from shared.contract import JobRequest
from shared.queue import JobQueue
from shared.settings import Settings
from shared.worker import Worker

# -- 1. enqueue -----------------------------------------------------------------------------


def ours_admit(bench: QueueBench, n: int, warmup: int, threads: int = 1) -> float:
    """jobs/s of `JobQueue.admit`: in this thread when threads == 1, else on `threads` threads."""
    queue = bench.queue(f"admit-{threads}")
    if threads == 1:
        for i in range(warmup):  # loads the script, opens this thread's connection
            queue.admit(job_payload(i, "w"))
        start = time.perf_counter()
        for i in range(n):
            queue.admit(job_payload(i))
        return n / (time.perf_counter() - start)
    parts, warm = harness.slices(n, threads), harness.slices(warmup, threads)
    elapsed, _ = harness.run_threads(threads, lambda t: [queue.admit(job_payload(i)) for i in parts[t]],
                                     setup=lambda t: [queue.admit(job_payload(i, "w")) for i in warm[t]])
    return n / elapsed


async def _bullmq_add(url: str, name: str, n: int, warmup: int, tasks: int, pooled: bool) -> float:
    from bullmq import Queue

    client = None
    if pooled:
        import redis.asyncio as aredis

        # bullmq uses a client it is given as is: with a pool, concurrent adds overlap.
        client = aredis.Redis.from_url(url, decode_responses=True)
    queue = Queue(name, {"connection": client if client is not None else url})
    try:

        async def add_range(part: range, tag: str) -> None:
            for i in part:
                await queue.add("preview", job_payload(i, tag), {"jobId": f"{tag}-{i}"})

        await asyncio.gather(*(add_range(part, "w") for part in harness.slices(warmup, tasks)))
        start = time.perf_counter()
        await asyncio.gather(*(add_range(part, "b") for part in harness.slices(n, tasks)))
        return n / (time.perf_counter() - start)
    finally:
        await queue.close()
        if client is not None:
            await client.aclose()


def bullmq_add(url: str, n: int, warmup: int, tasks: int = 1, pooled: bool = False) -> float:
    return asyncio.run(_bullmq_add(url, f"bq-add-{tasks}-{int(pooled)}", n, warmup, tasks, pooled))


# -- 2. claim + complete --------------------------------------------------------------------


def _drain(queue: JobQueue) -> int:
    """claim -> complete until the queue is empty (the `Worker._loop` shape with a no-op job)."""
    done = 0
    while True:
        job = queue.claim().job
        if job is None:
            return done
        queue.complete(job, {"dryRun": True})
        done += 1


def ours_claim_complete(bench: QueueBench, n: int, warmup: int, threads: int) -> float:
    queue = bench.queue(f"claim-{threads}")
    prefill(queue, warmup, "w")
    harness.run_threads(threads, lambda _t: _drain(queue))  # warm-up: scripts, connections, retention
    prefill(queue, n, "b")
    elapsed, done = harness.run_threads(threads, lambda _t: _drain(queue))
    if sum(done) != n:
        raise RuntimeError(f"claimed {sum(done)} of {n} jobs")
    return n / elapsed


# -- 3. worker loop -------------------------------------------------------------------------


def _wait_for(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.002) -> None:
    deadline = time.perf_counter() + timeout_s
    while not predicate():
        if time.perf_counter() > deadline:
            raise TimeoutError("the worker did not finish in time")
        time.sleep(poll_s)


def _run_worker(queue: JobQueue, n: int, concurrency: int) -> float:
    """Seconds for a real `Worker.run_forever(concurrency)` to finish n pre-filled jobs."""
    worker = Worker(queue.settings, queue, NullStore(), render=noop_render)
    thread = threading.Thread(target=worker.run_forever, args=(concurrency,), daemon=True)
    start = time.perf_counter()
    thread.start()
    try:
        _wait_for(lambda: sum(worker.outcomes.values()) >= n, timeout_s=max(60.0, n / 50))
        elapsed = time.perf_counter() - start
    finally:
        worker.stop()
        thread.join(30)
    if worker.outcomes.get("dryrun", 0) != n:
        raise RuntimeError(f"unexpected outcomes {dict(worker.outcomes)}")
    return elapsed


def ours_worker(bench: QueueBench, n: int, warmup: int, concurrency: int) -> float:
    queue = bench.queue("worker")
    with harness.quiet_stdout():
        prefill(queue, warmup, "w")
        _run_worker(queue, warmup, concurrency)
        prefill(queue, n, "b")
        return n / _run_worker(queue, n, concurrency)


async def _bullmq_worker(url: str, name: str, n: int, concurrency: int) -> float:
    """jobs/s of a bullmq Worker with a no-op processor over n pre-filled jobs."""
    from bullmq import Queue
    from bullmq import Worker as BullWorker

    queue = Queue(name, {"connection": url})
    try:
        for first in range(0, n, 500):
            await queue.addBulk([
                {"name": "preview", "data": job_payload(i), "opts": {"jobId": f"b-{i}"}}
                for i in range(first, min(n, first + 500))
            ])
    finally:
        await queue.close()

    finished = asyncio.Event()
    completed = 0

    def on_completed(job: Any, result: Any) -> None:
        nonlocal completed
        completed += 1
        if completed >= n:
            finished.set()

    async def processor(job: Any, token: str) -> None:
        return None

    start = time.perf_counter()
    worker = BullWorker(name, processor, {
        "connection": url,
        "concurrency": concurrency,
        "removeOnComplete": {"count": KEEP_COMPLETED_COUNT, "age": KEEP_COMPLETED_SECONDS},
    })
    worker.on("completed", on_completed)
    try:
        await asyncio.wait_for(finished.wait(), timeout=max(60.0, n / 50))
        return n / (time.perf_counter() - start)
    finally:
        await worker.close()


def bullmq_worker(url: str, n: int, warmup: int, concurrency: int) -> float:
    asyncio.run(_bullmq_worker(url, "bq-worker-warmup", warmup, concurrency))
    return asyncio.run(_bullmq_worker(url, "bq-worker", n, concurrency))


# -- 4. pickup latency ----------------------------------------------------------------------


def pickup_latency_ms(bench: QueueBench, samples: int, warmup: int, concurrency: int, gap_s: float) -> list[float]:
    """An idle `Worker.run_forever`: ms from `admit()` returning to the render being called."""
    queue = bench.queue("latency")
    started: dict[str, float] = {}
    arrived = threading.Event()

    def render(request: JobRequest, out: Path, settings: Settings, progress: Callable[[int], None] | None) -> None:
        started[request.job_id] = time.perf_counter()
        arrived.set()

    worker = Worker(queue.settings, queue, NullStore(), render=render)
    thread = threading.Thread(target=worker.run_forever, args=(concurrency,), daemon=True)
    latencies: list[float] = []
    with harness.quiet_stdout():
        thread.start()
        try:
            for i in range(warmup + samples):
                time.sleep(gap_s)
                arrived.clear()
                queue.admit(job_payload(i))
                admitted = time.perf_counter()
                if not arrived.wait(5):
                    raise TimeoutError(f"job {i} was not picked up")
                if i >= warmup:
                    latencies.append((started[f"b-{i}"] - admitted) * 1000)
        finally:
            worker.stop()
            thread.join(30)
    return latencies


@dataclass(frozen=True)
class PickupLatency:
    """Every round's samples (ms); the figures come from the round with the lowest p99."""

    rounds: list[list[float]]

    @property
    def best_round(self) -> list[float]:
        return min(self.rounds, key=lambda samples: harness.percentile(samples, 99))

    @property
    def p50(self) -> float:
        return statistics.median(self.best_round)

    @property
    def p99(self) -> float:
        return harness.percentile(self.best_round, 99)


def pickup_latency(bench: QueueBench, sizes: Sizes) -> PickupLatency:
    """`sizes.rounds` rounds, each with a fresh idle worker on an empty database."""
    rounds: list[list[float]] = []
    for _ in range(sizes.rounds):
        rounds.append(pickup_latency_ms(bench, sizes.latency_samples, max(5, sizes.latency_samples // 10),
                                        sizes.concurrency, sizes.latency_gap_s))
        bench.close_clients()
        bench.flush()
    return PickupLatency(rounds)
