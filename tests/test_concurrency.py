"""Admission stays exact under concurrent clients: threads and separate processes."""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from shared.errors import QueueFull
from shared.queue import JobQueue
from shared.settings import Settings
from tests.conftest import load_event

CLIENTS = 200
LIMIT = 20


def payload(n: int) -> dict[str, Any]:
    return {"jobId": f"job-{n}", "projectId": "proj-1", "requestId": f"req-{n}", "dryRun": True,
            "previewRequest": {"steps": [], "assets": [], "audio": {}}}


def test_threads_admit_exactly_the_limit(redis_url: str) -> None:
    settings = Settings.from_env({"REDIS_URL": redis_url, "PREVIEW_QUEUE_MAX": str(LIMIT)})
    barrier = __import__("threading").Barrier(50)

    def attempt(n: int) -> str:
        # Each thread has its own connection so the scripts really interleave on the server.
        queue = JobQueue(redis.Redis.from_url(redis_url, decode_responses=True), settings)
        if n < 50:
            barrier.wait()
        try:
            queue.admit(payload(n))
            return "admitted"
        except QueueFull:
            return "full"
        finally:
            queue.redis.close()

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(attempt, range(CLIENTS)))
    assert results.count("admitted") == LIMIT
    assert results.count("full") == CLIENTS - LIMIT
    client = redis.Redis.from_url(redis_url)
    assert client.zcard("pq:{preview-jobs}:waiting") == LIMIT
    client.close()


def _enqueue_through_handler(args: tuple[int, str, Any]) -> int:
    n, url, start = args
    os.environ["REDIS_URL"] = url
    os.environ["PREVIEW_QUEUE_MAX"] = str(LIMIT)
    from functions.enqueue_job.app import handler
    from tests.conftest import LambdaContext

    event = load_event("enqueue_job", "minimal")
    event["body"] = json.dumps(payload(n))
    start.wait()
    return int(handler(event, LambdaContext())["statusCode"])


@pytest.mark.process
@pytest.mark.slow
def test_processes_through_the_handler_admit_exactly_the_limit(redis_url: str) -> None:
    # Given 8 processes each sending 25 enqueues through the real handler
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        start = manager.Event()
        with ctx.Pool(8) as pool:
            pending = pool.map_async(_enqueue_through_handler, [(n, redis_url, start) for n in range(CLIENTS)])
            start.set()
            codes = pending.get(timeout=120)
    # Then exactly the limit is admitted and every other request is told the queue is full
    assert codes.count(202) == LIMIT
    assert codes.count(429) == CLIENTS - LIMIT
