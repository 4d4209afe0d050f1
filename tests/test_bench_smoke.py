"""The queue bench runs end to end with tiny sizes and yields numbers (no timing assertions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import queue_bench
from bench.queue_bench import Sizes

TINY = Sizes(admit_jobs=40, claim_jobs=40, worker_jobs=40, latency_samples=10, concurrency=2, warmup_jobs=5,
             rounds=1, latency_gap_s=0.001)


@pytest.mark.slow
def test_queue_bench_produces_numbers(redis_url: str, tmp_path: Path) -> None:
    rows = queue_bench.run(redis_url, tmp_path, TINY, log=lambda _line: None)

    names = [row.name for row in rows]
    assert any(name.startswith("enqueue") for name in names)
    assert any(name.startswith("Worker class") for name in names)
    assert any(name.startswith("pickup latency p99") for name in names)
    with_bullmq = queue_bench.bullmq_version() is not None
    for row in rows:
        assert row.ours > 0, row
        # Rows that name a baseline got one: bullmq's figure, or the computed poller's latency.
        if row.baseline_name and (with_bullmq or row.unit == "ms"):
            assert row.baseline is not None and row.baseline > 0, row
    table = queue_bench.format_table(rows)
    assert "pickup latency p99" in table
