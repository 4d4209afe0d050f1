"""GET /api/preview/job/{jobId}: one job for operators: its status and history, the stack
trace of its failure, the worker holding it while active, and a summary of what it asks for
while the job keeps its payload (a completed job does not)."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response

from shared import service, wiring
from shared.api import JOB_ROUTE, check_id, json_response, lambda_entry, make_resolver

wiring.services()  # a bad configuration fails the cold start with one clear message

app = make_resolver()


@app.get(f"{JOB_ROUTE}/<jobId>")
def job_detail(jobId: str) -> Response:  # noqa: N803 - the route's parameter name
    return json_response(200, service.job_detail(wiring.services().queue, check_id(jobId)))


handler = lambda_entry(app, "job_detail")
