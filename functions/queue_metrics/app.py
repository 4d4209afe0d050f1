"""GET /api/preview/queue/metrics: jobs per state and in total."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response

from shared import service, wiring
from shared.api import QUEUE_METRICS_ROUTE, json_response, lambda_entry, make_resolver

wiring.services()  # a bad configuration fails the cold start with one clear message

app = make_resolver()


@app.get(QUEUE_METRICS_ROUTE)
def queue_metrics() -> Response:
    return json_response(200, service.queue_metrics(wiring.services().queue))


handler = lambda_entry(app, "queue_metrics")
