"""`python -m bench`: run every benchmark module present here, then one summary.

Each module exposes `main(argv) -> int` (0: every target met, 1: a target missed); one that
is missing is skipped with a note, one that crashes is reported and the others still run."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import time
import traceback

MODULES = ("queue_bench", "render_bench", "emulator_bench", "cold_start", "local_store_bench")


def run_one(name: str) -> str:
    """The module's outcome: PASS, MISS (exit status n), ERROR, or skipped."""
    if importlib.util.find_spec(f"bench.{name}") is None:
        return "skipped (not present)"
    try:
        module = importlib.import_module(f"bench.{name}")
        main = module.main
        # Pass an empty argv so the modules do not read `python -m bench`'s arguments.
        status = main([]) if inspect.signature(main).parameters else main()
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except Exception:
        traceback.print_exc()
        return "ERROR (see the traceback above)"
    return "PASS" if status == 0 else f"MISS (exit status {status})"


def main() -> int:
    results: dict[str, tuple[str, float]] = {}
    for name in MODULES:
        print(f"\n=== bench.{name} ===", flush=True)
        start = time.perf_counter()
        outcome = run_one(name)
        results[name] = (outcome, time.perf_counter() - start)
        if outcome.startswith("skipped"):
            print(f"bench.{name}: {outcome}")
    print("\n=== summary ===")
    for name, (outcome, seconds) in results.items():
        print(f"  {name:<16} {outcome:<32} {seconds:6.1f} s")
    failed = [o for o, _ in results.values() if not (o == "PASS" or o.startswith("skipped"))]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
