"""`service.enqueue_many` on a real Redis: each document answered in its place exactly as
`service.enqueue` answers it alone, in the same order."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import redis

from shared import service
from shared.errors import Conflict, InvalidPayload, PreviewError, QueueFull
from shared.models import AdmitResult
from shared.queue import JobQueue
from shared.settings import Settings

pytestmark = pytest.mark.redis


def job(job_id: str, title: str = "Fold") -> dict[str, Any]:
    return {"jobId": job_id, "projectId": "proj-bulk", "requestId": f"req-{job_id}", "dryRun": True,
            "previewRequest": {"steps": [{"title": title, "text": "Fold the strip.", "durationSec": 3}],
                               "assets": [], "audio": {}}}


def documents() -> list[Any]:
    invalid = job("bad-1")
    del invalid["previewRequest"]["steps"]
    return [
        job("a"),
        invalid,
        job("b"),
        job("a"),                 # identical replay of the first
        job("b", title="Other"),  # the same jobId, another payload: a conflict
        "not an object",
        job("c"),
        job("d"),                 # past PREVIEW_QUEUE_MAX=3
        job("c"),                 # a replay still answers, the queue full or not
    ]


def summary(answer: AdmitResult | PreviewError) -> tuple[str, Any]:
    if isinstance(answer, AdmitResult):
        return "admitted", (answer.jobId, answer.created, answer.state)
    return type(answer).__name__, str(answer)


def test_each_job_is_answered_as_enqueue_answers_it_alone(redis_url: str) -> None:
    settings = Settings.from_env({"REDIS_URL": redis_url, "PREVIEW_QUEUE_MAX": "3"})
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    queue = JobQueue(client, settings)
    kicked: list[str] = []
    # Given the answers of one `enqueue` call per document
    alone: list[tuple[str, Any]] = []
    for document in documents():
        try:
            alone.append(summary(service.enqueue(copy.deepcopy(document), settings=settings, queue=queue,
                                                 kick=lambda _id: None)))
        except PreviewError as exc:
            alone.append(summary(exc))
    stored_alone = {key: client.hgetall(key) for key in client.scan_iter("pq:*:job:*")}
    client.flushall()
    # When the same documents come in one call
    answers = service.enqueue_many(documents(), settings=settings, queue=queue,
                                   kick=lambda job_id: kicked.append(job_id))
    # Then each gets the same answer in its place, and the same jobs are stored
    assert [summary(a) for a in answers] == alone
    kinds = [type(a) for a in answers]
    assert kinds == [AdmitResult, InvalidPayload, AdmitResult, AdmitResult, Conflict, InvalidPayload, AdmitResult,
                     QueueFull, AdmitResult]
    assert [a.created for a in answers if isinstance(a, AdmitResult)] == [True, True, False, True, False]
    stored = {key: client.hgetall(key) for key in client.scan_iter("pq:*:job:*")}
    assert sorted(stored) == sorted(stored_alone)
    # Only the new jobs nudge the worker, once each
    assert kicked == ["a", "b", "c"]
    client.close()


def test_nothing_valid_admits_nothing(redis_url: str) -> None:
    settings = Settings.from_env({"REDIS_URL": redis_url})
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    answers = service.enqueue_many([{}, []], settings=settings, queue=JobQueue(client, settings),
                                   kick=lambda _id: None)
    assert [type(a) for a in answers] == [InvalidPayload, InvalidPayload]
    assert service.queue_metrics(JobQueue(client, settings)).total == 0
    client.close()
