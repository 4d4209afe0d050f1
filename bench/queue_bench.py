"""Queue core benchmark: our Redis job queue against bullmq (Python) on the same private Redis.

    python -m bench.queue_bench               full run (about a minute on 2 cores)
    python -m bench.queue_bench --quick       tiny sizes: check that it runs
    python -m bench.queue_bench --diagnose    also: where the Worker's per-job time goes

How the comparisons are kept fair:
- both sides talk to the same private redis-server, one measurement at a time, the database
  flushed in between; each measurement warms up (scripts loaded, connections open) first;
- redis-server runs pinned to one CPU and the bench to the others (see `harness.pinned`), for both;
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
  same retention of completed jobs (the service's completed cap, at most an hour old);
- `JobQueue.admit` validates nothing (the HTTP handler does), so enqueue measures the queue core.

The measurements are in bench/queue_measures.py, what they stand on in bench/queue_fixtures.py,
the --diagnose breakdown in bench/queue_diagnose.py; this module runs them and reports.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from bench import harness
from bench.queue_diagnose import diagnose
from bench.queue_fixtures import FULL, QUICK, QueueBench, Sizes, bullmq_version
from bench.queue_measures import (
    PickupLatency,
    bullmq_add,
    bullmq_worker,
    ours_admit,
    ours_claim_complete,
    ours_worker,
    pickup_latency,
)

RATIO_TARGET = harness.Target(">=", 1.5)
P99_TARGET = harness.Target("<=", 2.0, "ms")
POLL_INTERVAL_MS = 100.0

__all__ = ["QUICK", "Row", "Sizes", "bullmq_version", "format_table", "main", "run"]


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


def ratio_row(name: str, ours: float, baseline: float | None, baseline_name: str, note: str = "") -> Row:
    row = Row(name, ours, "jobs/s", baseline, baseline_name, target=str(RATIO_TARGET), note=note)
    if row.ratio is not None:
        row.passed = RATIO_TARGET.met(row.ratio)
    return row


def latency_rows(latency: PickupLatency, sizes: Sizes) -> list[Row]:
    """p50/p99 of the round with the lowest p99 (each round a fresh idle worker); every
    round's p99 goes in the note, so a noisy neighbour on the CPUs shows rather than hides."""
    values, p50, p99 = latency.best_round, latency.p50, latency.p99
    # A loop polling every P ms finds a new job after a uniform 0..P wait, then claims it as we do.
    poll_p50, poll_p99 = POLL_INTERVAL_MS * 0.50 + p50, POLL_INTERVAL_MS * 0.99 + p50
    all_p99 = ", ".join(f"{harness.percentile(r, 99):.2f}" for r in latency.rounds)
    note = (f"{len(values)} samples {sizes.latency_gap_s * 1000:g} ms apart, max {max(values):.3f} ms; "
            f"p99 of each round: {all_p99} ms; baseline computed: a {POLL_INTERVAL_MS:g} ms poll loop waits "
            f"U(0, {POLL_INTERVAL_MS:g}) ms, then claims like ours")
    return [
        Row("pickup latency p50", p50, "ms", poll_p50, f"{POLL_INTERVAL_MS:g} ms poller", note=note),
        Row("pickup latency p99", p99, "ms", poll_p99, f"{POLL_INTERVAL_MS:g} ms poller",
            target=str(P99_TARGET), passed=P99_TARGET.met(p99)),
    ]


def run(url: str, data_dir: Path, sizes: Sizes = FULL, *, with_bullmq: bool = True,
        log: Callable[[str], None] = harness.progress) -> list[Row]:
    """Every measurement against the (private) Redis at `url`, flushed between measurements."""
    with_bullmq = with_bullmq and bullmq_version() is not None
    bench = QueueBench(url, data_dir)
    c, w, n_admit = sizes.concurrency, sizes.warmup_jobs, sizes.admit_jobs
    rows: list[Row] = []
    log_step = harness.StepLog(log)

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
        rows.extend(latency_rows(pickup_latency(bench, sizes), sizes))
    finally:
        bench.close()
    return rows


def format_table(rows: list[Row]) -> str:
    lines: list[tuple[str, ...]] = []
    for row in rows:
        ours = f"{row.ours:,.0f}/s" if row.unit == "jobs/s" else f"{row.ours:.3f} ms"
        if row.baseline is None:
            base = "-"
        elif row.unit == "jobs/s":
            base = f"{row.baseline:,.0f}/s  bullmq {row.baseline_name}"
        else:
            base = f"{row.baseline:.1f} ms  {row.baseline_name}"
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        lines.append((row.name, ours, base, ratio, row.target or "-", harness.verdict(row.passed)))
    table = harness.grid(("measurement", "ours", "baseline", "ratio", "target", "result"), lines)
    notes = [f"  {row.name}: {row.note}" for row in rows if row.note]
    return table + ("\nnotes:\n" + "\n".join(notes) if notes else "")


def _parser() -> str:
    from redis.utils import HIREDIS_AVAILABLE

    return "hiredis" if HIREDIS_AVAILABLE else "pure-Python"


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 when every target is met, 1 when one is missed."""
    parser = harness.argument_parser("bench.queue_bench", __doc__,
                                     quick_help="tiny sizes, one round: check that it runs")
    parser.add_argument("--no-bullmq", action="store_true", help="skip the bullmq baselines")
    parser.add_argument("--no-pin", action="store_true", help="leave CPU placement to the scheduler")
    parser.add_argument("--diagnose", action="store_true", help="also break down the Worker's per-job cost")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    with harness.reports_duration("queue bench"):
        cpus = harness.cpu_count()
        with (harness.private_redis("queue-bench-") as lab,
              harness.pinned(lab.pid, not args.no_pin) as placement):
            bq = bullmq_version()
            print(f"queue bench: redis-server {harness.redis_version(lab.url)} (private, 127.0.0.1:{lab.port}), "
                  f"Python {platform.python_version()}, redis-py {redis.__version__} ({_parser()} parser), "
                  f"bullmq {bq or 'not installed: no baselines'}; {cpus} CPUs, {placement}; "
                  f"best of {sizes.rounds} alternating rounds", flush=True)
            print(f"load average before start: {harness.load_average():.2f} "
                  "(other processes on these CPUs add noise)", flush=True)
            rows = run(lab.url, lab.data_dir, sizes, with_bullmq=not args.no_bullmq)
            report = diagnose(lab.url, lab.data_dir, sizes) if args.diagnose else ""
        print(f"\nload average after: {harness.load_average():.2f}")
        print(format_table(rows))
        if report:
            print("\nWorker per-job cost, each part replaced by a no-op in turn (in-process patches):")
            print(report)
    return harness.exit_status(row.passed for row in rows)


if __name__ == "__main__":
    sys.exit(main())
