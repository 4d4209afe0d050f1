"""The render worker as a Lambda function: fired by a schedule and by the enqueue kick, it
renders jobs while the invocation has time left for one more, then returns a summary."""

from __future__ import annotations

from typing import Any

from shared.observability import lambda_handler, logger
from shared.settings import get_settings
from shared.worker import Worker, build_worker

get_settings()  # a bad configuration fails the cold start with one clear message


_cached: list[Worker] = []


def _worker() -> Worker:
    # One worker per execution environment: a stable id in the health report across warm
    # invocations, and its lease renewer reused rather than started again.
    settings = get_settings()
    if not _cached or _cached[0].settings is not settings:
        _cached[:] = [build_worker(settings)]
    return _cached[0]


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    trigger = event.get("source") or event.get("detail-type") or "direct"
    logger.thread_safe_append_keys(trigger=trigger)
    summary = _worker().run_until_idle(remaining_ms=context.get_remaining_time_in_millis)
    logger.info("worker invocation done", extra=summary)
    return summary
