"""Queue benchmark: this project's queue and worker against bullmq (Python) in one run, on the
same private Redis, measured as users run them; SAQ in the same rounds, for information.

    python -m bench.queue_bench               full run (a few minutes on 2 cores)
    python -m bench.queue_bench --quick       tiny sizes: check that it runs
    python -m bench.queue_bench --diagnose    also: where the Worker's per-job time goes (in-process)

How the figures are taken:
- nothing is pinned: redis-server, the bench and the worker processes share the CPUs as the
  scheduler places them, as on a machine that runs them side by side;
- each measurement runs in rounds, ours, bullmq's and SAQ's alternating within a round on a
  flushed database; a figure is the median of its rounds, printed with the rounds' min-max;
- the targets hold ours against bullmq; SAQ's column and the ours/SAQ ratio have no target.
  SAQ is left out of bulk enqueue (it has no batch API: `Queue.map` enqueues one job at a time
  and waits for the results), of the INFO-logging and service rows (ours only);
- workers are processes of their own (`python -m bench.queue_worker`): ours is built as
  `python -m functions.render_worker` builds it, with the service's default logging (INFO, one
  JSON line per job to stdout); bullmq's is its `Worker` with an async no-op processor, SAQ's
  its `Worker` with an async no-op function (its defaults otherwise). All get the same
  pre-filled no-op jobs, the same concurrency and the same completed cap (SAQ: the same age,
  it has no count cap), and are timed in steady state (from a tenth of the jobs done to nine
  tenths);
- pickup latency: an idle worker process, one job admitted every 2 ms (then every 10 ms);
  the time from the admission call returning to the job's processor starting, on the
  machine's monotonic clock. The figure is the median over rounds of each round's p99;
- bulk admission: one `JobQueue.admit_many` call against one bullmq `Queue.addBulk`;
- admission through the service: `service.enqueue` (schema and rule validation, admission, its
  log line) against the bare `JobQueue.admit`, same payload (the seed's minimal one);
- admission through the service compares this project with itself, a ratio of two noisy
  figures: it gets more rounds of its own (9), the two sides in turn and in the reverse order
  every other round, and the figure is the median of the rounds' ratios;
- logging: one worker process timed in alternating phases at LOG_LEVEL=INFO and at WARNING
  (SIGUSR1 flips the level, which every line reads, as LOG_LEVEL sets it at start-up), so both
  sides share the process, its heap and its placement on the CPUs; each INFO phase against the
  WARNING phases either side of it, over a few worker processes; the figure is the median;
- multi-process worker: PREVIEW_WORKER_PROCESSES=2 with the concurrency halved (the same job
  loops in all), in the same rounds as the single process and bullmq;
- BullMQ on Node: its `Worker` (bench/node/worker.mjs, the version bench/node's lock pins,
  installed there with `npm ci` on first use) in the same worker rounds, on the jobs bullmq's
  `addBulk` makes; for the gap to it only. Without node and npm (or with --no-node) the gap is
  taken from the issue's measurement on another machine, and says so.

The measurements are in bench/queue_measures.py, what they stand on in bench/queue_fixtures.py,
the --diagnose breakdown in bench/queue_diagnose.py; this module runs them and reports.
"""

from __future__ import annotations

import platform
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from bench import harness
from bench.queue_diagnose import diagnose
from bench.queue_fixtures import FULL, QUICK, QueueBench, Sizes, bullmq_version, node_bullmq, saq_version
from bench.queue_measures import (
    bullmq_add,
    bullmq_add_bulk,
    logging_cost,
    ours_admit,
    ours_admit_many,
    ours_enqueue,
    pickup_round,
    saq_add,
    worker_rate,
)

RATIO_TARGET = harness.Target(">=", 1.5)
WORKER_TARGET = harness.Target(">=", 2.5)
BULK_TARGET = harness.Target(">=", 1.0)
P99_TARGET = harness.Target("<=", 2.0, "ms")
SERVICE_TARGET = harness.Target(">=", 0.8)
LOG_COST_TARGET = harness.Target("<=", 10.0, "%")
# The measurement of BullMQ on Node (worker, no-op job, concurrency 8), on another
# machine: the gap's denominator only when Node cannot be run here.
NODE_BULLMQ_WORKER = 13_616.0
# The multi-process row: PREVIEW_WORKER_PROCESSES, the concurrency shared out among them.
WORKER_PROCESSES = 2

__all__ = ["QUICK", "Row", "Sizes", "bullmq_version", "format_table", "main", "run", "saq_version"]


