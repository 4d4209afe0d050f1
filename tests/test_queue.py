"""The queue core against a real Redis: admission, priorities, leases, retries, retention."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis

from shared.errors import Conflict, LeaseLost, QueueFull, RetentionFull
from shared.keys import QueueKeys
from shared.queue import JobQueue, backoff_delay_ms
from shared.settings import Settings


def make_queue(url: str, **env: str) -> JobQueue:
    settings = Settings.from_env({"REDIS_URL": url, **env})
    client = redis.Redis.from_url(url, decode_responses=True)
    return JobQueue(client, settings, redis.Redis.from_url(url, decode_responses=True))


def job(n: int | str, priority: str = "normal", **extra: Any) -> dict[str, Any]:
    return {"jobId": f"job-{n}", "projectId": "proj-1", "requestId": f"req-{n}", "dryRun": True,
            "priority": priority, "previewRequest": {"steps": [], "assets": [], "audio": {}}, **extra}


def test_admission_replay_conflict_and_full(redis_url: str) -> None:
    queue = make_queue(redis_url, PREVIEW_QUEUE_MAX="2")
    assert queue.admit(job(1)).created
    # The identical payload again is a replay of the same job, not a second job.
    replay = queue.admit(job(1))
    assert (replay.created, replay.state) == (False, "waiting")
    with pytest.raises(Conflict):
        queue.admit(job(1, priority="high"))
    queue.admit(job(2))
    with pytest.raises(QueueFull) as full:
        queue.admit(job(3))
    assert full.value.status_code == 429 and int(full.value.headers()["Retry-After"]) >= 1
    assert queue.counts().waiting == 2
    # A replay is still answered while the queue is full.
    assert not queue.admit(job(2)).created


def test_priorities_then_fifo(redis_url: str) -> None:
    queue = make_queue(redis_url, PREVIEW_QUEUE_MAX="100")
    order = [("l1", "low"), ("n1", "normal"), ("h1", "high"), ("n2", "normal"), ("h2", "high"), ("l2", "low")]
    for name, priority in order:
        queue.admit(job(name, priority))
    claimed = [queue.claim().job.id for _ in order]  # type: ignore[union-attr]
    assert claimed == ["job-h1", "job-h2", "job-n1", "job-n2", "job-l1", "job-l2"]
    assert queue.claim().job is None


def test_claim_heartbeat_progress_complete(redis_url: str) -> None:
    queue = make_queue(redis_url)
    queue.admit(job(1))
    claimed = queue.claim().job
    assert claimed is not None and claimed.payload == job(1)
    status = queue.status("job-1")
    assert status is not None and status.state == "active" and status.processedOn
    queue.heartbeat(claimed, progress=40)
    assert queue.status("job-1").progress == 40  # type: ignore[union-attr]
    queue.complete(claimed, {"files": 2})
    done = queue.status("job-1")
    assert done is not None
    assert (done.state, done.progress, done.attemptsMade) == ("completed", 100, 1)
    assert done.finishedOn and done.failedReason is None
    counts = queue.counts()
    assert (counts.waiting, counts.active, counts.completed, counts.total) == (0, 0, 1, 1)
    # A finished job cannot be heartbeaten or completed again by a stale worker.
    with pytest.raises(LeaseLost):
        queue.heartbeat(claimed)


def test_failures_back_off_then_dead_letter(redis_url: str) -> None:
    queue = make_queue(redis_url, PREVIEW_BACKOFF_MS="50", PREVIEW_JOB_ATTEMPTS="3")
    queue.admit(job(1))
    states = []
    for _ in range(3):
        claimed = None
        deadline = time.monotonic() + 5
        while claimed is None and time.monotonic() < deadline:
            outcome = queue.claim()
            claimed = outcome.job
            if claimed is None:
                # While backing off the job is delayed, and claim says when it is due.
                assert outcome.next_due_ms is not None
                assert queue.status("job-1").state == "delayed"  # type: ignore[union-attr]
                time.sleep(0.02)
        assert claimed is not None
        states.append(queue.fail(claimed, "encoder exploded", "Traceback: ...", retryable=True))
    assert states == ["delayed", "delayed", "failed"]
    status = queue.status("job-1")
    assert status is not None
    assert (status.state, status.attemptsMade, status.attemptsMax) == ("failed", 3, 3)
    assert status.failedReason == "encoder exploded"
    fields = queue.job_fields("job-1", "stacktrace")
    assert fields["stacktrace"] == "Traceback: ..."
    assert queue.counts().failed == 1


def test_permanent_failure_skips_retries(redis_url: str) -> None:
    queue = make_queue(redis_url)
    queue.admit(job(1))
    claimed = queue.claim().job
    assert claimed is not None
    assert queue.fail(claimed, "asset 'a' is not a PNG", retryable=False) == "failed"
    assert queue.status("job-1").attemptsMade == 1  # type: ignore[union-attr]


def test_backoff_grows_exponentially_with_jitter() -> None:
    delays = [backoff_delay_ms(1000, n) for n in (1, 2, 3, 4)]
    for n, delay in enumerate(delays):
        assert 800 * 2**n <= delay <= 1200 * 2**n
    assert len({backoff_delay_ms(1000, 1) for _ in range(20)}) > 1


@pytest.mark.slow
def test_expired_lease_returns_job_and_counts_attempt(redis_url: str) -> None:
    queue = make_queue(redis_url, PREVIEW_LEASE_MS="1000", PREVIEW_JOB_ATTEMPTS="2")
    queue.admit(job(1))
    first = queue.claim().job
    assert first is not None
    # Given a worker that dies without a heartbeat: nothing is recovered before the lease ends
    assert queue.recover_stalled() == ([], [])
    time.sleep(1.1)
    assert queue.recover_stalled() == (["job-1"], [])
    status = queue.status("job-1")
    assert status is not None and (status.state, status.attemptsMade) == ("waiting", 1)
    assert "lease expired" in (status.failedReason or "")
    # The dead worker's late calls are refused; the job belongs to the next claimer.
    with pytest.raises(LeaseLost):
        queue.complete(first)
    second = queue.claim().job
    assert second is not None and second.attempts_made == 1
    time.sleep(1.1)
    # The last attempt expiring too dead-letters the job.
    assert queue.recover_stalled() == ([], ["job-1"])
    assert queue.status("job-1").state == "failed"  # type: ignore[union-attr]


@pytest.mark.slow
def test_heartbeat_keeps_a_long_job_alive(redis_url: str) -> None:
    queue = make_queue(redis_url, PREVIEW_LEASE_MS="1000")
    queue.admit(job(1))
    claimed = queue.claim().job
    assert claimed is not None
    for _ in range(4):
        time.sleep(0.4)
        queue.heartbeat(claimed)
        assert queue.recover_stalled() == ([], [])
    queue.complete(claimed)
    assert queue.status("job-1").attemptsMade == 1  # type: ignore[union-attr]


def test_release_returns_job_without_an_attempt(redis_url: str) -> None:
    queue = make_queue(redis_url)
    queue.admit(job(1, "low"))
    queue.admit(job(2, "low"))
    claimed = queue.claim().job
    assert claimed is not None and claimed.id == "job-1"
    assert queue.release(claimed)
    status = queue.status("job-1")
    assert status is not None and (status.state, status.attemptsMade) == ("waiting", 0)
    # It keeps its place at the head of its priority.
    assert queue.claim().job.id == "job-1"  # type: ignore[union-attr]


def test_finished_jobs_at_their_cap_refuse_admission_rather_than_drop_a_record(redis_url: str,
                                                                               rdb: redis.Redis) -> None:
    queue = make_queue(redis_url, PREVIEW_QUEUE_MAX="1000", PREVIEW_KEEP_COMPLETED_COUNT="5",
                       PREVIEW_KEEP_FAILED_COUNT="3", PREVIEW_KEEP_COMPLETED_SECONDS="3600")
    for n in range(6):
        queue.admit(job(n))
        claimed = queue.claim().job
        assert claimed is not None
        if n % 2:
            queue.fail(claimed, "boom", retryable=False)
        else:
            queue.complete(claimed)
    # Given 3 failed jobs (the cap) all within their 24 h: one more job could fail and need a 4th
    with pytest.raises(RetentionFull) as full:
        queue.admit(job(6))
    assert full.value.status_code == 429 and full.value.code == "queue_full"
    # Retry-After: when the oldest failed job ages out (24 h from now)
    assert 86_000 <= int(full.value.headers()["Retry-After"]) <= 86_400
    assert full.value.details["limit"] == 3
    # Then nothing was dropped: every finished job is still readable, and a replay still answers
    assert all(queue.status(f"job-{n}") is not None for n in range(6))
    assert not queue.admit(job(0)).created
    assert len(rdb.keys(QueueKeys("preview-jobs").job_prefix + "*")) == 6


def test_lowering_a_cap_trims_the_oldest(redis_url: str, rdb: redis.Redis) -> None:
    # Ids that sort opposite to finishing order: ties broken by id would keep the wrong ones.
    queue = make_queue(redis_url, PREVIEW_QUEUE_MAX="1000")
    ids = [f"z{99 - n:02d}" for n in range(30)]
    for job_id in ids:
        queue.admit({**job(0), "jobId": job_id})
    for _ in ids[:-1]:
        queue.complete(queue.claim().job)  # type: ignore[arg-type]
    # Given a cap lowered below the records kept (a configuration change), memory stays bounded
    lowered = make_queue(redis_url, PREVIEW_QUEUE_MAX="1000", PREVIEW_KEEP_COMPLETED_COUNT="5")
    lowered.complete(lowered.claim().job)  # type: ignore[arg-type]
    kept = rdb.zrange(QueueKeys("preview-jobs").completed, 0, -1, withscores=True)
    assert [job_id for job_id, _ in kept] == ids[-5:]
    assert [score for _, score in kept] == sorted({score for _, score in kept})  # strictly increasing
    assert len(rdb.keys(QueueKeys("preview-jobs").job_prefix + "*")) == 5


@pytest.mark.slow
def test_retention_by_age(redis_url: str) -> None:
    queue = make_queue(redis_url, PREVIEW_KEEP_COMPLETED_SECONDS="1")
    queue.admit(job(1))
    queue.complete(queue.claim().job)  # type: ignore[arg-type]
    time.sleep(1.1)
    queue.admit(job(2))
    queue.complete(queue.claim().job)  # type: ignore[arg-type]
    assert queue.status("job-1") is None
    assert queue.counts().completed == 1


@pytest.mark.slow
def test_finished_jobs_age_out_while_nothing_else_finishes(redis_url: str) -> None:
    # The periodic recovery pass (health probe, long-running worker) applies retention too.
    queue = make_queue(redis_url, PREVIEW_KEEP_COMPLETED_SECONDS="1", PREVIEW_KEEP_FAILED_SECONDS="1")
    queue.admit(job(1))
    queue.complete(queue.claim().job)  # type: ignore[arg-type]
    queue.admit(job(2))
    queue.fail(queue.claim().job, "bad asset", retryable=False)  # type: ignore[arg-type]
    assert queue.recover_stalled() == ([], [])
    assert (queue.counts().completed, queue.counts().failed) == (1, 1)
    time.sleep(1.1)
    assert queue.recover_stalled() == ([], [])
    assert queue.status("job-1") is None and queue.status("job-2") is None
    assert (queue.counts().completed, queue.counts().failed) == (0, 0)


def test_every_key_shares_one_hash_tag(redis_url: str, rdb: redis.Redis) -> None:
    queue = make_queue(redis_url, PREVIEW_QUEUE_NAME="tagged", PREVIEW_BACKOFF_MS="60000")
    for n in range(3):
        queue.admit(job(n))
    a, b = queue.claim().job, queue.claim(worker_id="w1").job
    assert a and b
    queue.fail(a, "later", retryable=True)
    queue.record_worker("w1")
    queue.recover_stalled()
    keys = rdb.keys("*")
    # Redis Cluster hashes only the text between the first { and }: one tag, one slot.
    assert len(keys) >= 6 and all(key.startswith("pq:{tagged}:") for key in keys)


def test_idle_worker_wakes_on_admission(redis_url: str) -> None:
    queue = make_queue(redis_url)
    assert queue.claim().job is None
    woke: list[float] = []

    def waiter() -> None:
        start = time.monotonic()
        woke.append(queue.wait_for_work(5) and time.monotonic() - start)

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.2)
    queue.admit(job(1))
    thread.join(5)
    assert woke and woke[0] and woke[0] < 1.0
    assert queue.claim().job is not None


def test_worker_heartbeats_are_counted(redis_url: str) -> None:
    queue = make_queue(redis_url)
    now = int(time.time() * 1000)
    assert queue.workers_seen(now - 1000) == (0, None)
    queue.record_worker("w1")
    count, last = queue.workers_seen(now - 1000)
    assert count == 1 and last is not None and last >= now
    queue.forget_worker("w1")
    assert queue.workers_seen(now - 1000)[0] == 0


def test_oldest_waiting_looks_at_every_priority(redis_url: str) -> None:
    queue = make_queue(redis_url)
    queue.admit(job("old", "low"))
    time.sleep(0.05)
    queue.admit(job("new", "high"))
    oldest = queue.oldest_waiting_ms()
    assert oldest == int(queue.job_fields("job-old", "createdAt")["createdAt"] or 0)


def recover_every(queue: JobQueue, seconds: float, step: float = 0.1,
                  renew: str | None = None) -> tuple[list[str], list[str]]:
    """Run the recovery pass every `step` for `seconds` (as the workers' maintenance does),
    renewing `renew`'s liveness between passes; everything it took back."""
    requeued: list[str] = []
    failed: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if renew:
            queue.renew_liveness(renew)
        more, lost = queue.recover_stalled()
        requeued += more
        failed += lost
        time.sleep(step)
    return requeued, failed


@pytest.mark.slow
def test_the_job_of_a_worker_whose_liveness_lapses_goes_back_at_once(redis_url: str, rdb: redis.Redis) -> None:
    queue = make_queue(redis_url, PREVIEW_WORKER_LIVENESS_MS="600", PREVIEW_JOB_ATTEMPTS="2")
    queue.recover_stalled()
    queue.admit(job(1))
    claimed = queue.claim(worker_id="host:1:w1").job
    assert claimed is not None and claimed.fields["worker"] == "host:1:w1"
    # Given a worker that renews its liveness, then stops (killed) long before its 30 s lease ends
    assert recover_every(queue, 1.0, renew="host:1:w1") == ([], [])
    requeued, _ = recover_every(queue, 1.5)
    status = queue.status("job-1")
    assert requeued == ["job-1"] and status is not None
    assert (status.state, status.attemptsMade) == ("waiting", 1)
    assert status.failedReason == "worker host:1:w1 stopped (attempt 1)"
    assert queue.job_fields("job-1", "worker", "token") == {"worker": None, "token": None}
    assert rdb.zscore(QueueKeys("preview-jobs").alive, "host:1:w1") is None
    # The stopped worker's late calls are refused
    with pytest.raises(LeaseLost):
        queue.heartbeat(claimed)
    # The next claimer's attempt counts too: its loss dead-letters the job
    assert queue.claim(worker_id="host:2:w2").job is not None
    assert recover_every(queue, 1.2) == ([], ["job-1"])
    assert queue.status("job-1").failedReason == "worker host:2:w2 stopped (attempt 2)"  # type: ignore[union-attr]


@pytest.mark.slow
def test_a_worker_that_keeps_its_liveness_keeps_its_job(redis_url: str) -> None:
    queue = make_queue(redis_url, PREVIEW_WORKER_LIVENESS_MS="600")
    queue.admit(job(1))
    claimed = queue.claim(worker_id="w1").job
    assert claimed is not None
    assert recover_every(queue, 2.0, renew="w1") == ([], [])
    queue.complete(claimed)
    assert queue.status("job-1").attemptsMade == 1  # type: ignore[union-attr]


@pytest.mark.slow
def test_after_a_gap_in_the_checks_every_worker_gets_one_more_period(redis_url: str) -> None:
    queue = make_queue(redis_url, PREVIEW_WORKER_LIVENESS_MS="600")
    queue.recover_stalled()
    for n in (1, 2):
        queue.admit(job(n))
    assert queue.claim(worker_id="alive").job and queue.claim(worker_id="dead").job
    # Given Redis out of everyone's reach for longer than the liveness period: no renewal, no check
    time.sleep(1.0)
    # Then the first check takes nothing back, whose liveness deadline passed in the gap
    assert queue.recover_stalled() == ([], [])
    # And only the worker that does not renew within the extra period loses its job
    assert recover_every(queue, 1.2, renew="alive") == (["job-2"], [])
    assert queue.status("job-1").state == "active"  # type: ignore[union-attr]


@pytest.mark.slow
def test_a_claim_without_liveness_is_bound_by_its_lease_only(redis_url: str) -> None:
    queue = make_queue(redis_url, PREVIEW_WORKER_LIVENESS_MS="600", PREVIEW_LEASE_MS="1500")
    queue.recover_stalled()
    queue.admit(job(1))
    claimed = queue.claim().job  # a Lambda invocation's claim
    assert claimed is not None and "worker" not in claimed.fields
    assert recover_every(queue, 1.0) == ([], [])
    assert recover_every(queue, 1.0) == (["job-1"], [])
    assert "lease expired" in (queue.status("job-1").failedReason or "")  # type: ignore[union-attr]


def test_a_stopping_worker_ends_its_liveness(redis_url: str, rdb: redis.Redis) -> None:
    queue = make_queue(redis_url)
    queue.recover_stalled()
    queue.admit(job(1))
    # Given a worker that stops while a job it could not hand back is still active
    assert queue.claim(worker_id="w1").job is not None
    queue.forget_worker("w1")
    # Then the next recovery pass takes it back without waiting for the liveness period
    assert queue.recover_stalled() == (["job-1"], [])
    assert rdb.zcard(QueueKeys("preview-jobs").alive) == 0
    # And a worker that never claimed leaves nothing behind
    queue.forget_worker("w2")
    assert rdb.zcard(QueueKeys("preview-jobs").alive) == 0
