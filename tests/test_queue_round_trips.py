"""The queue's fast paths against a real Redis: completing a job claims the next one in the same
script (one round trip per job for a busy worker), and many jobs admitted in one call, each
answered as alone, the backlog limit exact under concurrency."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis

from shared import queue as queue_module
from shared.errors import Conflict, LeaseLost, QueueFull, RetentionFull
from shared.models import AdmitResult
from shared.queue import JobQueue
from shared.settings import Settings
from shared.worker import Worker
from tests.test_worker import FolderStore


def make_queue(url: str, tmp_path: Path | None = None, **env: str) -> JobQueue:
    settings = Settings.from_env({"REDIS_URL": url, "DATA_DIR": str(tmp_path or "."), **env})
    return JobQueue(redis.Redis.from_url(url, decode_responses=True), settings,
                    redis.Redis.from_url(url, decode_responses=True))


def job(n: int | str, priority: str = "normal", **extra: Any) -> dict[str, Any]:
    return {"jobId": f"job-{n}", "projectId": "proj-1", "requestId": f"req-{n}", "dryRun": True,
            "priority": priority, "previewRequest": {"steps": [], "assets": [], "audio": {}}, **extra}


# -- claim-next --------------------------------------------------------------------------


def test_completing_a_job_claims_the_next_in_priority_order(redis_url: str, rdb: redis.Redis) -> None:
    queue = make_queue(redis_url, PREVIEW_QUEUE_MAX="10")
    for name, priority in (("l", "low"), ("n", "normal"), ("h", "high")):
        queue.admit(job(name, priority))
    first = queue.claim(worker_id="w-1").job
    assert first is not None and first.id == "job-h"

    # When the worker completes its job and asks for the next one in the same call
    outcome = queue.complete(first, {"dryRun": True}, claim_next=True, worker_id="w-1")

    # Then the job is completed and the next by priority is leased to the same worker, as a
    # claim would have leased it
    assert outcome is not None and outcome.job is not None
    second = outcome.job
    assert second.id == "job-n" and second.token and second.token != first.token
    assert second.payload == job("n", "normal")
    status = queue.status("job-h")
    assert status is not None and status.state == "completed"
    fields = rdb.hgetall("pq:{preview-jobs}:job:job-n")
    assert fields["state"] == "active" and fields["worker"] == "w-1" and fields["token"] == second.token
    assert rdb.zscore("pq:{preview-jobs}:active", "job-n") is not None
    assert rdb.zscore("pq:{preview-jobs}:alive", "w-1") is not None
    assert queue.counts().completed == 1 and queue.counts().active == 1 and queue.counts().waiting == 1

    # The chain goes on to the last job, then says nothing is ready
    third = queue.complete(second, claim_next=True, worker_id="w-1")
    assert third is not None and third.job is not None and third.job.id == "job-l"
    empty = queue.complete(third.job, claim_next=True, worker_id="w-1")
    assert empty is not None and empty.job is None and empty.next_due_ms is None
    assert queue.counts().completed == 3 and queue.counts().active == 0


def test_claim_next_reports_when_a_retry_is_due(redis_url: str) -> None:
    queue = make_queue(redis_url, PREVIEW_BACKOFF_MS="60000")
    queue.admit(job(1))
    queue.admit(job(2))
    failing = queue.claim().job
    assert failing is not None
    assert queue.fail(failing, "boom") == "delayed"
    other = queue.claim().job
    assert other is not None

    outcome = queue.complete(other, claim_next=True)

    # Nothing is ready; the retry's due time comes back so the loop can sleep until then
    assert outcome is not None and outcome.job is None
    assert outcome.next_due_ms is not None and outcome.next_due_ms > time.time() * 1000


def test_a_lost_lease_claims_nothing(redis_url: str) -> None:
    queue = make_queue(redis_url)
    queue.admit(job(1))
    queue.admit(job(2))
    claimed = queue.claim().job
    assert claimed is not None
    claimed.token = "not-the-owner"

    with pytest.raises(LeaseLost):
        queue.complete(claimed, claim_next=True, worker_id="w-1")

    # The next job was not taken by a worker whose completion was refused
    assert queue.counts().waiting == 1 and queue.counts().active == 1


def test_plain_complete_still_claims_nothing(redis_url: str) -> None:
    queue = make_queue(redis_url)
    queue.admit(job(1))
    queue.admit(job(2))
    claimed = queue.claim().job
    assert claimed is not None
    assert queue.complete(claimed) is None
    assert queue.counts().waiting == 1 and queue.counts().active == 0


def _script_calls(rdb: redis.Redis) -> int:
    stats = rdb.info("commandstats")
    return sum(int(stats.get(name, {}).get("calls", 0)) for name in ("cmdstat_evalsha", "cmdstat_eval"))


def test_a_busy_worker_makes_one_script_call_per_job(redis_url: str, rdb: redis.Redis, tmp_path: Path) -> None:
    """Given 300 waiting jobs, a long-running worker with 2 job loops drains them with about one
    script call per job (claim and complete were two)."""
    jobs = 300
    queue = make_queue(redis_url, tmp_path, PREVIEW_QUEUE_MAX="1000")
    queue.admit_many([job(n) for n in range(jobs)])
    worker = Worker(queue.settings, queue, FolderStore())
    rdb.config_resetstat()
    before = _script_calls(rdb)
    thread = threading.Thread(target=worker.run_forever, kwargs={"concurrency": 2}, daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        while sum(worker.outcomes.values()) < jobs:
            assert time.monotonic() - started < 60, dict(worker.outcomes)
            time.sleep(0.01)
        calls = _script_calls(rdb) - before
    finally:
        worker.stop()
        thread.join(30)
    assert worker.outcomes["dryrun"] == jobs
    print(f"{calls} script calls for {jobs} jobs ({calls / jobs:.2f} per job), "
          f"drained in {time.monotonic() - started:.2f} s")
    # Each loop's first claim and its last (empty) one, the worker's liveness renewals and
    # recovery passes come on top: a few dozen at most, against 300 more without claim-next.
    assert calls <= jobs + 40


def test_a_lambda_invocation_makes_one_script_call_per_job(redis_url: str, rdb: redis.Redis, tmp_path: Path) -> None:
    """Given 20 waiting jobs, one invocation of the worker function drains them with one script
    call per job, and one for its first claim (claim and complete were two per job)."""
    jobs = 20
    queue = make_queue(redis_url, tmp_path, PREVIEW_QUEUE_MAX="100")
    worker = Worker(queue.settings, queue, FolderStore())
    # A warm container: the renderer imported, the scripts known to Redis (a first EVALSHA
    # of each is refused and sent again as EVAL)
    queue.admit(job("warm-up"))
    assert worker.run_until_idle(remaining_ms=lambda: 600_000)["processed"] == 1
    queue.admit_many([job(n) for n in range(jobs)])
    rdb.config_resetstat()
    before = _script_calls(rdb)
    summary = worker.run_until_idle(remaining_ms=lambda: 600_000)
    calls = _script_calls(rdb) - before
    assert summary["processed"] == jobs and summary["outcomes"] == {"dryrun": jobs + 1}  # the warm-up too
    print(f"{calls} script calls for {jobs} jobs in one invocation")
    # The start's recovery pass, the first claim, a completion per job (the last one's claim finds
    # the queue empty); a lease renewal or two may come on top, against 20 more without claim-next
    assert jobs + 2 <= calls <= jobs + 4
    # Claimed as an invocation claims: without liveness, which it would not renew
    assert rdb.zcard("pq:{preview-jobs}:alive") == 0


# -- bulk admission ----------------------------------------------------------------------


def test_each_job_of_a_batch_gets_its_own_answer(redis_url: str) -> None:
    queue = make_queue(redis_url, PREVIEW_QUEUE_MAX="3")
    queue.admit(job("known"))

    answers = queue.admit_many([
        job("new"),                       # admitted
        job("known"),                     # identical replay of a job admitted before
        job("known", priority="high"),    # conflict with it
        job("new"),                       # replay of the first job of this very batch
        job("new", priority="low"),       # conflict with it
        job("third"),                     # admitted: the backlog reaches the limit of 3
        job("fourth"),                    # full
        job("third"),                     # a replay is still answered while full
    ])

    kinds = [type(a).__name__ for a in answers]
    assert kinds == ["AdmitResult", "AdmitResult", "Conflict", "AdmitResult", "Conflict", "AdmitResult",
                     "QueueFull", "AdmitResult"]
    created = [a.created for a in answers if isinstance(a, AdmitResult)]
    assert created == [True, False, False, True, False]
    full = answers[6]
    assert isinstance(full, QueueFull) and full.status_code == 429 and int(full.headers()["Retry-After"]) >= 1
    conflict = answers[2]
    assert isinstance(conflict, Conflict) and conflict.status_code == 409
    assert queue.counts().waiting == 3
    # Stored exactly as a single admission stores them, in admission order
    claimed = [queue.claim().job for _ in range(3)]
    assert [c.id for c in claimed if c] == ["job-known", "job-new", "job-third"]
    assert claimed[1] is not None and claimed[1].payload == job("new")


def test_a_batch_answers_retention_full_per_job(redis_url: str) -> None:
    queue = make_queue(redis_url, PREVIEW_QUEUE_MAX="100", PREVIEW_KEEP_COMPLETED_COUNT="2")
    answers = queue.admit_many([job(n) for n in range(3)])
    assert [type(a).__name__ for a in answers] == ["AdmitResult", "AdmitResult", "RetentionFull"]
    assert isinstance(answers[2], RetentionFull) and "keeps 2 completed jobs" in answers[2].message


def test_batches_split_in_order(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue_module, "ADMIT_BATCH", 3)
    queue = make_queue(redis_url, PREVIEW_QUEUE_MAX="5")
    answers = queue.admit_many([job(n) for n in range(8)])
    assert [isinstance(a, AdmitResult) and a.created for a in answers] == [True] * 5 + [False] * 3
    assert all(isinstance(a, QueueFull) for a in answers[5:])
    assert [queue.claim().job.id for _ in range(5)] == [f"job-{n}" for n in range(5)]  # type: ignore[union-attr]


def test_concurrent_batches_and_single_admissions_admit_exactly_the_limit(redis_url: str) -> None:
    """Given a limit of 25, 12 threads on connections of their own race with batches of 10 new
    jobs and 12 more with single admissions: exactly 25 jobs are admitted in all."""
    limit = 25
    barrier = threading.Barrier(24)

    def batch(n: int) -> list[bool]:
        queue = make_queue(redis_url, PREVIEW_QUEUE_MAX=str(limit))
        try:
            barrier.wait()
            return [isinstance(a, AdmitResult) for a in queue.admit_many([job(f"{n}-{i}") for i in range(10)])]
        finally:
            queue.close()
            queue.redis.close()

    def single(n: int) -> list[bool]:
        queue = make_queue(redis_url, PREVIEW_QUEUE_MAX=str(limit))
        try:
            barrier.wait()
            try:
                queue.admit(job(f"single-{n}"))
                return [True]
            except QueueFull:
                return [False]
        finally:
            queue.close()
            queue.redis.close()

    with ThreadPoolExecutor(max_workers=24) as pool:
        futures = [pool.submit(batch, n) for n in range(12)] + [pool.submit(single, n) for n in range(12)]
        admitted = sum(sum(f.result()) for f in futures)
    assert admitted == limit
    client = redis.Redis.from_url(redis_url)
    assert client.zcard("pq:{preview-jobs}:waiting") == limit
    client.close()
