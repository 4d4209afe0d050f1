"""Drive the handler functions the way Lambda does: import `functions.<name>.app`, call
`handler(event, context)` with the fixtures under events/."""

from __future__ import annotations

import importlib
import json
from typing import Any

from shared import wiring
from tests.conftest import EVENTS, LambdaContext, load_event

EXPECTED: dict[str, dict[str, Any]] = {
    k: v for k, v in json.loads((EVENTS / "expected.json").read_text()).items() if not k.startswith("_")
}


def invoke(function: str, event: dict[str, Any]) -> dict[str, Any]:
    module = importlib.import_module(f"functions.{function}.app")
    return module.handler(event, LambdaContext(function))


def invoke_fixture(function: str, case: str) -> dict[str, Any]:
    return invoke(function, load_event(function, case))


def body(response: dict[str, Any]) -> Any:
    return json.loads(response["body"])


def run_worker_until_idle() -> dict[str, Any]:
    return wiring.services().new_worker().run_until_idle()


def fill_queue(redis_url: str, limit: int) -> None:
    """Admit `limit` jobs straight into the default queue, so the next admission finds it full."""
    import redis

    from shared.queue import JobQueue
    from shared.settings import Settings

    settings = Settings.from_env({"REDIS_URL": redis_url, "PREVIEW_QUEUE_MAX": str(limit)})
    queue = JobQueue(redis.Redis.from_url(redis_url, decode_responses=True), settings)
    try:
        for n in range(limit):
            queue.admit({"jobId": f"fill-{n}", "projectId": "fill", "requestId": f"fill-{n}", "dryRun": True,
                         "previewRequest": {"steps": [], "assets": [], "audio": {}}})
    finally:
        queue.close()
        queue.redis.close()


def dead_letter(job_id: str) -> None:
    """Claim jobs until `job_id` is claimed and fail it for good (a dead letter with a stack
    trace); the others go back to waiting."""
    queue = wiring.services().queue
    others = []
    while (claimed := queue.claim().job) is not None and claimed.id != job_id:
        others.append(claimed)
    assert claimed is not None, f"{job_id} is not waiting"
    queue.fail(claimed, f"asset 'img-1' not found: images/missing.png (job {job_id})",
               'Traceback (most recent call last):\n  File "shared/render/assets.py", line 1, in load\n'
               "InvalidAsset: asset 'img-1' not found", retryable=False)
    for other in others:
        queue.release(other)


def apply_given(steps: list[str]) -> None:
    for step in steps:
        kind, _, arg = step.partition(":")
        if kind == "enqueue":
            assert invoke_fixture("enqueue_job", arg)["statusCode"] == 202
        elif kind == "worker-heartbeat":
            wiring.services().queue.record_worker("fixture-worker")
        elif kind == "fill-queue":
            settings = wiring.services().settings
            fill_queue(settings.redis_url, settings.queue_max)
        elif kind == "render":
            run_worker_until_idle()
            status = wiring.services().queue.status(arg)
            assert status is not None and status.state == "completed", status
        elif kind == "dead-letter":
            dead_letter(arg)
        else:
            raise AssertionError(f"unknown given step {step!r}")
