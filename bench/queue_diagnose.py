"""`python -m bench.queue_bench --diagnose`: where the Worker's per-job time goes. Each part of
`Worker.process` is replaced by an in-process no-op in turn, and the worker figures measured
again; then admit and claim+complete over a range of thread counts."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

from bench import harness
from bench.queue_fixtures import FULL, NullStore, QueueBench, Sizes, noop_render, prefill
from bench.queue_measures import ours_admit, ours_claim_complete, ours_worker, pickup_latency
from shared.worker import Worker
from shared.worker import job as job_module
from shared.worker import lease as lease_module
from shared.worker import scratch as scratch_module

DIAGNOSIS_VARIANTS = ("as is", "no log lines", "no lease renewal", "no scratch dir", "no re-validation",
                      "none of the four")


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def _patches(name: str, scratch: Path) -> list[Any]:
    """In-process stand-ins for one part of `Worker.process`, to measure what it costs."""
    no_logs = [mock.patch.object(job_module, "info_line", _noop)]
    idle_lease = SimpleNamespace(progress=_noop, check=_noop, stop=_noop, rendered=_noop, overrun=False)
    no_lease = [mock.patch.object(lease_module.LeaseRenewer, "add", lambda self, job, abort, *limit: idle_lease)]
    no_tmp = [
        mock.patch.object(scratch_module, "tempfile", SimpleNamespace(mkdtemp=lambda **kw: str(scratch))),
        mock.patch.object(scratch_module, "shutil", SimpleNamespace(rmtree=_noop)),
    ]
    no_validation: list[Any] = [mock.patch.object(job_module.contract, "config_errors", lambda doc, settings: [])]
    options: dict[str, list[Any]] = {
        "as is": [],
        "no log lines": no_logs,
        "no lease renewal": no_lease,
        "no scratch dir": no_tmp,
        "no re-validation": no_validation,
        "none of the four": no_logs + no_lease + no_tmp + no_validation,
    }
    return options[name]


def process_cost_us(bench: QueueBench, n: int) -> float:
    """µs per `Worker.process` call on already-claimed jobs, one thread, Redis included."""
    queue = bench.queue("process")
    worker = Worker(queue.settings, queue, NullStore(), render=noop_render)
    prefill(queue, n + 50, "b")
    jobs = [job for job in (queue.claim().job for _ in range(n + 50)) if job is not None]
    with harness.quiet_stdout():
        for job in jobs[:50]:
            worker.process(job)
        start = time.perf_counter()
        for job in jobs[50:]:
            worker.process(job)
    return (time.perf_counter() - start) / len(jobs[50:]) * 1e6


def diagnose(url: str, data_dir: Path, sizes: Sizes = FULL, log: Callable[[str], None] = harness.progress) -> str:
    """Two tables: each part of the Worker's per-job work replaced by a no-op, and what that
    buys; then throughput by number of callers."""
    bench = QueueBench(url, data_dir)
    scratch = data_dir / "shared-scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    c = sizes.concurrency
    small = replace(sizes, latency_samples=max(20, sizes.latency_samples // 2), rounds=1)
    variants: list[tuple[str, ...]] = []
    sweep: list[tuple[str, ...]] = []
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
                latency = pickup_latency(bench, small)
            variants.append((variant, f"{-r['cost']:.0f}", f"{r['rate']:,.0f}", f"{latency.p50:.3f}",
                             f"{latency.p99:.3f}"))
        log("  diagnose: thread counts ...")
        for threads in sorted({1, 2, 4, c}):
            r = bench.best(sizes.rounds, {
                "admit": partial(ours_admit, bench, sizes.admit_jobs, sizes.warmup_jobs, threads),
                "claim": partial(ours_claim_complete, bench, sizes.claim_jobs, sizes.warmup_jobs, threads),
            })
            sweep.append((str(threads), f"{r['admit']:,.0f}", f"{r['claim']:,.0f}"))
    finally:
        bench.close()
    variant_header = ("Worker variant", "process() us/job, 1 thread", f"Worker c={c} jobs/s", "pickup p50 ms",
                      "pickup p99 ms")
    return (harness.grid(variant_header, variants) + "\n\n"
            + harness.grid(("callers", "admit jobs/s", "claim+complete jobs/s"), sweep))
