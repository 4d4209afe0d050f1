"""The queue bench's measurements, ours, bullmq's and SAQ's side by side: enqueue, claim+complete,
the worker loop, and an idle worker's pickup latency. Each returns its figure; the rounds,
targets and table are queue_bench's."""

from __future__ import annotations

import asyncio
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench import harness
from bench.queue_fixtures import (
    KEEP_COMPLETED_COUNT,
    KEEP_COMPLETED_SECONDS,
    NODE_DIR,
    NullStore,
    QueueBench,
    Sizes,
    job_payload,
    make_settings,
    noop_render,
    prefill,
    worker_env,
)
from shared.contract import JobRequest
from shared.keys import QueueKeys
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


async def _timed_adds(add: Callable[[int, str], Awaitable[None]], n: int, warmup: int, tasks: int) -> float:
    """jobs/s of `add(i, tag)` for n jobs split over `tasks` asyncio tasks, after `warmup`
    untimed ones (tag "w"; the timed ones "b")."""

    async def add_range(part: range, tag: str) -> None:
        for i in part:
            await add(i, tag)

    await asyncio.gather(*(add_range(part, "w") for part in harness.slices(warmup, tasks)))
    start = time.perf_counter()
    await asyncio.gather(*(add_range(part, "b") for part in harness.slices(n, tasks)))
    return n / (time.perf_counter() - start)


async def _bullmq_add(url: str, name: str, n: int, warmup: int, tasks: int, pooled: bool) -> float:
    from bullmq import Queue

    client = None
    if pooled:
        import redis.asyncio as aredis

        # bullmq uses a client it is given as is: with a pool, concurrent adds overlap.
        client = aredis.Redis.from_url(url, decode_responses=True)
    queue = Queue(name, {"connection": client if client is not None else url})
    try:

        async def add(i: int, tag: str) -> None:
            await queue.add("preview", job_payload(i, tag), {"jobId": f"{tag}-{i}"})

        return await _timed_adds(add, n, warmup, tasks)
    finally:
        await queue.close()
        if client is not None:
            await client.aclose()


def bullmq_add(url: str, n: int, warmup: int, tasks: int = 1, pooled: bool = False) -> float:
    return asyncio.run(_bullmq_add(url, f"bq-add-{tasks}-{int(pooled)}", n, warmup, tasks, pooled))


def _saq_queue(url: str, name: str) -> Any:
    from saq import Queue

    return Queue.from_url(url, name=name)


async def _saq_enqueue(queue: Any, i: int, tag: str, job_id: str | None = None) -> None:
    """One SAQ job: the payload as the function's keyword arguments, its jobId as the job's key
    (as bullmq's jobId: a second admission of the same key is refused), kept after completion
    as long as the other sides keep theirs (SAQ has no count cap)."""
    payload = job_payload(i, tag)
    if job_id is not None:
        payload["jobId"] = job_id
    await queue.enqueue("preview", key=payload["jobId"], ttl=KEEP_COMPLETED_SECONDS, **payload)


async def _saq_add(url: str, name: str, n: int, warmup: int, tasks: int) -> float:
    queue = _saq_queue(url, name)
    await queue.connect()
    try:

        return await _timed_adds(lambda i, tag: _saq_enqueue(queue, i, tag), n, warmup, tasks)
    finally:
        await queue.disconnect()


def saq_add(url: str, n: int, warmup: int, tasks: int = 1) -> float:
    """jobs/s of SAQ's `Queue.enqueue`, on `tasks` asyncio tasks (its client is a pool: concurrent
    enqueues overlap, up to its own limit of 20 operations at once)."""
    return asyncio.run(_saq_add(url, f"saq-add-{tasks}", n, warmup, tasks))


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


# -- 5. as users run it: worker processes, bulk admission, admission through the service ----


