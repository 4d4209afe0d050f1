"""POST /api/preview/job/{jobId}/cancel: cancel a job that has not started.

A waiting or delayed job leaves the queue and becomes failed with the reason "cancelled by
request" (kept for the failed jobs' retention period, like any dead letter; a retry runs it
after all). A job in any other state answers 409 with its state: a running render is not
cancelled."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response

from shared import service, wiring
from shared.api import JOB_ROUTE, check_id, json_response, lambda_entry, make_resolver

wiring.services()  # a bad configuration fails the cold start with one clear message

app = make_resolver()


@app.post(f"{JOB_ROUTE}/<jobId>/cancel")
def cancel_job(jobId: str) -> Response:  # noqa: N803 - the route's parameter name
    return json_response(200, service.cancel_job(wiring.services().queue, check_id(jobId)))


handler = lambda_entry(app, "cancel_job")
