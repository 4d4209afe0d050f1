"""GET /api/preview/job/{jobId}/artifact: signed URLs of a completed job's files."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response

from shared import service, wiring
from shared.api import JOB_ROUTE, base_url, check_id, json_response, lambda_entry, make_resolver

wiring.services()  # a bad configuration fails the cold start with one clear message

app = make_resolver()


@app.get(f"{JOB_ROUTE}/<jobId>/artifact")
def job_artifact(jobId: str) -> Response:  # noqa: N803 - the route's parameter name
    services = wiring.services()
    settings = services.settings
    artifact = service.job_artifact(services.queue, services.store, check_id(jobId),
                                    origin=base_url(app, settings.public_url), ttl_seconds=settings.url_ttl_seconds)
    return json_response(200, artifact)


handler = lambda_entry(app, "job_artifact")
