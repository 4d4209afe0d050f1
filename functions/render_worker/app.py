"""The render worker as a Lambda function: fired by a schedule and by the enqueue kick, it
renders jobs while the invocation has time left for one more, then returns a summary."""

from __future__ import annotations

from typing import Any

from shared import wiring
from shared.observability import lambda_handler, logger

wiring.services()  # a bad configuration fails the cold start with one clear message


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    trigger = event.get("source") or event.get("detail-type") or "direct"
    logger.thread_safe_append_keys(trigger=trigger)
    summary = wiring.services().worker.run_until_idle(remaining_ms=context.get_remaining_time_in_millis)
    logger.info("worker invocation done", extra=summary)
    return summary