@dataclass
class Row:
    """One line of the table: medians of the rounds (jobs/s, ms or %), with every round kept."""

    name: str
    ours: list[float]
    unit: str
    baseline: list[float] | None = None
    baseline_name: str = ""
    target: harness.Target | None = None
    note: str = ""
    # Held to the target instead of ours/baseline: a figure of its own (a p99, a cost).
    own_figure: bool = False
    # SAQ's figures in the same rounds, for information (no target).
    saq: list[float] | None = None

    @property
    def ratio(self) -> float | None:
        """How many times better ours is than bullmq: more jobs/s, or fewer ms."""
        return self._times_better(self.baseline)

    @property
    def saq_ratio(self) -> float | None:
        """How many times better ours is than SAQ."""
        return self._times_better(self.saq)

    def _times_better(self, other: list[float] | None) -> float | None:
        if not other or self.unit == "%":
            return None
        ours, base = statistics.median(self.ours), statistics.median(other)
        if ours <= 0 or base <= 0:
            return None
        return ours / base if self.unit in ("jobs/s", "x") else base / ours

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        figure = statistics.median(self.ours) if self.own_figure or self.unit == "%" else self.ratio
        return None if figure is None else self.target.met(figure)


def _rate(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f}/s ({min(values):,.0f}-{max(values):,.0f})"


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ms ({min(values):.2f}-{max(values):.2f})"


def _cell(values: list[float], unit: str) -> str:
    if unit == "jobs/s":
        return _rate(values)
    if unit == "ms":
        return _ms(values)
    if unit == "%":
        return f"{statistics.median(values):.1f} % ({min(values):.1f}-{max(values):.1f})"
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"


