"""The queue, render and cold start benches run end to end with tiny sizes and yield numbers (no timing
assertions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import queue_bench
from bench.queue_bench import Sizes

TINY = Sizes(admit_jobs=40, claim_jobs=40, worker_jobs=100, bulk_jobs=40, latency_samples=10, concurrency=2,
             warmup_jobs=5, rounds=1, latency_rounds=1, latency_gaps_s=(0.002, 0.01))


@pytest.mark.process
@pytest.mark.slow
def test_queue_bench_produces_numbers(redis_url: str, tmp_path: Path) -> None:
    rows = queue_bench.run(redis_url, tmp_path, TINY, log=lambda _line: None)

    names = [row.name for row in rows]
    for wanted in ("enqueue one at a time", "bulk enqueue", "service.enqueue / bare", "worker, no-op job",
                   "worker: cost of INFO logging", "pickup p99, 2 ms spacing", "pickup p99, 10 ms spacing"):
        assert any(name.startswith(wanted) for name in names), (wanted, names)
    with_bullmq = queue_bench.bullmq_version() is not None
    with_saq = queue_bench.saq_version() is not None
    saq_rows = ("enqueue one at a time", "enqueue, 2 callers", "worker, no-op job", "pickup p")
    for row in rows:
        assert row.ours and all(value > 0 for value in row.ours) or row.unit == "%", row
        # Rows that name a baseline got bullmq's figure, measured in the same run.
        if row.baseline_name and with_bullmq:
            assert row.baseline and all(value > 0 for value in row.baseline), row
        if row.target is not None:
            assert row.passed is not None, row
        # SAQ's figures (no target) in the same rounds, where it does the same work.
        if with_saq and row.name.startswith(saq_rows):
            assert row.saq and all(value > 0 for value in row.saq) and row.saq_ratio is not None, row
    table = queue_bench.format_table(rows)
    assert "pickup p99, 2 ms spacing" in table and ("PASS" in table or "MISS" in table)
    assert ("ours/SAQ" in table) == with_saq


@pytest.mark.process
@pytest.mark.slow
def test_render_bench_produces_numbers(tmp_path: Path) -> None:
    """The quick case end to end: ours and the ffmpeg CLI make the same frames and keyframes."""
    from bench import render_bench

    ffmpeg = render_bench.find_ffmpeg(None)
    results = render_bench.run(render_bench.QUICK_CASES, 1, ffmpeg, tmp_path, log=lambda _line: None)

    [result] = results
    case = result.case
    ours = [row for row in result.rows if row.who == render_bench.OURS]
    assert [row.fmt for row in ours] == list(render_bench.COMPARED)
    for row in result.rows:
        assert row.seconds and all(s > 0 for s in row.seconds) and row.rss_mb[0] > 0, row
        assert row.output is not None and row.output.frames == (case.steps if row.fmt == "gif" else case.frames)
    if ffmpeg is not None:
        assert set(result.ratios) == set(render_bench.COMPARED) and all(result.same_output.values())
        assert [f.target for f in render_bench.ratio_figures(results)] == [render_bench.TARGET] * 2
    table = render_bench.format_table(results)
    assert "ours (PyAV)" in table and (ffmpeg is None or "ffmpeg CLI" in table)


@pytest.mark.process
@pytest.mark.slow
def test_cold_start_bench_produces_numbers(redis_url: str) -> None:
    """One round of the status function: the packaged handler and the baseline each answer
    the fixture in a fresh python3.12 process (skipped without one)."""
    from bench import cold_start
    from deploy import package

    python = package.find_interpreter(package.plans()[0].target)
    if python is None:
        pytest.skip("no Python 3.12 interpreter (pyenv's or python3.12 on PATH) to run the packaged functions")
    cases = [c for c in cold_start.CASES if c.function == "JobStatusFunction"]
    [result] = cold_start.run(cases, 1, python, redis_url, log=lambda _line: None)

    assert set(result.seconds) == set(result.cpu) == {cold_start.OURS, cold_start.BASELINE}
    assert all(len(values) == 1 and values[0] > 0 for values in result.seconds.values()), result.seconds
    rows = cold_start.figures([result])
    assert [row.target for row in rows if row.target] == [cold_start.TARGET] * 2  # wall and CPU
    assert "packaged / baseline" in cold_start.harness.figures_table(rows)


@pytest.mark.unit
def test_rounds_in_turn_and_swapped() -> None:
    """`alternate` runs the contenders in turn each round; with `swap`, every other round in the
    reverse order (neither side of a ratio always first)."""
    from bench import harness

    ran: list[str] = []

    def contender(name: str) -> Any:
        return lambda round_number: ran.append(f"{name}{round_number}") or float(round_number)

    figures = harness.alternate(3, {"a": contender("a"), "b": contender("b")})
    assert ran == ["a0", "b0", "a1", "b1", "a2", "b2"] and figures == {"a": [0, 1, 2], "b": [0, 1, 2]}
    ran.clear()
    figures = harness.alternate(3, {"a": contender("a"), "b": contender("b")}, swap=True)
    assert ran == ["a0", "b0", "b1", "a1", "a2", "b2"] and figures == {"a": [0, 1, 2], "b": [0, 1, 2]}


@pytest.mark.process
@pytest.mark.slow
def test_queue_bench_runs_node_bullmq_in_the_same_rounds(redis_url: str, tmp_path: Path) -> None:
    """With node and npm on PATH, BullMQ on Node is installed from the lock file and runs in the
    worker rounds; the gap rows are ratios of that round's figures, not the issue's constant."""
    from bench.queue_fixtures import node_bullmq

    node, why = node_bullmq()
    if node is None:
        pytest.skip(f"BullMQ on Node cannot run here: {why}")
    rows = queue_bench.run(redis_url, tmp_path, TINY, with_bullmq=False, with_saq=False, with_node=True,
                           log=lambda _line: None)

    gaps = [row for row in rows if "gap to Node BullMQ" in row.name]
    assert len(gaps) == 2, [row.name for row in rows]
    for row in gaps:
        assert len(row.ours) == TINY.rounds and all(value > 0 for value in row.ours), row
        assert "in the same rounds" in row.note and "another machine" not in row.note, row
