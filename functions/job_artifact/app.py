"""GET /api/preview/job/{jobId}/artifact: signed URLs of a completed job's files."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response

from shared import service
from shared.api import base_url, check_id, json_response, lambda_entry, make_resolver
from shared.settings import get_settings

get_settings()  # a bad configuration fails the cold start with one clear message

app = make_resolver()


@app.get("/api/preview/job/<jobId>/artifact")
def job_artifact(jobId: str) -> Response:  # noqa: N803 - the route's parameter name
    origin = base_url(app, get_settings().public_url)
    return json_response(200, service.job_artifact(check_id(jobId), origin))


handler = lambda_entry(app, "job_artifact")
