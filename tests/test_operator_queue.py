"""The operator's queue operations on a real Redis: listing a state page by page with a cursor
that concurrent changes do not shift, retrying a dead letter (fresh attempts, its failure kept
in its history, its payload accounted for again) and cancelling a waiting or delayed job; each
one Lua script, so that racing with claims, failures and recovery leaves the counts exact."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from shared import service
from shared.errors import Conflict, InvalidRequest, JobNotFound, LeaseLost, QueueFull
from shared.keys import HISTORY_MAX, HISTORY_REASON_BYTES, STATES
from shared.queue import JobQueue
from shared.settings import Settings


def job(n: int | str, priority: str = "normal", **extra: Any) -> dict[str, Any]:
    return {"jobId": f"job-{n}", "projectId": "proj-1", "requestId": f"req-{n}", "dryRun": True,
            "priority": priority, "previewRequest": {"title": f"job {n}", "steps": [], "assets": [], "audio": {}},
            **extra}


def make_queue(url: str, **env: str) -> JobQueue:
    settings = Settings.from_env({"REDIS_URL": url, "PREVIEW_QUEUE_MAX": "1000", "PREVIEW_BACKOFF_MS": "0",
                                  "PREVIEW_JOB_ATTEMPTS": "1", **env})
    return JobQueue(redis.Redis.from_url(url, decode_responses=True), settings)


@pytest.fixture
def queue(redis_url: str) -> Iterator[JobQueue]:
    q = make_queue(redis_url)
    yield q
    q.close()
    q.redis.close()


def dead_letter(queue: JobQueue, job_id: str, reason: str = "asset not found", stack: str = "Traceback ...") -> None:
    """Claim jobs until `job_id` is claimed, fail it for good, hand the others back."""
    others = []
    while True:
        claimed = queue.claim().job
        assert claimed is not None, f"{job_id} was never claimed"
        if claimed.id == job_id:
            assert queue.fail(claimed, reason, stack, retryable=False) == "failed"
            break
        others.append(claimed)
    for other in others:
        queue.release(other)


def exact(queue: JobQueue, rdb: redis.Redis) -> dict[str, int]:
    """Each state's set holds exactly the jobs whose hash says that state; returns the counts."""
    k = queue.keys
    by_hash: dict[str, set[str]] = {state: set() for state in STATES}
    for key in rdb.scan_iter(match=f"{k.job_prefix}*", count=1000):
        state = rdb.hget(key, "state")
        by_hash[state].add(key.removeprefix(k.job_prefix))
    for state in STATES:
        assert set(rdb.zrange(k.state_key(state), 0, -1)) == by_hash[state], state
    counts = queue.counts()
    assert counts.total == sum(len(ids) for ids in by_hash.values())
    # the failed payloads' byte count is the sum of the payloads of the jobs listed there
    kept = rdb.zrange(k.failed_payloads, 0, -1)
    assert set(kept) <= by_hash["failed"]
    assert int(rdb.get(k.failed_bytes) or 0) == sum(rdb.hstrlen(k.job(i), "payload") for i in kept)
    return {name: value for name, value in counts.as_dict().items() if name != "name"}


# -- listing -----------------------------------------------------------------------------


def test_waiting_jobs_list_in_pickup_order_page_by_page(queue: JobQueue, rdb: redis.Redis) -> None:
    for n, priority in enumerate(["low", "normal", "high", "normal", "high", "low", "normal"]):
        queue.admit(job(n, priority))
    seen, cursor = [], None
    for _ in range(10):
        page = service.list_jobs(queue, state="waiting", limit="3", cursor=cursor)
        assert len(page.jobs) <= 3 and page.counts.waiting == 7
        seen += [j.jobId for j in page.jobs]
        cursor = page.nextCursor
        if cursor is None:
            break
    # high before normal before low, FIFO within each: the order claims take them
    assert seen == ["job-2", "job-4", "job-1", "job-3", "job-6", "job-0", "job-5"]
    claimed = []
    while (outcome := queue.claim()).job is not None:
        claimed.append(outcome.job.id)
    assert claimed == seen


