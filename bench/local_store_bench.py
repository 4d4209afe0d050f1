"""`python -m bench.local_store_bench [--previews N] [--rounds R]`: what the local store's size
budget costs a publish when the store already holds N dry-run previews (default 20,000).

Two stores of N previews each, one without a budget and one whose budget is full (so every
publish there also prunes the oldest preview and leaves its tombstone); R publishes into each,
interleaved, their medians and min-max. Also timed once: indexing the N folders (what the
first publish of an unindexed store pays) and a walk of them with their sizes (what pruning by
size would cost per publish without the index)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from shared.artifacts import layout
from shared.artifacts.local import MB, LocalStore, disk_usage


def fill(root: Path, count: int) -> None:
    """`count` dry-run previews (the plan and the manifest), written as a publish leaves them,
    one second apart in age, without a publish's fsyncs."""
    now = time.time()
    for n in range(count):
        project = f"proj-{n % 50}"
        folder = root / layout.PREFIX / project / f"job-{n}"
        folder.mkdir(parents=True)
        summary = json.dumps({"job": n, "steps": []}).encode()
        (folder / layout.SUMMARY).write_bytes(summary)
        files = [{"name": layout.SUMMARY, "bytes": len(summary), "contentType": "application/json", "sha256": ""}]
        (folder / layout.MANIFEST).write_bytes(layout.manifest_bytes(layout.build_manifest(project, f"job-{n}", files)))
        then = now - (count - n)
        os.utime(folder / layout.MANIFEST, (then, then))


def source(path: Path, n: int) -> Path:
    path.mkdir(parents=True)
    (path / layout.SUMMARY).write_text(json.dumps({"job": f"new-{n}", "steps": []}))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.local_store_bench")
    parser.add_argument("--previews", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="store-bench-") as tmp:
        base = Path(tmp)
        started = time.perf_counter()
        fill(base / "plain", args.previews)
        fill(base / "budget", args.previews)
        print(f"filled two stores of {args.previews} previews in {time.perf_counter() - started:.1f} s")

        walk = LocalStore(base / "budget")
        started = time.perf_counter()
        total = sum(e.bytes for e in walk._scan())
        walked = time.perf_counter() - started
        print(f"a walk of the folders with their sizes: {walked * 1000:.0f} ms ({total / MB:.1f} MB on disk)")

        plain = LocalStore(base / "plain")
        budget = LocalStore(base / "budget", max_mb=total / MB)  # full: each publish prunes one
        started = time.perf_counter()
        budget._open_index()
        print(f"indexing them (once, on the first publish): {(time.perf_counter() - started) * 1000:.0f} ms")
        started = time.perf_counter()
        budget.prune()  # the walk that reconciles the index: on a store's first publish, then hourly
        print(f"the hourly walk that reconciles the index: {(time.perf_counter() - started) * 1000:.0f} ms")
        budget._next_prune = plain._next_prune = time.monotonic() + 3600  # measured above, not in each round

        timings: dict[str, list[float]] = {"no budget": [], "budget full": []}
        for n in range(args.rounds):
            for name, store in (("no budget", plain), ("budget full", budget)):
                src = source(base / "src" / f"{name.replace(' ', '-')}-{n}", n)
                started = time.perf_counter()
                store.publish("proj-new", f"new-{n}", src)
                timings[name].append(time.perf_counter() - started)
        count = budget.usage()[1]
        print(f"{args.rounds} publishes into each (interleaved); the budgeted store still holds {count} previews")
        for name, values in timings.items():
            ms = sorted(v * 1000 for v in values)
            print(f"  {name:12s} median {statistics.median(ms):6.2f} ms  (min {ms[0]:.2f}, max {ms[-1]:.2f})")
        extra = statistics.median(timings["budget full"]) - statistics.median(timings["no budget"])
        print(f"  the budget adds {extra * 1000:.2f} ms per publish (index upsert, oldest look-up, one prune)")
        one = disk_usage(budget.job_dir("proj-new", f"new-{args.rounds - 1}"))
        print(f"  one dry-run preview takes {one} B on disk")
        budget.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
