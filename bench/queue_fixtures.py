"""What the queue bench's measurements stand on: sizes, the job payload, queues with the
service's settings and client options on the private Redis, and the no-op render and store
that make the real `Worker` a no-op processor."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench import harness
from shared import redis_client
from shared.contract import JobRequest
from shared.queue import JobQueue
from shared.retention import caps
from shared.settings import Settings

# Retention both sides share: the service defaults (PREVIEW_KEEP_COMPLETED_SECONDS, and the
# count cap of completed jobs its memory budget gives).
KEEP_COMPLETED_COUNT = caps(Settings()).completed
KEEP_COMPLETED_SECONDS = 3600


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does; the smoke test passes tiny ones."""

    admit_jobs: int = 5000
    claim_jobs: int = 5000
    worker_jobs: int = 4000
    bulk_jobs: int = 5000
    latency_samples: int = 300
    concurrency: int = 8
    warmup_jobs: int = 200
    rounds: int = 5
    # Admission through the service against the bare queue: a ratio of two noisy figures, so
    # more rounds, the sides in turn.
    ratio_rounds: int = 9
    # The cost of INFO logging: worker processes, each timed in alternating INFO and WARNING
    # phases of log_phase_s over log_jobs jobs.
    log_rounds: int = 5
    log_jobs: int = 12000  # within the completed cap (KEEP_COMPLETED_COUNT)
    log_phase_s: float = 0.25
    latency_rounds: int = 3
    # Pauses between latency samples: every admission finds the worker idle (the 2 ms
    # and 10 ms spacings).
    latency_gaps_s: tuple[float, ...] = (0.002, 0.010)

    @property
    def latency_gap_s(self) -> float:  # what the in-process diagnosis uses
        return self.latency_gaps_s[0]


FULL = Sizes()
QUICK = Sizes(admit_jobs=200, claim_jobs=200, worker_jobs=400, bulk_jobs=400, latency_samples=20, warmup_jobs=20,
              rounds=1, ratio_rounds=1, log_rounds=1, log_jobs=3000, log_phase_s=0.03, latency_rounds=1)


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
    return Settings.from_env(make_env(url, queue_name, data_dir))


def make_env(url: str, queue_name: str, data_dir: Path) -> dict[str, str]:
    return {
        "REDIS_URL": url,
        "PREVIEW_QUEUE_NAME": queue_name,
        "PREVIEW_QUEUE_MAX": "1000000",  # the bench fills far beyond the production limit
        "DATA_DIR": str(data_dir),
        "PREVIEW_KEEP_COMPLETED_COUNT": str(KEEP_COMPLETED_COUNT),
        "PREVIEW_KEEP_COMPLETED_SECONDS": str(KEEP_COMPLETED_SECONDS),
        # Admission keeps room for every unfinished job to fail: room for all the bench admits.
        "PREVIEW_KEEP_FAILED_COUNT": "1000000",
        "PREVIEW_SHUTDOWN_GRACE_SECONDS": "5",
    }


def worker_env(url: str, queue_name: str, data_dir: Path, concurrency: int, log_level: str = "INFO") -> dict[str, str]:
    """The environment of a bench worker process: the service's own defaults (logging at INFO
    to stdout) but for the bench's queue, sizes and concurrency."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREVIEW_", "REDIS_", "LOG_"))}
    env.update(make_env(url, queue_name, data_dir))
    env.update({"PREVIEW_WORKER_CONCURRENCY": str(concurrency), "LOG_LEVEL": log_level,
                "PREVIEW_METRICS_PORT": "0", "BENCH_QUEUE": queue_name, "BENCH_CONCURRENCY": str(concurrency),
                "BENCH_KEEP_COMPLETED_COUNT": str(KEEP_COMPLETED_COUNT),
                "BENCH_KEEP_COMPLETED_SECONDS": str(KEEP_COMPLETED_SECONDS)})
    return env


def make_client(settings: Settings, *, blocking: bool = False) -> redis.Redis:
    """A client exactly as the service makes it, owned (and closed) by the bench."""
    return redis_client.connect(settings, blocking=blocking)


class QueueBench:
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
        harness.flush_redis(self.url)

    def best(self, rounds: int, contenders: dict[str, Callable[[], float]]) -> dict[str, float]:
        """Run every contender once per round, in turn, on an empty database; the best of each
        (the in-process diagnosis compares variants of ours, not us with others)."""
        return harness.highest(self.rounds(rounds, contenders))

    def rounds(self, rounds: int, contenders: dict[str, Callable[[], float]], *,
               swap: bool = False) -> dict[str, list[float]]:
        """Run every contender once per round, in turn (`swap`: the order reversed every other
        round), on an empty database; every figure."""
        figures = harness.alternate(rounds, {name: _any_round(measure) for name, measure in contenders.items()},
                                    before=self.flush, after=self.close_clients, swap=swap)
        self.flush()
        return figures

    def close_clients(self) -> None:
        for queue in self._queues:
            queue.close()
        self._queues.clear()
        for client in self._clients:
            client.close()
        self._clients.clear()

    def close(self) -> None:
        """Leave the server as it was found: no client open, nothing stored."""
        self.close_clients()
        self.flush()


def _any_round(measure: Callable[[], float]) -> Callable[[int], float]:
    """The queue measurements do the same work in every round: they need not know which."""

    def measure_round(_round: int) -> float:
        return measure()

    return measure_round


def prefill(queue: JobQueue, n: int, tag: str, threads: int = 8) -> None:
    """Admit n jobs (untimed set-up)."""
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda part: [queue.admit(job_payload(i, tag)) for i in part], harness.slices(n, threads)))


class NullStore:
    """Publishes nothing: with a no-op render this makes `Worker.process` a no-op processor."""

    def publish(self, project_id: str, job_id: str, src_dir: Path) -> dict[str, Any]:
        return {}


def noop_render(request: JobRequest, out: Path, settings: Settings,
                progress: Callable[[int], None] | None) -> None:
    return None


def bullmq_version() -> str | None:
    """The installed bullmq's version, or None: without it there are no baselines."""
    try:
        import bullmq
    except ImportError:
        return None
    return str(getattr(bullmq, "__version__", "?"))


# BullMQ on Node (bench/node: its package.json and lock pin the version): node_modules is
# installed there from the npm registry on first use, with npm ci (no install scripts, as
# npm runs by default: msgpackr keeps its JavaScript code).
NODE_DIR = harness.REPO_ROOT / "bench" / "node"


def node_bullmq() -> tuple[str | None, str]:
    """The installed BullMQ-on-Node version, installing it first if need be, or None and why
    it cannot be run (no node or npm on PATH, or npm ci failed)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return None, "node and npm are not both on PATH"
    installed = NODE_DIR / "node_modules" / "bullmq" / "package.json"
    marker = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    if not installed.exists() or not marker.exists() or marker.stat().st_mtime < lock.stat().st_mtime:
        done = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
                              cwd=NODE_DIR, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0 or not installed.exists():
            return None, f"npm ci in bench/node failed: {(done.stderr or done.stdout).strip()[-300:]}"
    version = json.loads(installed.read_text(encoding="utf-8"))["version"]
    runtime = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=False)
    return f"{version} (Node {runtime.stdout.strip() or '?'})", ""


def saq_version() -> str | None:
    """The installed SAQ's version, or None: without it there are no SAQ figures."""
    try:
        import saq
    except ImportError:
        return None
    return str(getattr(saq, "__version__", "?"))
