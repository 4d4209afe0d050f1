"""PREVIEW_WORKER_PROCESSES: the long-running worker as a parent of several worker processes,
run as users run it (`python -m functions.render_worker`) on a private Redis."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from shared.queue import JobQueue
from shared.worker import processes
from tests.conftest import ROOT
from tests.test_worker_process import env, heavy_job, queue_for, wait_for  # noqa: F401 - env is a fixture

pytestmark = [pytest.mark.process, pytest.mark.slow]


def medium_job(job_id: str) -> dict[str, Any]:
    """A real render of a few tenths of a second: long enough for two workers to hold jobs at once."""
    job = heavy_job(job_id)
    request = job["previewRequest"]
    request["steps"] = request["steps"][:6]
    request["options"]["resolution"] = "640x360"
    return job


@pytest.fixture
def parent(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:  # noqa: F811
    proc = subprocess.Popen([sys.executable, "-m", "functions.render_worker"], cwd=ROOT,
                            env={**env, "PREVIEW_WORKER_PROCESSES": "2"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield proc
    leftovers = children(proc.pid) if proc.poll() is None else []
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    for child in leftovers:
        if child.is_running():
            child.kill()


def children(pid: int) -> list[psutil.Process]:
    try:
        return [c for c in psutil.Process(pid).children() if c.status() != psutil.STATUS_ZOMBIE]
    except psutil.NoSuchProcess:
        return []


def two_children(parent: subprocess.Popen[bytes]) -> list[psutil.Process]:
    return wait_for(lambda: (c := children(parent.pid)) and len(c) == 2 and c, 30, 0.05)


def pid_of(worker_id: str) -> int:
    return int(worker_id.split(":")[-2])  # host:pid:random


def test_two_processes_share_the_jobs_and_stop_together(env: dict[str, str],  # noqa: F811
                                                        parent: subprocess.Popen[bytes]) -> None:
    queue: JobQueue = queue_for(env)
    ids = [f"medium-{i}" for i in range(8)]
    for job_id in ids:
        queue.admit(medium_job(job_id))
    kids = two_children(parent)
    # While they drain the queue, each active job's hash names the worker that claimed it
    claimers: set[str] = set()

    def drained() -> bool:
        for job_id in ids:
            worker = queue.redis.hget(queue.keys.job(job_id), "worker")
            if worker:
                claimers.add(worker if isinstance(worker, str) else worker.decode())
        return all((s := queue.status(job_id)) is not None and s.state == "completed" for job_id in ids)

    wait_for(drained, 120, 0.01)
    # Both children claimed jobs, each as a worker of its own
    assert len(claimers) == 2, claimers
    assert {pid_of(w) for w in claimers} == {k.pid for k in kids}
    # SIGTERM to the parent stops every child, cleanly, and the parent after them
    parent.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert parent.wait(60) == 0
    print(f"stopped in {time.monotonic() - started:.2f} s")
    assert not [k for k in kids if k.is_running() and k.status() != psutil.STATUS_ZOMBIE]
    assert queue.workers_seen(0)[0] == 0


def test_a_killed_child_is_started_again(env: dict[str, str], parent: subprocess.Popen[bytes]) -> None:  # noqa: F811
    queue: JobQueue = queue_for(env)
    kids = two_children(parent)
    victim, survivor = kids
    victim.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    replaced = wait_for(lambda: (c := children(parent.pid)) and len(c) == 2 and victim.pid not in {k.pid for k in c}
                        and c, 10, 0.02)
    print(f"a new child {time.monotonic() - killed:.2f} s after the kill")
    assert survivor.pid in {k.pid for k in replaced}
    newcomer = next(k for k in replaced if k.pid != survivor.pid)
    # The new child works: with the survivor stopped, it completes a job on its own
    survivor.send_signal(signal.SIGSTOP)
    try:
        queue.admit(medium_job("after-kill"))
        wait_for(lambda: (s := queue.status("after-kill")) and s.state == "completed", 60, 0.05)
    finally:
        survivor.send_signal(signal.SIGCONT)
    assert newcomer.is_running()
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(60) == 0


def test_children_do_not_outlive_a_killed_parent(parent: subprocess.Popen[bytes]) -> None:
    kids = two_children(parent)
    parent.kill()
    parent.wait(10)
    # Each child had asked for a SIGTERM on its parent's death: they stop (gracefully) too
    gone, alive = psutil.wait_procs(kids, timeout=30)
    for child in alive:
        child.kill()
    assert not alive, alive


@pytest.mark.usefixtures("tmp_path")
def test_a_child_that_keeps_failing_stops_the_worker_with_its_status(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "BACKOFF_FIRST_S", 0.01)
    supervisor = processes.Supervisor([sys.executable, "-c", "raise SystemExit(3)"], 2)
    assert supervisor.run() == 3
    assert all(len(slot.pids) >= 1 for slot in supervisor.slots)
    assert max(len(slot.pids) for slot in supervisor.slots) == processes.RESTART_LIMIT