def run(url: str, data_dir: Path, sizes: Sizes = FULL, *, with_bullmq: bool = True, with_saq: bool = True,
        with_node: bool = False, without_node: str = "", log: Callable[[str], None] = harness.progress) -> list[Row]:
    """Every measurement against the (private) Redis at `url`, flushed between measurements.
    `with_node`: BullMQ on Node, installed (`node_bullmq`), in the worker rounds; otherwise the
    gap to it is taken from the issue's figure, and `without_node` says why."""
    with_bullmq = with_bullmq and bullmq_version() is not None
    with_saq = with_saq and saq_version() is not None
    bench = QueueBench(url, data_dir)
    c, w, rounds = sizes.concurrency, sizes.warmup_jobs, sizes.rounds
    rows: list[Row] = []
    step = harness.StepLog(log)

    def bq(contenders: dict[str, Callable[[], float]]) -> dict[str, Callable[[], float]]:
        return contenders if with_bullmq else {}

    def sq(contenders: dict[str, Callable[[], float]]) -> dict[str, Callable[[], float]]:
        return contenders if with_saq else {}

    try:
        step(f"enqueue, one caller, {rounds} rounds")
        r = bench.rounds(rounds, {
            "ours": lambda: ours_admit(bench, sizes.admit_jobs, w),
            **bq({"bullmq": lambda: bullmq_add(url, sizes.admit_jobs, w)}),
            **sq({"saq": lambda: saq_add(url, sizes.admit_jobs, w)}),
        })
        rows.append(Row("enqueue one at a time", r["ours"], "jobs/s", r.get("bullmq"), "Queue.add", RATIO_TARGET,
                        saq=r.get("saq")))

        step(f"enqueue, {c} concurrent callers")
        r = bench.rounds(rounds, {
            "ours": lambda: ours_admit(bench, sizes.admit_jobs, w, c),
            **bq({"bullmq": lambda: max(bullmq_add(url, sizes.admit_jobs, w, c, pooled=False),
                                        bullmq_add(url, sizes.admit_jobs, w, c, pooled=True))}),
            **sq({"saq": lambda: saq_add(url, sizes.admit_jobs, w, c)}),
        })
        rows.append(Row(f"enqueue, {c} callers", r["ours"], "jobs/s", r.get("bullmq"), f"Queue.add, {c} tasks",
                        RATIO_TARGET, saq=r.get("saq"),
                        note=f"bullmq: the faster of one connection and a pooled client; SAQ: Queue.enqueue on "
                             f"{c} tasks (its client is a pool)"))

        step("bulk enqueue")
        r = bench.rounds(rounds, {
            "ours": lambda: ours_admit_many(bench, sizes.bulk_jobs, w),
            **bq({"bullmq": lambda: bullmq_add_bulk(url, sizes.bulk_jobs, w)}),
        })
        rows.append(Row(f"bulk enqueue, {sizes.bulk_jobs:,} in one call", r["ours"], "jobs/s", r.get("bullmq"),
                        "Queue.addBulk", BULK_TARGET,
                        note="ours: JobQueue.admit_many, each job answered as alone"
                             + ("; SAQ left out: no batch API (Queue.map enqueues one job at a time and waits for "
                                "the results)" if with_saq else "")))

        step(f"admission through the service against the bare queue, {sizes.ratio_rounds} rounds")
        r = bench.rounds(sizes.ratio_rounds, {
            "service": lambda: ours_enqueue(bench, sizes.admit_jobs, w),
            "bare": lambda: ours_admit(bench, sizes.admit_jobs, w),
        }, swap=True)
        shares = [s / b for s, b in zip(r["service"], r["bare"], strict=True)]
        rows.append(Row("service.enqueue / bare JobQueue.admit", shares, "x", target=SERVICE_TARGET, own_figure=True,
                        note=f"service.enqueue {_rate(r['service'])}, JobQueue.admit {_rate(r['bare'])}: validation, "
                             "admission and the INFO line, the seed's minimal payload"))

        per_process = max(1, c // WORKER_PROCESSES)
        step(f"worker process, no-op job, concurrency {c}; {WORKER_PROCESSES} processes x {per_process}")
        r = bench.rounds(rounds, {
            "ours": lambda: worker_rate(bench, "ours", sizes.worker_jobs, c),
            **bq({"bullmq": lambda: worker_rate(bench, "bullmq", sizes.worker_jobs, c)}),
            **sq({"saq": lambda: worker_rate(bench, "saq", sizes.worker_jobs, c)}),
            **({"node": lambda: worker_rate(bench, "node", sizes.worker_jobs, c)} if with_node else {}),
            "ours-processes": lambda: worker_rate(bench, "ours", sizes.worker_jobs, per_process,
                                                  processes=WORKER_PROCESSES),
        })
        rows.append(Row(f"worker, no-op job, concurrency {c}", r["ours"], "jobs/s", r.get("bullmq"), f"Worker, c={c}",
                        WORKER_TARGET, saq=r.get("saq"),
                        note="ours at the default LOG_LEVEL=INFO (a JSON line per job to stdout); SAQ: its Worker "
                             "with its defaults (10 s job timeout; 6 round trips a job: BLMOVE, GET, SET and PUBLISH "
                             "to mark it active, the finishing MULTI and its PUBLISH)"))
        rows.append(Row(f"worker, {WORKER_PROCESSES} processes x concurrency {per_process}", r["ours-processes"],
                        "jobs/s", r.get("bullmq"), f"Worker, c={c}", WORKER_TARGET, saq=r.get("saq"),
                        note=f"PREVIEW_WORKER_PROCESSES={WORKER_PROCESSES}, PREVIEW_WORKER_CONCURRENCY={per_process}: "
                             f"the same {c} job loops in all, against the same bullmq and SAQ rounds"))
        if with_node:
            node = r["node"]
            rows.append(Row("worker: gap to Node BullMQ", [o / b for o, b in zip(r["ours"], node, strict=True)], "x",
                            note=f"ours / BullMQ's Worker on Node, c={c}, no-op async processor, in the same rounds: "
                                 f"{_rate(node)}"))
            rows.append(Row(f"worker, {WORKER_PROCESSES} processes: gap to Node BullMQ",
                            [o / b for o, b in zip(r["ours-processes"], node, strict=True)], "x",
                            note=f"ours with {WORKER_PROCESSES} processes / BullMQ on Node, in the same rounds"))
        else:
            gap = statistics.median(r["ours"]) / NODE_BULLMQ_WORKER
            rows.append(Row("worker: gap to Node BullMQ", [gap], "x",
                            note=f"ours / {NODE_BULLMQ_WORKER:,.0f} jobs/s, BullMQ on Node as the issue measured it on "
                                 f"another machine (not run here: {without_node or 'left out'})"))
            gap = statistics.median(r["ours-processes"]) / NODE_BULLMQ_WORKER
            rows.append(Row(f"worker, {WORKER_PROCESSES} processes: gap to Node BullMQ", [gap], "x",
                            note=f"ours with {WORKER_PROCESSES} processes / {NODE_BULLMQ_WORKER:,.0f} jobs/s"))
        step(f"worker at INFO and at WARNING in alternating phases, {sizes.log_rounds} worker processes")
        costs = []
        for _ in range(sizes.log_rounds):
            costs += logging_cost(bench, sizes.log_jobs, c, sizes.log_phase_s)
            bench.close_clients()
            bench.flush()
        rows.append(Row("worker: cost of INFO logging", costs, "%", target=LOG_COST_TARGET,
                        note=f"{sizes.log_rounds} worker processes x {sizes.log_jobs:,} jobs, the level flipped every "
                             f"{sizes.log_phase_s:g} s (SIGUSR1); {len(costs)} INFO phases, each 1 - its jobs/s over "
                             "the mean of the WARNING phases either side"))

        step(f"pickup latency, {sizes.latency_rounds} rounds")
        gaps = sizes.latency_gaps_s
        sides = ["ours", *(["bullmq"] if with_bullmq else []), *(["saq"] if with_saq else [])]
        pickups: dict[str, list[dict[float, list[float]]]] = {side: [] for side in sides}
        for _ in range(sizes.latency_rounds):
            for side in sides:
                pickups[side].append(pickup_round(bench, side, sizes.latency_samples,
                                                  max(5, sizes.latency_samples // 10), gaps, c))
                bench.close_clients()
                bench.flush()
        for gap in gaps:
            spacing = f"{gap * 1000:g} ms spacing"

            def per_round(side: str, q: float, gap: float = gap) -> list[float]:
                return [harness.percentile(one[gap], q) for one in pickups[side]]

            base50 = per_round("bullmq", 50) if with_bullmq else None
            base99 = per_round("bullmq", 99) if with_bullmq else None
            saq50 = per_round("saq", 50) if with_saq else None
            saq99 = per_round("saq", 99) if with_saq else None
            worst = max(max(one[gap]) for one in pickups["ours"])
            rows.append(Row(f"pickup p50, {spacing}", per_round("ours", 50), "ms", base50, "Worker", saq=saq50))
            rows.append(Row(f"pickup p99, {spacing}", per_round("ours", 99), "ms", base99, "Worker", P99_TARGET,
                            own_figure=True, saq=saq99,
                            note=f"{sizes.latency_samples} samples a round, slowest {worst:.2f} ms"))
    finally:
        bench.close()
    return rows


def format_table(rows: list[Row]) -> str:
    """The targets' columns, then SAQ's (for information) when a row has SAQ figures."""
    with_saq = any(row.saq for row in rows)
    lines: list[tuple[str, ...]] = []
    for row in rows:
        base = f"{_cell(row.baseline, row.unit)}  bullmq {row.baseline_name}" if row.baseline else "-"
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        line = (row.name, _cell(row.ours, row.unit), base, ratio, str(row.target or "-"), harness.verdict(row.passed))
        if with_saq:
            saq_ratio = f"{row.saq_ratio:.2f}x" if row.saq_ratio is not None else "-"
            line += (_cell(row.saq, row.unit) if row.saq else "-", saq_ratio)
        lines.append(line)
    header = ("measurement (median of rounds, min-max)", "this project", "baseline", "ratio", "target", "result")
    if with_saq:
        header += ("SAQ (for information)", "ours/SAQ")
    table = harness.grid(header, lines)
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
    parser.add_argument("--no-saq", action="store_true", help="skip the SAQ figures")
    parser.add_argument("--no-node", action="store_true",
                        help="skip BullMQ on Node (otherwise installed into bench/node with npm ci on first use)")
    parser.add_argument("--diagnose", action="store_true", help="also break down the Worker's per-job cost")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    with harness.reports_duration("queue bench"):
        with harness.private_redis("queue-bench-") as lab:
            bq, sq = bullmq_version(), saq_version()
            node, without_node = node_bullmq() if not args.no_node else (None, "--no-node")
            print(f"queue bench: redis-server {harness.redis_version(lab.url)} (private, 127.0.0.1:{lab.port}), "
                  f"Python {platform.python_version()}, redis-py {redis.__version__} ({_parser()} parser), "
                  f"bullmq {bq or 'not installed: no baselines'}, SAQ {sq or 'not installed'}, "
                  f"BullMQ on Node {node or 'not run: ' + without_node}; "
                  f"{harness.cpu_count()} CPUs, not pinned; "
                  f"medians of {sizes.rounds} interleaved rounds ({sizes.ratio_rounds} for the service ratio, "
                  f"{sizes.latency_rounds} for latency)", flush=True)
            print(f"load average before start: {harness.load_average():.2f} "
                  "(other processes on these CPUs add noise)", flush=True)
            rows = run(lab.url, lab.data_dir, sizes, with_bullmq=not args.no_bullmq, with_saq=not args.no_saq,
                       with_node=node is not None, without_node=without_node)
            report = diagnose(lab.url, lab.data_dir, sizes) if args.diagnose else ""
        print(f"\nload average after: {harness.load_average():.2f}")
        print(format_table(rows))
        if report:
            print("\nWorker per-job cost, each part replaced by a no-op in turn (in-process patches):")
            print(report)
    return harness.exit_status(row.passed for row in rows)


if __name__ == "__main__":
    sys.exit(main())