def test_finished_jobs_list_newest_first_and_fields_are_read_without_payload(queue: JobQueue) -> None:
    for n in range(5):
        queue.admit(job(n))
    for n in range(5):
        dead_letter(queue, f"job-{n}", reason=f"reason {n}")
    page = service.list_jobs(queue, state="failed", limit=None, cursor=None)
    assert [j.jobId for j in page.jobs] == ["job-4", "job-3", "job-2", "job-1", "job-0"]
    first = page.jobs[0]
    assert (first.state, first.failedReason, first.attemptsMade, first.attemptsMax) == ("failed", "reason 4", 1, 1)
    assert first.finishedOn and first.createdAt and first.processedOn
    assert page.nextCursor is None and page.counts.failed == 5 and page.counts.total == 5


def test_the_cursor_holds_its_place_while_jobs_come_and_go(queue: JobQueue) -> None:
    for n in range(10):
        queue.admit(job(n))
    page = service.list_jobs(queue, state="waiting", limit="4", cursor=None)
    assert [j.jobId for j in page.jobs] == ["job-0", "job-1", "job-2", "job-3"]
    # Meanwhile: the first two are claimed, one of the next page cancelled, new jobs arrive
    queue.claim()
    queue.claim()
    queue.cancel("job-5", service.CANCEL_REASON)
    queue.admit(job(10))
    queue.admit(job(11, "high"))  # ahead of the cursor: not on a later page
    rest = []
    cursor = page.nextCursor
    for _ in range(10):
        if not cursor:
            break
        page = service.list_jobs(queue, state="waiting", limit="4", cursor=cursor)
        rest += [j.jobId for j in page.jobs]
        cursor = page.nextCursor
    assert rest == ["job-4", "job-6", "job-7", "job-8", "job-9", "job-10"]


def test_a_cursor_of_equal_scores_pages_through_every_job_once(queue: JobQueue, rdb: redis.Redis) -> None:
    # Delayed jobs due at the same millisecond share a score: ties go by id
    for n in range(7):
        queue.admit(job(n))
    k = queue.keys
    for n in range(7):
        rdb.zrem(k.waiting, f"job-{n}")
        rdb.zadd(k.delayed, {f"job-{n}": 4_000_000_000_000})
        rdb.hset(k.job(f"job-{n}"), "state", "delayed")
    seen, cursor = [], None
    for _ in range(10):  # 4 pages; a cursor that repeats itself would go on for ever
        page = service.list_jobs(queue, state="delayed", limit="2", cursor=cursor)
        seen += [j.jobId for j in page.jobs]
        if not (cursor := page.nextCursor):
            break
    assert seen == [f"job-{n}" for n in range(7)]


def test_bad_listing_requests_are_400(queue: JobQueue) -> None:
    for state, limit, cursor in (("sleeping", None, None), ("failed", "0", None), ("failed", "101", None),
                                 ("failed", "ten", None), ("failed", None, "not-a-cursor"),
                                 ("failed", None, service.encode_cursor("waiting", ("1", "job-1"))),
                                 ("failed", None, service.encode_cursor("failed", ("nan", "job-1"))),
                                 ("failed", None, service.encode_cursor("failed", ("1", "../x")))):
        with pytest.raises(InvalidRequest):
            service.list_jobs(queue, state=state, limit=limit, cursor=cursor)


# -- retry -------------------------------------------------------------------------------


def test_a_retried_job_runs_again_with_fresh_attempts_and_its_history(queue: JobQueue, rdb: redis.Redis) -> None:
    queue.admit(job(1, "high", attempts=2))
    queue.admit(job(2))
    claimed = queue.claim().job
    assert claimed is not None and claimed.id == "job-1"
    assert queue.fail(claimed, "transient", retryable=True) == "delayed"
    time.sleep(0.01)
    again = queue.claim().job
    assert again is not None and again.id == "job-1"
    assert queue.fail(again, "asset not found: images/x.png", "Traceback: boom") == "failed"
    payload_bytes = rdb.hstrlen(queue.keys.job("job-1"), "payload")
    assert int(rdb.get(queue.keys.failed_bytes)) == payload_bytes
    failed_at = queue.status("job-1").finishedOn

    status = queue.retry("job-1")
    assert (status.state, status.attemptsMade, status.attemptsMax, status.failedReason) == ("waiting", 0, 2, None)
    assert status.finishedOn is None and status.processedOn is None
    assert [(h.attemptsMade, h.failedReason, h.finishedOn) for h in status.history] == [
        (2, "asset not found: images/x.png", failed_at)]
    assert status.history[0].retriedOn >= failed_at
    # the payload is a waiting job's again: out of the failed payloads' bytes
    assert rdb.get(queue.keys.failed_bytes) == "0" and rdb.zcard(queue.keys.failed_payloads) == 0
    assert rdb.llen(queue.keys.notify) >= 1
    assert exact(queue, rdb)["waiting"] == 2 and queue.counts().failed == 0
    # its original place: a high job before the normal one admitted after it
    rerun = queue.claim().job
    assert rerun is not None and rerun.id == "job-1" and rerun.attempts_made == 0
    assert json.loads(rdb.hget(queue.keys.job("job-1"), "payload"))["jobId"] == "job-1"
    queue.complete(rerun, {"dryRun": True})
    done = queue.status("job-1")
    assert done.state == "completed" and done.attemptsMade == 1 and len(done.history) == 1


