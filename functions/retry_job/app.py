"""POST /api/preview/job/{jobId}/retry: put a failed job (a dead letter) back in the queue.

It waits again in its original place with fresh attempts; its failure (attempts, reason, when)
is appended to its `history`, which the status route shows. Only a failed job that still holds
its payload can be retried (409 otherwise, with its state); a full queue answers 429 with
Retry-After, as admission does."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response

from shared import service, wiring
from shared.api import JOB_ROUTE, check_id, json_response, lambda_entry, make_resolver

wiring.services()  # a bad configuration fails the cold start with one clear message

app = make_resolver()


@app.post(f"{JOB_ROUTE}/<jobId>/retry")
def retry_job(jobId: str) -> Response:  # noqa: N803 - the route's parameter name
    services = wiring.services()
    return json_response(202, service.retry_job(services.queue, services.kick, check_id(jobId)))


handler = lambda_entry(app, "retry_job")
