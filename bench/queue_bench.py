"""Queue core benchmark: our Redis job queue against bullmq (Python) on the same private Redis.

    python -m bench.queue_bench               full run (about a minute on 2 cores)
    python -m bench.queue_bench --quick       tiny sizes: check that it runs
    python -m bench.queue_bench --diagnose    also: where the Worker's per-job time goes

How the comparisons are kept fair:
- both sides talk to the same private redis-server, one measurement at a time, the database
  flushed in between; each measurement warms up (scripts loaded, connections open) first;
- redis-server runs pinned to one CPU and the bench to the others (see `pinned`), for both;
- rounds alternate ours / bullmq and each side is credited with its best round, so a noisy
  moment on a shared machine does not land on one side only;
- the same concurrency on both sides, and the 1.5x target applies to each such pair: one
  sequential caller each, or 8 callers in flight each (8 threads for ours, each running the
  queue's scripts on its own connection as the service does; 8 asyncio tasks for bullmq, run
  both on its default single connection and on a pooled client, and credited with the faster);
- the worker comparison is the real `Worker` class (8 job loops, a no-op render and store)
  against a bullmq `Worker` (concurrency 8, a no-op async processor), both on N pre-filled
  jobs; the bare claim->complete loop is shown next to it for contrast, without a target;
- caller-chosen job ids on both sides (idempotent admission), the same small payload, and the
  same retention of completed jobs (newest 100, at most an hour old);
- `JobQueue.admit` validates nothing (the HTTP handler does), so enqueue measures the queue core.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import redis

from local.redis_server import RedisServer
from shared.contract import JobRequest
from shared.queue import JobQueue
from shared.settings import Settings
from shared.worker import Worker
from shared.worker import job as job_module
from shared.worker import lease as lease_module
from shared.worker import scratch as scratch_module

TARGET_RATIO = 1.5
TARGET_P99_MS = 2.0
POLL_INTERVAL_MS = 100.0
# Retention both sides share: the service defaults (PREVIEW_KEEP_COMPLETED_*).
KEEP_COMPLETED_COUNT = 100
KEEP_COMPLETED_SECONDS = 3600


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does; the smoke test passes tiny ones."""

    admit_jobs: int = 5000
    claim_jobs: int = 5000
    worker_jobs: int = 3000
    latency_samples: int = 300
    concurrency: int = 8
    warmup_jobs: int = 200
    rounds: int = 5
    # Pause between latency samples, so that every admission finds the worker idle.
    latency_gap_s: float = 0.004


QUICK = Sizes(admit_jobs=200, claim_jobs=200, worker_jobs=200, latency_samples=20, warmup_jobs=20, rounds=1)


@dataclass
class Row:
    """One line of the table; `ours` and `baseline` are jobs/s, or ms for latencies."""

    name: str
    ours: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    passed: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """How many times better ours is: more jobs/s, or fewer ms."""
        if self.baseline is None or self.ours <= 0:
            return None
        return self.ours / self.baseline if self.unit == "jobs/s" else self.baseline / self.ours


# -- shared pieces ------------------------------------------------------------------------


def job_payload(i: int, tag: str = "b") -> dict[str, Any]:
    """A realistic small dry-run job, valid against the payload schema."""
    return {
        "jobId": f"{tag}-{i}",
        "projectId": "p",
        "requestId": f"r-{tag}-{i}",
        "dryRun": True,
        "previewRequest": {"steps": [], "assets": [], "audio": {}},
    }


def make_settings(url: str, queue_name: str, data_dir: Path) -> Settings:
    return Settings.from_env({
        "REDIS_URL": url,
        "PREVIEW_QUEUE_NAME": queue_name,
        "PREVIEW_QUEUE_MAX": "1000000",  # the bench fills far beyond the production limit
        "DATA_DIR": str(data_dir),
        "PREVIEW_KEEP_COMPLETED_COUNT": str(KEEP_COMPLETED_COUNT),
        "PREVIEW_KEEP_COMPLETED_SECONDS": str(KEEP_COMPLETED_SECONDS),
        "PREVIEW_SHUTDOWN_GRACE_SECONDS": "5",
    })