def test_history_is_bounded_and_reasons_clipped(queue: JobQueue) -> None:
    queue.admit(job(1))
    long_reason = "é" * 400  # 800 bytes of UTF-8
    for n in range(HISTORY_MAX + 3):
        dead_letter(queue, "job-1", reason=f"{n} {long_reason}")
        status = queue.retry("job-1")
    assert len(status.history) == HISTORY_MAX
    assert status.history[0].failedReason.startswith("3 ") and status.history[-1].failedReason.startswith("12 ")
    assert all(len(h.failedReason.encode()) <= HISTORY_REASON_BYTES for h in status.history)
    assert all(h.failedReason.rstrip("é").endswith(" ") or h.failedReason.endswith("é") for h in status.history)


def test_retry_refuses_what_it_cannot_do(queue: JobQueue, rdb: redis.Redis, redis_url: str) -> None:
    with pytest.raises(JobNotFound):
        queue.retry("job-nope")
    queue.admit(job(1))
    with pytest.raises(Conflict) as waiting:
        queue.retry("job-1")
    assert waiting.value.details["state"] == "waiting"
    dead_letter(queue, "job-1")
    # the payload shed past the failed payloads' budget: nothing to run again
    payload = rdb.hget(queue.keys.job("job-1"), "payload")
    rdb.hdel(queue.keys.job("job-1"), "payload")
    with pytest.raises(Conflict, match="no longer holds its payload"):
        queue.retry("job-1")
    rdb.hset(queue.keys.job("job-1"), "payload", payload)
    # a full backlog: 429 like admission
    full = make_queue(redis_url, PREVIEW_QUEUE_MAX="1")
    try:
        full.admit(job(2))
        with pytest.raises(QueueFull):
            full.retry("job-1")
    finally:
        full.close()
        full.redis.close()
    assert queue.status("job-1").state == "failed"


# -- cancel ------------------------------------------------------------------------------


def test_cancel_takes_a_waiting_or_delayed_job_out_and_dead_letters_it(queue: JobQueue, rdb: redis.Redis) -> None:
    queue.admit(job(1))
    queue.admit(job(2, attempts=3))
    claimed = queue.claim().job
    assert claimed is not None and claimed.id == "job-1"
    with pytest.raises(Conflict, match="a running render cannot be cancelled") as active:
        queue.cancel("job-1", service.CANCEL_REASON)
    assert active.value.details["state"] == "active"
    second = queue.claim().job
    assert second is not None and queue.fail(second, "transient") == "delayed"
    cancelled = queue.cancel("job-2", service.CANCEL_REASON)
    assert (cancelled.state, cancelled.failedReason, cancelled.attemptsMade) == ("failed", "cancelled by request", 1)
    assert rdb.zcard(queue.keys.delayed) == 0 and rdb.zscore(queue.keys.failed, "job-2") is not None
    # kept like a dead letter: its payload counted, retryable
    assert int(rdb.get(queue.keys.failed_bytes)) == rdb.hstrlen(queue.keys.job("job-2"), "payload")
    assert exact(queue, rdb) == {"waiting": 0, "active": 1, "delayed": 0, "completed": 0, "failed": 1, "total": 2}
    with pytest.raises(Conflict):
        queue.cancel("job-2", service.CANCEL_REASON)
    with pytest.raises(JobNotFound):
        queue.cancel("job-nope", service.CANCEL_REASON)
    assert queue.retry("job-2").state == "waiting"
    assert queue.claim().job.id == "job-2"  # type: ignore[union-attr]


