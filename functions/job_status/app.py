"""GET /api/preview/job/{jobId}/status: state, progress, attempts, timestamps, failure."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response

from shared import service
from shared.api import check_id, json_response, lambda_entry, make_resolver
from shared.settings import get_settings

get_settings()  # a bad configuration fails the cold start with one clear message

app = make_resolver()


@app.get("/api/preview/job/<jobId>/status")
def job_status(jobId: str) -> Response:  # noqa: N803 - the route's parameter name
    return json_response(200, service.job_status(check_id(jobId)))


handler = lambda_entry(app, "job_status")
