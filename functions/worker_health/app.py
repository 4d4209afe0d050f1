"""GET /api/preview/worker/health: Redis, queue and workers; 200 healthy, 503 not."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response

from shared import service, wiring
from shared.api import WORKER_HEALTH_ROUTE, json_response, lambda_entry, make_resolver

wiring.services()  # a bad configuration fails the cold start with one clear message

app = make_resolver()


@app.get(WORKER_HEALTH_ROUTE)
def worker_health() -> Response:
    services = wiring.services()
    report = service.health(services.queue, services.settings)
    return json_response(service.health_status_code(report), report.as_json(exclude_none=True))


handler = lambda_entry(app, "worker_health")