# -- concurrency -------------------------------------------------------------------------


def test_retry_and_cancel_racing_workers_and_recovery_keep_the_counts_exact(redis_url: str, rdb: redis.Redis) -> None:
    """Given 60 jobs, 8 worker threads claim and fail or complete them while 8 operator threads
    retry every failed job and cancel every waiting job they list, and a recovery thread runs
    with a short lease: each job ends in exactly one set, and its hash says that set."""
    jobs = 60
    setup = make_queue(redis_url, PREVIEW_LEASE_MS="1000")
    for n in range(jobs):
        setup.admit(job(n, random.choice(["low", "normal", "high"])))
    stop = threading.Event()
    tallies: dict[str, int] = {"retried": 0, "cancelled": 0, "refused": 0, "completed": 0, "failed": 0}
    lock = threading.Lock()

    def count(what: str) -> None:
        with lock:
            tallies[what] += 1

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        q = make_queue(redis_url, PREVIEW_LEASE_MS="1000")
        try:
            while not stop.is_set():
                claimed = q.claim().job
                if claimed is None:
                    time.sleep(0.001)
                    continue
                time.sleep(rng.uniform(0, 0.004))  # a render's worth of time, for the operators to meet
                try:
                    if rng.random() < 0.5:
                        q.fail(claimed, "render failed", "stack", retryable=False)
                        count("failed")
                    elif rng.random() < 0.9:
                        q.complete(claimed)
                        count("completed")
                    # else: abandoned, for recovery to take back when its lease runs out
                except LeaseLost:
                    pass
        finally:
            q.close()
            q.redis.close()

    def operator(seed: int) -> None:
        rng = random.Random(seed)
        q = make_queue(redis_url, PREVIEW_LEASE_MS="1000")
        try:
            while not stop.is_set():
                state = rng.choice(["failed", "waiting"])
                page = service.list_jobs(q, state=state, limit="10", cursor=None)
                for listed in page.jobs:
                    try:
                        if state == "failed" and rng.random() < 0.6:
                            q.retry(listed.jobId)
                            count("retried")
                        elif state == "waiting" and rng.random() < 0.3:
                            q.cancel(listed.jobId, service.CANCEL_REASON)
                            count("cancelled")
                    except (Conflict, JobNotFound):
                        count("refused")  # another thread got there first: refused, nothing changed
        finally:
            q.close()
            q.redis.close()

    def recoverer() -> None:
        q = make_queue(redis_url, PREVIEW_LEASE_MS="1000")
        try:
            while not stop.is_set():
                q.recover_stalled()
                time.sleep(0.05)
        finally:
            q.close()
            q.redis.close()

    with ThreadPoolExecutor(max_workers=17) as pool:
        futures = [pool.submit(worker, n) for n in range(8)] + [pool.submit(operator, 100 + n) for n in range(8)]
        futures.append(pool.submit(recoverer))
        time.sleep(3)
        stop.set()
        for future in futures:
            future.result()
    setup.recover_stalled()
    counts = exact(setup, rdb)
    print(f"\nafter 3 s: {tallies}; counts {counts}")
    assert counts["total"] == jobs
    assert tallies["retried"] > 0 and tallies["cancelled"] > 0
    for n in range(jobs):
        status = setup.status(f"job-{n}")
        assert status is not None
        if status.state == "failed" and status.failedReason != service.CANCEL_REASON:
            assert status.attemptsMade >= 1
    setup.close()
    setup.redis.close()


def test_two_operators_retrying_the_same_job_queue_it_once(redis_url: str, rdb: redis.Redis) -> None:
    setup = make_queue(redis_url)
    setup.admit(job(1))
    dead_letter(setup, "job-1")
    barrier = threading.Barrier(16)

    def attempt(_: int) -> str:
        q = make_queue(redis_url)
        barrier.wait()
        try:
            q.retry("job-1")
            return "retried"
        except Conflict:
            return "refused"
        finally:
            q.close()
            q.redis.close()

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(attempt, range(16)))
    assert results.count("retried") == 1 and results.count("refused") == 15
    assert exact(setup, rdb)["waiting"] == 1
    assert len(setup.status("job-1").history) == 1
    setup.close()
    setup.redis.close()
