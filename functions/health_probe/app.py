"""Scheduled health probe: recovers expired leases, checks Redis, backlog and workers,
emits the queue gauges and logs one structured line."""

from __future__ import annotations

from typing import Any

from shared import service, wiring
from shared.observability import lambda_handler, logger

wiring.services()  # a bad configuration fails the cold start with one clear message


@lambda_handler
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    services = wiring.services()
    result = service.probe(services.queue, services.settings)
    log = logger.info if result["status"] == "healthy" else logger.error
    log("health probe", extra=result)
    return result