class WorkerProcess:
    """`python -m bench.queue_worker <side>` (or Node's worker) on the bench's queue until the block ends (SIGTERM,
    then SIGKILL); its stdout (the worker's log lines) goes to /dev/null, written all the same."""

    def __init__(self, side: str, env: dict[str, str]) -> None:
        self.side, self.env = side, env
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> WorkerProcess:
        # "node": BullMQ on Node (bench/node/worker.mjs), installed by queue_fixtures.node_bullmq
        command = (["node", str(NODE_DIR / "worker.mjs")] if self.side == "node"
                   else [sys.executable, "-m", "bench.queue_worker", self.side])
        self.process = subprocess.Popen(command, cwd=harness.REPO_ROOT, env=self.env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        return self

    def check(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            error = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
            raise RuntimeError(f"the {self.side} worker exited with code {self.process.returncode}: "
                               f"{error.strip()[-2000:]}")

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()


def _done(client: redis.Redis, side: str, name: str, n: int) -> int:
    """Jobs finished so far of the n filled: ours and BullMQ's completed sets (Python or Node);
    SAQ keeps none, and takes a finished job out of its incomplete set (queued and active jobs)."""
    if side == "saq":
        return n - int(client.zcard(f"saq:{name}:incomplete"))
    return int(client.zcard(f"pq:{{{name}}}:completed" if side == "ours" else f"bull:{name}:completed"))


def _fill(side: str, bench: QueueBench, name: str, n: int, tag: str) -> None:
    """n waiting jobs, admitted in bulk (untimed); Node's worker takes the jobs bullmq's
    `Queue.addBulk` makes (the two share their Redis layout and scripts)."""
    if side == "ours":
        queue = JobQueue(bench.queue("fill").redis, make_settings(bench.url, name, bench.data_dir))
        for first in range(0, n, 1000):
            queue.admit_many([job_payload(i, tag) for i in range(first, min(n, first + 1000))])
        queue.close()
    elif side == "saq":
        asyncio.run(_saq_fill(bench.url, name, n, tag))
    else:
        asyncio.run(_bullmq_fill(bench.url, name, n, tag))


async def _saq_fill(url: str, name: str, n: int, tag: str) -> None:
    """SAQ has no bulk enqueue: `Queue.enqueue` on 20 tasks (its client's limit of concurrent
    operations)."""
    queue = _saq_queue(url, name)
    await queue.connect()
    try:

        async def add_range(part: range) -> None:
            for i in part:
                await _saq_enqueue(queue, i, tag)

        await asyncio.gather(*(add_range(part) for part in harness.slices(n, 20)))
    finally:
        await queue.disconnect()


async def _bullmq_fill(url: str, name: str, n: int, tag: str) -> None:
    from bullmq import Queue

    queue = Queue(name, {"connection": url})
    try:
        for first in range(0, n, 1000):
            await queue.addBulk([{"name": "preview", "data": job_payload(i, tag), "opts": {"jobId": f"{tag}-{i}"}}
                                 for i in range(first, min(n, first + 1000))])
    finally:
        await queue.close()


def worker_rate(bench: QueueBench, side: str, n: int, concurrency: int, log_level: str = "INFO",
                processes: int = 1) -> float:
    """jobs/s of a worker process (ours, bullmq's, BullMQ's on Node or SAQ's) over n pre-filled no-op jobs, in steady
    state: from the moment a tenth of them are done to the moment nine tenths are (so neither
    its start-up nor the last jobs' tail is counted). The completed set is read every 2 ms.
    `processes` (ours): PREVIEW_WORKER_PROCESSES, each process with `concurrency` job loops."""
    name = f"bench-{side}-worker-{time.monotonic_ns()}"
    _fill(side, bench, name, n, "b")
    low, high = n // 10, n - n // 10
    env = {**worker_env(bench.url, name, bench.data_dir, concurrency, log_level),
           "PREVIEW_WORKER_PROCESSES": str(processes)}
    with redis.Redis.from_url(bench.url) as client, WorkerProcess(side, env) as worker:
        deadline = time.monotonic() + max(60.0, n / 50)
        start = None
        while True:
            done = _done(client, side, name, n)
            now = time.perf_counter()
            if start is None and done >= low:
                start, start_done = now, done
            if start is not None and done >= high:
                return (done - start_done) / (now - start)
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {side} worker finished {done} of {n} jobs")
            worker.check()
            time.sleep(0.002)


def logging_cost(bench: QueueBench, n: int, concurrency: int, phase_s: float) -> list[float]:
    """% of our worker's throughput that INFO logging costs, from one worker process over n
    pre-filled no-op jobs timed in alternating phases of `phase_s` at INFO (LOG_LEVEL's default)
    and at WARNING (flipped by SIGUSR1), in steady state (from a tenth of the jobs done to nine
    tenths). Each INFO phase is held to the mean of the WARNING phases either side of it, so a
    drift of the machine's speed cancels; one figure per INFO phase."""
    name = f"bench-ours-logging-{time.monotonic_ns()}"
    _fill("ours", bench, name, n, "b")
    low, high = n // 10, n - n // 10
    env = {**worker_env(bench.url, name, bench.data_dir, concurrency), "BENCH_LOG_TOGGLE": "1"}
    rates: list[float] = []  # jobs/s of each phase: INFO, WARNING, INFO, ...
    with redis.Redis.from_url(bench.url) as client:
        # All of them admitted (the completed cap bounds n), or the counts below would be wrong
        # and a signal could reach the worker before it set its handler
        admitted = client.zcard(QueueKeys(name).waiting)
    if admitted != n:
        raise RuntimeError(f"{admitted} of {n} jobs admitted: n is above the retention caps")
    with redis.Redis.from_url(bench.url) as client, WorkerProcess("ours", env) as worker:
        assert worker.process is not None
        deadline = time.monotonic() + max(60.0, n / 50)
        start: tuple[float, int] | None = None
        while True:
            done = _done(client, "ours", name, n)
            now = time.perf_counter()
            if done >= high:
                break
            if start is None and done >= low:
                start = (now, done)
            elif start is not None and now - start[0] >= phase_s:
                rates.append((done - start[1]) / (now - start[0]))
                worker.process.send_signal(signal.SIGUSR1)  # the next phase, at the other level
                start = (now, done)
            if time.monotonic() > deadline:
                raise TimeoutError(f"the worker finished {done} of {n} jobs")
            worker.check()
            time.sleep(0.002)
    info, quiet = rates[0::2], rates[1::2]
    return [100 * (1 - rate / ((quiet[k - 1] + quiet[k]) / 2)) for k, rate in enumerate(info)
            if 0 < k < len(quiet)]


def pickup_round(bench: QueueBench, side: str, samples: int, warmup: int, gaps: tuple[float, ...],
                 concurrency: int) -> dict[float, list[float]]:
    """An idle worker process: ms from an admission returning (`JobQueue.admit`, bullmq's
    `Queue.add`, SAQ's `Queue.enqueue`) to the job's processor being called in the worker, for each spacing."""
    name = f"bench-{side}-pickup-{time.monotonic_ns()}"
    record = bench.data_dir / f"{name}.pickups"
    bench.data_dir.mkdir(parents=True, exist_ok=True)
    env = {**worker_env(bench.url, name, bench.data_dir, concurrency), "BENCH_PICKUP_FILE": str(record)}
    plan = [(f"w-{i}", gaps[0]) for i in range(warmup)] + [
        (f"g{g}-{i}", gap) for g, gap in enumerate(gaps) for i in range(samples)]
    admitted: dict[str, float] = {}
    with WorkerProcess(side, env) as worker:
        picked = _wait_lines(record, 0, worker, timeout_s=0)  # nothing yet
        if side == "ours":
            queue = JobQueue(bench.queue("pickup").redis, make_settings(bench.url, name, bench.data_dir))
            for i, (job_id, gap) in enumerate(plan):
                if i == 0:
                    queue.admit({**job_payload(0, "ready"), "jobId": "ready"})
                    picked = _wait_lines(record, 1, worker, timeout_s=60)
                time.sleep(gap)
                queue.admit({**job_payload(i), "jobId": job_id})
                admitted[job_id] = time.perf_counter()
            queue.close()
        elif side == "saq":
            admitted, picked = asyncio.run(_saq_pickups(bench.url, name, plan, record, worker))
        else:
            admitted, picked = asyncio.run(_bullmq_pickups(bench.url, name, plan, record, worker))
        picked = _wait_lines(record, len(plan) + 1, worker, timeout_s=30)
    record.unlink(missing_ok=True)
    latencies: dict[float, list[float]] = {gap: [] for gap in gaps}
    for g, gap in enumerate(gaps):
        for i in range(samples):
            job_id = f"g{g}-{i}"
            latencies[gap].append((picked[job_id] - admitted[job_id]) * 1000)
    return latencies


async def _bullmq_pickups(url: str, name: str, plan: list[tuple[str, float]], record: Path,
                          worker: WorkerProcess) -> tuple[dict[str, float], dict[str, float]]:
    from bullmq import Queue

    queue = Queue(name, {"connection": url})
    admitted: dict[str, float] = {}
    picked: dict[str, float] = {}
    try:
        await queue.add("preview", job_payload(0, "ready"), {"jobId": "ready"})
        picked = _wait_lines(record, 1, worker, timeout_s=60)
        for i, (job_id, gap) in enumerate(plan):
            await asyncio.sleep(gap)
            await queue.add("preview", job_payload(i), {"jobId": job_id})
            admitted[job_id] = time.perf_counter()
    finally:
        await queue.close()
    return admitted, picked


async def _saq_pickups(url: str, name: str, plan: list[tuple[str, float]], record: Path,
                       worker: WorkerProcess) -> tuple[dict[str, float], dict[str, float]]:
    queue = _saq_queue(url, name)
    await queue.connect()
    admitted: dict[str, float] = {}
    picked: dict[str, float] = {}
    try:
        await _saq_enqueue(queue, 0, "ready", "ready")
        picked = _wait_lines(record, 1, worker, timeout_s=60)
        for i, (job_id, gap) in enumerate(plan):
            await asyncio.sleep(gap)
            await _saq_enqueue(queue, i, "b", job_id)
            admitted[job_id] = time.perf_counter()
    finally:
        await queue.disconnect()
    return admitted, picked


def _wait_lines(record: Path, count: int, worker: WorkerProcess, timeout_s: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout_s
    while True:
        lines = record.read_text(encoding="utf-8").splitlines() if record.exists() else []
        if len(lines) >= count:
            return {job_id: float(at) for job_id, at in (line.split() for line in lines)}
        if time.monotonic() >= deadline:
            if timeout_s:
                raise TimeoutError(f"the {worker.side} worker picked up {len(lines)} of {count} jobs")
            return {}
        worker.check()
        time.sleep(0.005)


def ours_admit_many(bench: QueueBench, n: int, warmup: int) -> float:
    """jobs/s of one `JobQueue.admit_many` call with n jobs."""
    queue = bench.queue("bulk")
    queue.admit_many([job_payload(i, "w") for i in range(warmup)])
    payloads = [job_payload(i) for i in range(n)]
    start = time.perf_counter()
    answers = queue.admit_many(payloads)
    elapsed = time.perf_counter() - start
    if sum(1 for a in answers if getattr(a, "created", False)) != n:
        raise RuntimeError("admit_many did not admit every job")
    return n / elapsed


async def _bullmq_add_bulk(url: str, n: int, warmup: int) -> float:
    from bullmq import Queue

    queue = Queue(f"bq-bulk-{time.monotonic_ns()}", {"connection": url})
    try:
        await queue.addBulk([{"name": "preview", "data": job_payload(i, "w"), "opts": {"jobId": f"w-{i}"}}
                             for i in range(warmup)])
        jobs = [{"name": "preview", "data": job_payload(i), "opts": {"jobId": f"b-{i}"}} for i in range(n)]
        start = time.perf_counter()
        await queue.addBulk(jobs)
        return n / (time.perf_counter() - start)
    finally:
        await queue.close()


def bullmq_add_bulk(url: str, n: int, warmup: int) -> float:
    """jobs/s of one bullmq `Queue.addBulk` call with n jobs."""
    return asyncio.run(_bullmq_add_bulk(url, n, warmup))


def _no_kick(job_id: str) -> None:
    return None


def ours_enqueue(bench: QueueBench, n: int, warmup: int) -> float:
    """jobs/s of `service.enqueue` as the enqueue handler calls it (validation, admission and
    its log line at the default INFO level), one caller, the seed's minimal payload; each
    payload made in the timed loop, as `ours_admit` and the other sides make theirs."""
    from shared import observability, service

    queue = bench.queue("enqueue")
    observability.configure(queue.settings)
    with harness.quiet_stdout():
        for i in range(warmup):
            service.enqueue(job_payload(i, "w"), settings=queue.settings, queue=queue, kick=_no_kick)
        start = time.perf_counter()
        for i in range(n):
            service.enqueue(job_payload(i), settings=queue.settings, queue=queue, kick=_no_kick)
        return n / (time.perf_counter() - start)
