"""After admitting a job, nudge the render worker with an asynchronous invoke so a job need
not wait for the worker's schedule. Off when RENDER_WORKER_FUNCTION is empty."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from shared.observability import logger, record_failure
from shared.settings import Settings

# The emulator installs its own delivery; in Lambda the default goes through the Lambda API.
Invoker = Callable[[str, dict[str, Any]], None]
_invoker: Invoker | None = None


def set_invoker(invoker: Invoker | None) -> None:
    global _invoker
    _invoker = invoker


@lru_cache(maxsize=1)
def _lambda_client() -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("lambda", config=Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}))


def _invoke_lambda(function: str, event: dict[str, Any]) -> None:
    _lambda_client().invoke(FunctionName=function, InvocationType="Event", Payload=json.dumps(event).encode())


def kick_worker(settings: Settings, job_id: str) -> None:
    """Best effort: the job is already safely queued, so a failed kick only costs latency."""
    function = settings.render_worker_function
    if not function:
        return
    event = {"source": "preview.enqueue", "detail-type": "job-admitted", "detail": {"jobId": job_id}}
    try:
        (_invoker or _invoke_lambda)(function, event)
    except Exception:
        record_failure("kick")
        logger.warning("worker kick failed; the schedule will pick the job up", extra={"jobId": job_id})
