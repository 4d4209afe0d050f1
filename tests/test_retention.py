"""Finished jobs stay readable for their retention period under any burst, in bounded memory:
completed jobs shed their payload, failed ones keep it within a byte budget, the count caps
come from PREVIEW_FINISHED_MEMORY_MB, and a cap reached by recent records answers 429."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from shared import contract, retention, wiring
from shared.keys import QueueKeys
from shared.queue import JobQueue
from shared.settings import Settings
from tests.conftest import load_event
from tests.handlers import body, invoke

KEYS = QueueKeys("preview-jobs")


@pytest.fixture
def env(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PREVIEW_QUEUE_MAX", "1000")
    wiring.reset()
    yield


def queue_with(redis_url: str, **env: str) -> JobQueue:
    settings = Settings.from_env({"REDIS_URL": redis_url, "PREVIEW_QUEUE_MAX": "1000", **env})
    return JobQueue(redis.Redis.from_url(redis_url, decode_responses=True), settings)


def small_job(job_id: str) -> dict[str, Any]:
    return {"jobId": job_id, "projectId": "proj-burst", "requestId": f"req-{job_id}", "dryRun": True,
            "previewRequest": {"steps": [{"title": "One", "text": "A step"}], "assets": [], "audio": {}}}


def enqueue(job: dict[str, Any]) -> dict[str, Any]:
    event = load_event("enqueue_job", "success")
    event["body"] = json.dumps(job)
    return invoke("enqueue_job", event)


def status(job_id: str) -> dict[str, Any]:
    event = load_event("job_status", "success")
    event["rawPath"] = f"/api/preview/job/{job_id}/status"
    event["pathParameters"] = {"jobId": job_id}
    return invoke("job_status", event)


def finish_all(queue: JobQueue, fail_every: int = 0) -> None:
    """Every waiting job claimed and finished, as fast workers would (every `fail_every`-th fails)."""
    n = 0
    while (job := queue.claim().job) is not None:
        n += 1
        if fail_every and n % fail_every == 0:
            queue.fail(job, "asset 'a' is not a PNG", retryable=False)
        else:
            queue.complete(job, {"dryRun": True})


def largest_job(n: int, settings: Settings) -> dict[str, Any]:
    """The largest payload admission allows: ids of 128 characters, a body of the full limit."""
    def ident(prefix: str) -> str:
        return f"{prefix}-{n:06d}-".ljust(128, "x")

    job = {"jobId": ident("job"), "projectId": ident("proj"), "requestId": ident("req"), "dryRun": True,
           "previewRequest": {"steps": [], "assets": [], "audio": {}, "metadata": {"notes": ""}}}
    room = settings.max_body_bytes - len(json.dumps(job, separators=(",", ":")).encode())
    job["previewRequest"]["metadata"]["notes"] = "n" * room
    return job


def used_memory(rdb: redis.Redis) -> int:
    return int(rdb.info("memory")["used_memory"])


def test_a_burst_of_501_jobs_is_readable_afterwards(env: None, redis_url: str, rdb: redis.Redis) -> None:
    # Given 501 jobs admitted through the handler in one burst and finished at once (1 in 10 failing)
    for n in range(501):
        assert enqueue(small_job(f"burst-{n}"))["statusCode"] == 202
    queue = wiring.services().queue
    finish_all(queue, fail_every=10)
    # Then the status route answers each one with its final state (the old count cap of 100 kept 101)
    states = [body(r)["state"] for r in (status(f"burst-{n}") for n in range(501)) if r["statusCode"] == 200]
    assert len(states) == 501
    assert (states.count("completed"), states.count("failed")) == (451, 50)
    # And a completed job keeps no payload, a failed one keeps it (for a retry)
    assert rdb.hget(KEYS.job("burst-0"), "payload") is None and rdb.hget(KEYS.job("burst-0"), "hash")
    assert json.loads(rdb.hget(KEYS.job("burst-9"), "payload") or "{}")["jobId"] == "burst-9"
    record = rdb.memory_usage(KEYS.job("burst-0"), samples=0)
    print(f"\nburst: 501 of 501 readable; used_memory {used_memory(rdb) / 1e6:.2f} MB, "
          f"completed record {record} B (MEMORY USAGE)")


def test_replay_and_conflict_after_the_payload_is_gone(env: None, redis_url: str) -> None:
    job = small_job("replayed")
    assert enqueue(job)["statusCode"] == 202
    finish_all(wiring.services().queue)
    replay = enqueue(job)
    assert replay["statusCode"] == 200 and body(replay)["state"] == "completed"
    changed = enqueue({**job, "requestId": "req-other"})
    assert changed["statusCode"] == 409 and body(changed)["state"] == "completed"


def test_a_cap_reached_by_recent_records_answers_429(redis_url: str, rdb: redis.Redis,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a budget of 25 KiB: room for 5 completed records of the worst case (the failed cap set apart)
    monkeypatch.setenv("PREVIEW_FINISHED_MEMORY_MB", str(25 / 1024))
    monkeypatch.setenv("PREVIEW_KEEP_FAILED_COUNT", "100")
    monkeypatch.setenv("PREVIEW_QUEUE_MAX", "1000")
    wiring.reset()
    assert wiring.services().queue.caps.completed == 5
    for n in range(5):
        assert enqueue(small_job(f"kept-{n}"))["statusCode"] == 202
    finish_all(wiring.services().queue)
    # When one more job comes while all 5 are within their hour
    response = enqueue(small_job("one-too-many"))
    # Then it is refused with when to come back, and every record is still there
    assert response["statusCode"] == 429
    assert body(response) == {"error": "queue_full", "message": body(response)["message"],
                              "retryAfter": int(response["headers"]["Retry-After"]), "limit": 5}
    assert 3500 <= int(response["headers"]["Retry-After"]) <= 3600
    assert all(status(f"kept-{n}")["statusCode"] == 200 for n in range(5))
    assert status("one-too-many")["statusCode"] == 404


@pytest.mark.slow
def test_room_comes_back_as_records_age_out(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    queue = queue_with(redis_url, PREVIEW_KEEP_COMPLETED_COUNT="3", PREVIEW_KEEP_COMPLETED_SECONDS="1")
    for n in range(3):
        queue.admit(small_job(f"aging-{n}"))
    finish_all(queue)
    with pytest.raises(Exception, match="keeps 3 completed jobs"):
        queue.admit(small_job("later"))
    time.sleep(1.1)
    assert queue.admit(small_job("later")).created
    assert queue.status("aging-0") is None


def test_failed_payloads_stay_within_their_byte_budget(redis_url: str, rdb: redis.Redis) -> None:
    # Given a budget whose failed-payload share (a quarter) holds about 4 of the largest payloads
    settings = Settings()
    budget_mb = 4.5 * settings.max_body_bytes * 4 / 1024 / 1024
    queue = queue_with(redis_url, PREVIEW_FINISHED_MEMORY_MB=str(budget_mb))
    ids = []
    for n in range(10):
        job = largest_job(n, settings)
        ids.append(job["jobId"])
        queue.admit(job)
        claimed = queue.claim().job
        assert claimed is not None
        queue.fail(claimed, "bad asset " + "é" * 5000, "Traceback " + "t" * 10_000, retryable=False)
    # Then the newest failed jobs keep their payloads within the budget, the oldest shed theirs
    kept = [job_id for job_id in ids if rdb.hexists(KEYS.job(job_id), "payload")]
    assert kept == ids[-4:]
    held = sum(rdb.hstrlen(KEYS.job(job_id), "payload") for job_id in kept)
    assert held == int(rdb.get(KEYS.failed_bytes) or 0) <= queue.caps.failed_payload_bytes
    # And every failed job still says why, its reason and stack trace clipped to 4 KiB
    for job_id in ids:
        fields = queue.job_fields(job_id, "state", "failedReason", "stacktrace")
        assert fields["state"] == "failed"
        assert 4000 < len((fields["failedReason"] or "").encode()) <= retention.REASON_MAX_BYTES
        assert (fields["stacktrace"] or "").endswith("t" * 100)
        assert len((fields["stacktrace"] or "").encode()) <= retention.STACKTRACE_MAX_BYTES
    # And retention dropping failed jobs gives their bytes back
    lowered = queue_with(redis_url, PREVIEW_FINISHED_MEMORY_MB=str(budget_mb), PREVIEW_KEEP_FAILED_COUNT="2")
    lowered.recover_stalled()
    assert int(rdb.get(KEYS.failed_bytes) or 0) == sum(
        rdb.hstrlen(KEYS.job(job_id), "payload") for job_id in ids[-2:])


def test_worst_case_memory_per_thousand_finished_jobs(redis_url: str, rdb: redis.Redis) -> None:
    """The record sizes shared/retention.py sizes the caps with, measured on the largest records."""
    settings = Settings()
    queue = queue_with(redis_url)
    assert contract.validate_payload(json.loads(json.dumps(largest_job(0, settings))), settings)
    assert len(json.dumps(largest_job(0, settings), separators=(",", ":")).encode()) == settings.max_body_bytes

    def thousand(outcome: str) -> tuple[float, int]:
        rdb.flushall()
        before = used_memory(rdb)
        for n in range(1000):
            queue.admit(largest_job(n, settings))
            job = queue.claim().job
            assert job is not None
            if outcome == "completed":
                queue.complete(job, {"dryRun": True})
            else:
                queue.fail(job, "r" * 10_000, "s" * 10_000, retryable=False)
        rdb.delete(KEYS.seq, KEYS.notify, KEYS.checked)
        return (used_memory(rdb) - before) / 1000, int(rdb.memory_usage(KEYS.job(largest_job(999, settings)["jobId"]),
                                                                        samples=0) or 0)

    completed, completed_hash = thousand("completed")
    failed, failed_hash = thousand("failed")
    payloads = int(rdb.get(KEYS.failed_bytes) or 0)
    failed_records = failed - payloads / 1000
    print(f"\nper 1,000 finished jobs (largest ids and payload): completed {completed * 1000 / 2**20:.2f} MiB "
          f"({completed:.0f} B each, hash {completed_hash} B); failed {failed_records * 1000 / 2**20:.2f} MiB "
          f"({failed_records:.0f} B each without payload) + payloads kept {payloads / 2**20:.2f} MiB "
          f"(budget {queue.caps.failed_payload_bytes / 2**20:.0f} MiB); caps {queue.caps}")
    assert completed <= retention.COMPLETED_RECORD_BYTES
    assert failed_records <= retention.FAILED_RECORD_BYTES
    assert payloads <= queue.caps.failed_payload_bytes


def test_health_says_when_finished_jobs_hold_admission_back(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREVIEW_KEEP_FAILED_COUNT", "2")
    wiring.reset()
    queue = wiring.services().queue
    queue.record_worker("w-1")
    for n in range(2):
        assert enqueue(small_job(f"bad-{n}"))["statusCode"] == 202
    finish_all(queue, fail_every=1)
    response = invoke("worker_health", load_event("worker_health", "healthy"))
    assert response["statusCode"] == 503
    assert body(response)["problems"] == [
        "2 failed jobs kept, the cap PREVIEW_FINISHED_MEMORY_MB gives is 2: admission answers 429 until the oldest "
        "age out"]