def make_client(settings: Settings, *, blocking: bool = False) -> redis.Redis:
    """A client with the service's options (see shared.redis_client), owned by the bench so it
    can be closed without touching the service's process-wide client cache."""
    timeout = settings.redis_timeout_ms / 1000
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=timeout,
        socket_timeout=None if blocking else timeout,
        decode_responses=True,
    )


class Bench:
    """Fresh queues on one Redis; alternating rounds; closes every client it made."""

    def __init__(self, url: str, data_dir: Path) -> None:
        self.url = url
        self.data_dir = data_dir
        self._clients: list[redis.Redis] = []
        self._queues: list[JobQueue] = []
        self._count = 0

    def queue(self, label: str) -> JobQueue:
        self._count += 1
        settings = make_settings(self.url, f"bench-{label}-{self._count}", self.data_dir)
        client, blocking = make_client(settings), make_client(settings, blocking=True)
        self._clients += [client, blocking]
        self._queues.append(JobQueue(client, settings, blocking))
        return self._queues[-1]

    def flush(self) -> None:
        with redis.Redis.from_url(self.url) as client:
            client.flushdb()

    def redis_version(self) -> str:
        with redis.Redis.from_url(self.url, decode_responses=True) as client:
            return str(client.info("server").get("redis_version", "?"))

    def best(self, rounds: int, contenders: dict[str, Callable[[], float]]) -> dict[str, float]:
        """Run every contender once per round, in turn, on an empty database; the best of each."""
        results: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(rounds):
            for name, measure in contenders.items():
                self.flush()
                results[name].append(measure())
                self.close_clients()
        self.flush()
        return {name: max(values) for name, values in results.items()}

    def close_clients(self) -> None:
        for queue in self._queues:
            queue.close()
        self._queues.clear()
        for client in self._clients:
            client.close()
        self._clients.clear()


def run_threads(n: int, body: Callable[[int], Any],
                setup: Callable[[int], Any] | None = None) -> tuple[float, list[Any]]:
    """Run `body(i)` on n threads released together, after `setup(i)` (untimed) on each;
    seconds until the last one finished."""
    barrier = threading.Barrier(n + 1)
    results: list[Any] = [None] * n

    def target(i: int) -> None:
        if setup is not None:
            setup(i)
        barrier.wait()
        results[i] = body(i)

    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start, results


def slices(total: int, parts: int) -> list[range]:
    """Split range(total) into contiguous ranges: each caller loops, no per-job dispatch cost."""
    step, extra = divmod(total, parts)
    out, start = [], 0
    for i in range(parts):
        end = start + step + (1 if i < extra else 0)
        out.append(range(start, end))
        start = end
    return out


def prefill(queue: JobQueue, n: int, tag: str, threads: int = 8) -> None:
    """Admit n jobs (untimed set-up)."""
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda part: [queue.admit(job_payload(i, tag)) for i in part], slices(n, threads)))


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """The worker logs two JSON lines per job to stdout: keep the cost of formatting them
    (production pays it too) but not the terminal's."""
    with contextlib.redirect_stdout(io.StringIO()) as sink:
        yield
    sink.close()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, q in 0..100."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# -- 1. enqueue -----------------------------------------------------------------------------


