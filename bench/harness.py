"""What every benchmark here needs besides its measurements: a private Redis and scratch
folders, child servers on loopback ports, alternating rounds and best-of timing, percentiles,
targets with PASS/MISS, the printed tables, progress lines, argument parsing, exit status.

redis-py and local.redis_server are imported where they are used: render_bench uses this
module without Redis, and its peak-memory figure should not include a library it never needs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from local.redis_server import RedisServer

REPO_ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"


# -- command line and outcome ---------------------------------------------------------------


def argument_parser(module: str, doc: str | None, *, quick_help: str) -> argparse.ArgumentParser:
    """A parser named after `python -m <module>`, described by the doc's first line, with the
    `--quick` switch every bench has (small sizes: check that it runs)."""
    description = doc.splitlines()[0] if doc else None
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    return parser


def exit_status(passed: Iterable[bool | None]) -> int:
    """0 when no target was missed (None: the figure has no target), else 1."""
    return 0 if all(outcome is not False for outcome in passed) else 1


@contextlib.contextmanager
def reports_duration(name: str) -> Iterator[None]:
    """Prints how long the bench took once it has finished (not when it fails)."""
    started = time.perf_counter()
    yield
    print(f"\n{name} took {time.perf_counter() - started:.1f} s")


def progress(line: str) -> None:
    """Progress lines are flushed at once so a long step shows when it starts, also in a pipe."""
    print(line, flush=True)


class StepLog:
    """One progress line per step: seconds since the log was made, then the step that starts."""

    def __init__(self, log: Callable[[str], None] = progress) -> None:
        self.log = log
        self.started = time.perf_counter()

    def __call__(self, text: str) -> None:
        self.log(f"  [{time.perf_counter() - self.started:5.1f} s] {text} ...")


# -- the machine ----------------------------------------------------------------------------


def cpu_count() -> int:
    """CPUs this process may run on (its affinity where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


@contextlib.contextmanager
def pinned(server_pid: int, enabled: bool = True) -> Iterator[str]:
    """redis-server on one CPU, this process on the others. Left to the scheduler, the two
    sometimes share a CPU and sometimes not, and a round trip's cost (so every figure measured
    against it) jumps between those two modes from one minute to the next; apart is the stable
    one, and the one production has (Redis on its own machine). Yields a description."""
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


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Swallow what the measured code prints (the worker logs JSON lines per job): the cost of
    formatting them stays in the figure, as production pays it too, the terminal's does not."""
    with contextlib.redirect_stdout(io.StringIO()) as sink:
        yield
    sink.close()


# -- folders, Redis and child servers -------------------------------------------------------


@contextlib.contextmanager
def scratch_dir(prefix: str, keep: Path | None = None) -> Iterator[Path]:
    """A temporary folder removed afterwards, or `keep` (created, left in place to look at)."""
    folder = keep or Path(tempfile.mkdtemp(prefix=prefix))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    finally:
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class PrivateRedis:
    """A redis-server of this run's own on a free loopback port, and the run's scratch folder."""

    server: RedisServer
    tmp: Path

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def pid(self) -> int:
        return self.server.process.pid if self.server.process else 0

    @property
    def data_dir(self) -> Path:
        """Where the code under test keeps its files (DATA_DIR)."""
        return self.tmp / "data"


@contextlib.contextmanager
def private_redis(prefix: str) -> Iterator[PrivateRedis]:
    """Benches never touch a Redis they did not start: this one lives as long as the block."""
    from local.redis_server import RedisServer

    with scratch_dir(prefix) as tmp, RedisServer(tmp / "redis") as server:
        yield PrivateRedis(server, tmp)


def flush_redis(url: str) -> None:
    """Empty the (private) server, so each measurement starts from the same state."""
    import redis

    with redis.Redis.from_url(url) as client:
        client.flushall()


def redis_version(url: str) -> str:
    import redis

    with redis.Redis.from_url(url, decode_responses=True) as client:
        return str(client.info("server").get("redis_version", "?"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def child_server(command: Sequence[str], port: int, env: Mapping[str, str], cwd: Path = REPO_ROOT,
                 start_timeout_s: float = 60) -> Iterator[str]:
    """Run `command` (a server that listens on 127.0.0.1:`port`) until the block ends; yields
    its base URL once it accepts connections, stops it with SIGTERM (then SIGKILL) afterwards."""
    process = subprocess.Popen(list(command), cwd=cwd, env=dict(env), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        _wait_listening(port, process, start_timeout_s)
        yield f"http://{LOOPBACK}:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            error = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"server exited: {error.strip()}")
        with socket.socket() as sock:
            if sock.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("server did not start")


# -- rounds and timing ----------------------------------------------------------------------


def alternate(rounds: int, contenders: Mapping[str, Callable[[int], float]], *,
              before: Callable[[], object] | None = None, after: Callable[[], object] | None = None,
              report: Callable[[int, str, float], None] | None = None, swap: bool = False) -> dict[str, list[float]]:
    """Each round runs every contender once, in turn (`before` and `after` around each run,
    untimed), so a noisy moment on a shared machine lands on both sides rather than on one.
    With `swap`, every other round runs them in the reverse order, so neither side always runs
    first (what a ratio of two sides wants). A contender gets the round number (from 0) and
    returns its figure; every figure, by name."""
    figures: dict[str, list[float]] = {name: [] for name in contenders}
    for round_number in range(rounds):
        order = list(contenders.items())
        if swap and round_number % 2:
            order.reverse()
        for name, measure in order:
            if before is not None:
                before()
            figure = measure(round_number)
            if after is not None:
                after()
            figures[name].append(figure)
            if report is not None:
                report(round_number, name, figure)
    return figures


def highest(figures: Mapping[str, list[float]]) -> dict[str, float]:
    """Each contender's best round, for figures where more is better (jobs/s)."""
    return {name: max(values) for name, values in figures.items()}


def wall_times(runs: int, action: Callable[[], object], *, warmup: int = 0) -> list[float]:
    """Seconds of each of `runs` calls of `action`, after `warmup` calls that are not kept."""
    times: list[float] = []
    for i in range(warmup + runs):
        started = time.perf_counter()
        action()
        if i >= warmup:
            times.append(time.perf_counter() - started)
    return times


def fastest(runs: int, action: Callable[[], object]) -> float:
    """Seconds of the fastest of `runs` calls of `action`."""
    return min(wall_times(runs, action))


def run_threads(n: int, body: Callable[[int], Any],
                setup: Callable[[int], Any] | None = None) -> tuple[float, list[Any]]:
    """Run `body(i)` on n threads released together, after `setup(i)` (untimed) on each;
    seconds until the last one finished, and what each body returned."""
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


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, q in 0..100."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# -- targets and tables ---------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A bound one figure is held to; printed as in the target column (">= 1.5x", "<= 2 ms")."""

    relation: Literal[">=", "<="]
    limit: float
    unit: str = "x"

    def met(self, figure: float) -> bool:
        return figure >= self.limit if self.relation == ">=" else figure <= self.limit

    def __str__(self) -> str:
        spacing = "" if self.unit == "x" else " "
        return f"{self.relation} {self.limit:g}{spacing}{self.unit}"


def verdict(passed: bool | None) -> str:
    return "-" if passed is None else ("PASS" if passed else "MISS")


@dataclass(frozen=True)
class Figure:
    """One line of a results table: what was measured, its value as printed, and the target
    it is held to (if any) with the outcome."""

    name: str
    value: str
    target: Target | None = None
    passed: bool | None = None

    @classmethod
    def checked(cls, name: str, value: str, figure: float, target: Target) -> Figure:
        """A line whose `figure` (the number `value` shows) is held to `target`."""
        return cls(name, value, target, target.met(figure))


def grid(header: Sequence[str], lines: Iterable[Sequence[str]], right_aligned: Collection[int] = ()) -> str:
    """Columns as wide as their widest cell, a rule under the header; numbers read best with
    their column's index in `right_aligned`."""
    table = [list(header), *(list(line) for line in lines)]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]

    def cells(line: Sequence[str]) -> str:
        return "  ".join(cell.rjust(widths[i]) if i in right_aligned else cell.ljust(widths[i])
                         for i, cell in enumerate(line)).rstrip()

    out = [cells(line) for line in table]
    out.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(out)


def figures_table(figures: Sequence[Figure]) -> str:
    return grid(("measurement", "value", "target", "result"),
                ((f.name, f.value, str(f.target) if f.target else "-", verdict(f.passed)) for f in figures),
                right_aligned={1})