def ours_admit(bench: Bench, n: int, warmup: int, threads: int = 1) -> float:
    """jobs/s of `JobQueue.admit`: in this thread when threads == 1, else on `threads` threads."""
    queue = bench.queue(f"admit-{threads}")
    if threads == 1:
        for i in range(warmup):  # loads the script, opens this thread's connection
            queue.admit(job_payload(i, "w"))
        start = time.perf_counter()
        for i in range(n):
            queue.admit(job_payload(i))
        return n / (time.perf_counter() - start)
    parts, warm = slices(n, threads), slices(warmup, threads)
    elapsed, _ = run_threads(threads, lambda t: [queue.admit(job_payload(i)) for i in parts[t]],
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

        await asyncio.gather(*(add_range(part, "w") for part in slices(warmup, tasks)))
        start = time.perf_counter()
        await asyncio.gather(*(add_range(part, "b") for part in slices(n, tasks)))
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


def ours_claim_complete(bench: Bench, n: int, warmup: int, threads: int) -> float:
    queue = bench.queue(f"claim-{threads}")
    prefill(queue, warmup, "w")
    run_threads(threads, lambda _t: _drain(queue))  # warm-up: scripts, connections, retention
    prefill(queue, n, "b")
    elapsed, done = run_threads(threads, lambda _t: _drain(queue))
    if sum(done) != n:
        raise RuntimeError(f"claimed {sum(done)} of {n} jobs")
    return n / elapsed


# -- 3. worker loop -------------------------------------------------------------------------


class NullStore:
    """Publishes nothing: with a no-op render this makes `Worker.process` a no-op processor."""

    def publish(self, project_id: str, job_id: str, src_dir: Path) -> dict[str, Any]:
        return {}


def noop_render(payload: dict[str, Any], out: Path, settings: Settings, progress: Any) -> None:
    return None


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


def ours_worker(bench: Bench, n: int, warmup: int, concurrency: int) -> float:
    queue = bench.queue("worker")
    with quiet_stdout():
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


def pickup_latency_ms(bench: Bench, samples: int, warmup: int, concurrency: int, gap_s: float) -> list[float]:
    """An idle `Worker.run_forever`: ms from `admit()` returning to the render being called."""
    queue = bench.queue("latency")
    started: dict[str, float] = {}
    arrived = threading.Event()

    def render(request: JobRequest, out: Path, settings: Settings, progress: Any) -> None:
        started[request.job_id] = time.perf_counter()
        arrived.set()

    worker = Worker(queue.settings, queue, NullStore(), render=render)
    thread = threading.Thread(target=worker.run_forever, args=(concurrency,), daemon=True)
    latencies: list[float] = []
    with quiet_stdout():
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


def latency_rows(bench: Bench, sizes: Sizes) -> list[Row]:
    """p50/p99 of the round with the lowest p99 (each round a fresh idle worker); every
    round's p99 goes in the note, so a noisy neighbour on the CPUs shows rather than hides."""
    rounds: list[list[float]] = []
    for _ in range(sizes.rounds):
        rounds.append(pickup_latency_ms(bench, sizes.latency_samples, max(5, sizes.latency_samples // 10),
                                        sizes.concurrency, sizes.latency_gap_s))
        bench.close_clients()
        bench.flush()
    values = min(rounds, key=lambda r: percentile(r, 99))
    p50, p99 = statistics.median(values), percentile(values, 99)
    # A loop polling every P ms finds a new job after a uniform 0..P wait, then claims it as we do.
    poll_p50, poll_p99 = POLL_INTERVAL_MS * 0.50 + p50, POLL_INTERVAL_MS * 0.99 + p50
    all_p99 = ", ".join(f"{percentile(r, 99):.2f}" for r in rounds)
    note = (f"{len(values)} samples {sizes.latency_gap_s * 1000:g} ms apart, max {max(values):.3f} ms; "
            f"p99 of each round: {all_p99} ms; baseline computed: a {POLL_INTERVAL_MS:g} ms poll loop waits "
            f"U(0, {POLL_INTERVAL_MS:g}) ms, then claims like ours")
    return [
        Row("pickup latency p50", p50, "ms", poll_p50, f"{POLL_INTERVAL_MS:g} ms poller", note=note),
        Row("pickup latency p99", p99, "ms", poll_p99, f"{POLL_INTERVAL_MS:g} ms poller",
            target=f"<= {TARGET_P99_MS:g} ms", passed=p99 <= TARGET_P99_MS),
    ]


# -- the run --------------------------------------------------------------------------------


def bullmq_version() -> str | None:
    try:
        import bullmq
    except ImportError:
        return None
    return str(getattr(bullmq, "__version__", "?"))


def ratio_row(name: str, ours: float, baseline: float | None, baseline_name: str, note: str = "") -> Row:
    row = Row(name, ours, "jobs/s", baseline, baseline_name, target=f">= {TARGET_RATIO:g}x", note=note)
    if row.ratio is not None:
        row.passed = row.ratio >= TARGET_RATIO
    return row


def run(url: str, data_dir: Path, sizes: Sizes = Sizes(), *, with_bullmq: bool = True,
        log: Callable[[str], None] = print) -> list[Row]:
    """Every measurement against the (private) Redis at `url`, flushed between measurements."""
    with_bullmq = with_bullmq and bullmq_version() is not None
    bench = Bench(url, data_dir)
    c, w, n_admit = sizes.concurrency, sizes.warmup_jobs, sizes.admit_jobs
    rows: list[Row] = []

    clock = time.perf_counter()

    def log_step(text: str) -> None:
        log(f"  [{time.perf_counter() - clock:5.1f} s] {text} ...")

    def bq(contenders: dict[str, Callable[[], float]]) -> dict[str, Callable[[], float]]:
        return contenders if with_bullmq else {}

    try:
        log_step(f"enqueue, sequential, {sizes.rounds} rounds")
        r = bench.best(sizes.rounds, {
            "ours": lambda: ours_admit(bench, n_admit, w),
            **bq({"bullmq": lambda: bullmq_add(url, n_admit, w)}),
        })
        rows.append(ratio_row("enqueue, 1 sequential caller", r["ours"], r.get("bullmq"), "Queue.add"))

        log_step(f"enqueue, {c} concurrent callers")
        r = bench.best(sizes.rounds, {
            "ours": lambda: ours_admit(bench, n_admit, w, c),
            **bq({"one": lambda: bullmq_add(url, n_admit, w, c, pooled=False),
                  "pool": lambda: bullmq_add(url, n_admit, w, c, pooled=True)}),
        })
        note = f"bullmq: one connection {r['one']:,.0f}/s, pooled {r['pool']:,.0f}/s" if with_bullmq else ""
        best_bq = max(r["one"], r["pool"]) if with_bullmq else None
        rows.append(ratio_row(f"enqueue, {c} concurrent callers", r["ours"], best_bq, f"Queue.add, {c} tasks",
                              note=note))

        log_step("claim+complete")
        r = bench.best(sizes.rounds, {
            "1": lambda: ours_claim_complete(bench, sizes.claim_jobs, w, 1),
            "c": lambda: ours_claim_complete(bench, sizes.claim_jobs, w, c),
        })
        rows.append(Row("claim+complete, sequential", r["1"], "jobs/s"))
        loop_shape = r["c"]

        log_step(f"worker loop, no-op job, concurrency {c}")
        r = bench.best(sizes.rounds, {
            "ours": lambda: ours_worker(bench, sizes.worker_jobs, w, c),
            **bq({"bullmq": lambda: bullmq_worker(url, sizes.worker_jobs, w, c)}),
        })
        rows.append(ratio_row(f"Worker class, concurrency {c}", r["ours"], r.get("bullmq"), f"Worker, c={c}",
                              note="the real Worker: config re-check, lease renewal, scratch dir, a log line per job"))
        # Contrast only: the target is for the Worker class, so no PASS/MISS here.
        rows.append(Row(f"claim+complete, {c} threads", loop_shape, "jobs/s", r.get("bullmq"), f"Worker, c={c}",
                        note="the Worker._loop shape without the Worker's per-job work (no target: contrast)"))

        log_step("pickup latency")
        rows.extend(latency_rows(bench, sizes))
    finally:
        bench.close_clients()
        bench.flush()
    return rows


# -- diagnosis: where the Worker's per-job time goes ----------------------------------------


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def _patches(name: str, scratch: Path) -> list[Any]:
    """In-process stand-ins for one part of `Worker.process`, to measure what it costs."""
    no_logs = [mock.patch.object(job_module.logger, "info", _noop)]
    idle_lease = SimpleNamespace(progress=_noop, check=_noop, stop=_noop)
    no_lease = [mock.patch.object(lease_module.LeaseRenewer, "add", lambda self, job, abort: idle_lease)]
    no_tmp = [
        mock.patch.object(scratch_module, "tempfile", SimpleNamespace(mkdtemp=lambda **kw: str(scratch))),
        mock.patch.object(scratch_module, "shutil", SimpleNamespace(rmtree=_noop)),
    ]
    no_validation = [mock.patch.object(job_module.contract, "config_errors", lambda doc, settings: [])]
    options: dict[str, list[Any]] = {
        "as is": [],
        "no log lines": no_logs,
        "no lease renewal": no_lease,
        "no scratch dir": no_tmp,
        "no re-validation": no_validation,
        "none of the four": no_logs + no_lease + no_tmp + no_validation,
    }
    return options[name]


DIAGNOSIS_VARIANTS = ("as is", "no log lines", "no lease renewal", "no scratch dir", "no re-validation",
                      "none of the four")


def process_cost_us(bench: Bench, n: int) -> float:
    """µs per `Worker.process` call on already-claimed jobs, one thread, Redis included."""
    queue = bench.queue("process")
    worker = Worker(queue.settings, queue, NullStore(), render=noop_render)
    prefill(queue, n + 50, "b")
    jobs = [job for job in (queue.claim().job for _ in range(n + 50)) if job is not None]
    with quiet_stdout():
        for job in jobs[:50]:
            worker.process(job)
        start = time.perf_counter()
        for job in jobs[50:]:
            worker.process(job)
    return (time.perf_counter() - start) / len(jobs[50:]) * 1e6


def diagnose(url: str, data_dir: Path, sizes: Sizes = Sizes(), log: Callable[[str], None] = print) -> str:
    """A table: each part of the Worker's per-job work replaced by a no-op, and what that buys."""
    bench = Bench(url, data_dir)
    scratch = data_dir / "shared-scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    c = sizes.concurrency
    small = replace(sizes, latency_samples=max(20, sizes.latency_samples // 2), rounds=1)
    lines = [("Worker variant", "process() us/job, 1 thread", f"Worker c={c} jobs/s", "pickup p50 ms",
              "pickup p99 ms")]
    try:
        for variant in DIAGNOSIS_VARIANTS:
            log(f"  diagnose: {variant} ...")
            with contextlib.ExitStack() as stack:
                for patch in _patches(variant, scratch):
                    stack.enter_context(patch)
                r = bench.best(sizes.rounds, {
                    "cost": lambda: -process_cost_us(bench, min(sizes.worker_jobs, 2000)),  # best = lowest
                    "rate": lambda: ours_worker(bench, sizes.worker_jobs, sizes.warmup_jobs, c),
                })
                p50, p99 = (row.ours for row in latency_rows(bench, small))
            lines.append((variant, f"{-r['cost']:.0f}", f"{r['rate']:,.0f}", f"{p50:.3f}", f"{p99:.3f}"))
        log("  diagnose: thread counts ...")
        sweep = [("callers", "admit jobs/s", "claim+complete jobs/s")]
        for threads in sorted({1, 2, 4, c}):
            r = bench.best(sizes.rounds, {
                "admit": partial(ours_admit, bench, sizes.admit_jobs, sizes.warmup_jobs, threads),
                "claim": partial(ours_claim_complete, bench, sizes.claim_jobs, sizes.warmup_jobs, threads),
            })
            sweep.append((str(threads), f"{r['admit']:,.0f}", f"{r['claim']:,.0f}"))
    finally:
        bench.close_clients()
        bench.flush()
    return _grid(lines) + "\n\n" + _grid(sweep)


# -- output ---------------------------------------------------------------------------------


def _grid(lines: Sequence[Sequence[str]]) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in lines]
    out.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(out)


def format_table(rows: list[Row]) -> str:
    lines = [("measurement", "ours", "baseline", "ratio", "target", "result")]
    for row in rows:
        ours = f"{row.ours:,.0f}/s" if row.unit == "jobs/s" else f"{row.ours:.3f} ms"
        if row.baseline is None:
            base = "-"
        elif row.unit == "jobs/s":
            base = f"{row.baseline:,.0f}/s  bullmq {row.baseline_name}"
        else:
            base = f"{row.baseline:.1f} ms  {row.baseline_name}"
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        result = "-" if row.passed is None else ("PASS" if row.passed else "MISS")
        lines.append((row.name, ours, base, ratio, row.target or "-", result))
    notes = [f"  {row.name}: {row.note}" for row in rows if row.note]
    return _grid(lines) + ("\nnotes:\n" + "\n".join(notes) if notes else "")


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _hiredis() -> bool:
    from redis.utils import HIREDIS_AVAILABLE

    return bool(HIREDIS_AVAILABLE)


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


@contextlib.contextmanager
def pinned(server_pid: int, enabled: bool = True) -> Iterator[str]:
    """redis-server on one CPU, this process on the others. Left to the scheduler, the two
    sometimes share a CPU and sometimes not, and a round trip's cost (so every figure here)
    jumps between those two modes from one minute to the next; apart is the stable one, and
    the one production has (Redis on its own machine). Yields a description."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_setaffinity") else []
    if not enabled or len(cpus) < 2:
        yield "not pinned"
        return
    os.sched_setaffinity(server_pid, {cpus[-1]})
    os.sched_setaffinity(0, set(cpus[:-1]))  # threads started from here on inherit it
    try:
        yield f"redis-server pinned to CPU {cpus[-1]}, bench to CPU {','.join(map(str, cpus[:-1]))}"
    finally:
        os.sched_setaffinity(0, set(cpus))


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 when every target is met, 1 when one is missed."""
    parser = argparse.ArgumentParser(prog="python -m bench.queue_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round: check that it runs")
    parser.add_argument("--no-bullmq", action="store_true", help="skip the bullmq baselines")
    parser.add_argument("--no-pin", action="store_true", help="leave CPU placement to the scheduler")
    parser.add_argument("--diagnose", action="store_true", help="also break down the Worker's per-job cost")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else Sizes()
    started, cpus = time.perf_counter(), _cpus()
    with (tempfile.TemporaryDirectory(prefix="queue-bench-") as tmp,
          RedisServer(Path(tmp) / "redis") as server,
          pinned(server.process.pid if server.process else 0, not args.no_pin) as placement):
        bench = Bench(server.url, Path(tmp) / "data")
        bq = bullmq_version()
        print(f"queue bench: redis-server {bench.redis_version()} (private, 127.0.0.1:{server.port}), "
              f"Python {platform.python_version()}, redis-py {redis.__version__} "
              f"({'hiredis' if _hiredis() else 'pure-Python'} parser), "
              f"bullmq {bq or 'not installed: no baselines'}; {cpus} CPUs, {placement}; "
              f"best of {sizes.rounds} alternating rounds", flush=True)
        print(f"load average before start: {_load():.2f} (other processes on these CPUs add noise)", flush=True)
        rows = run(server.url, Path(tmp) / "data", sizes, with_bullmq=not args.no_bullmq)
        report = diagnose(server.url, Path(tmp) / "data", sizes) if args.diagnose else ""
    print(f"\nload average after: {_load():.2f}")
    print(format_table(rows))
    if report:
        print("\nWorker per-job cost, each part replaced by a no-op in turn (in-process patches):")
        print(report)
    print(f"\nqueue bench took {time.perf_counter() - started:.1f} s")
    return 0 if all(row.passed is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
