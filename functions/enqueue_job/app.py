"""POST /api/preview/job: validate the payload and admit the job into the queue."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response

from shared import contract, service, wiring
from shared.api import JOB_ROUTE, base_url, job_url, json_response, lambda_entry, make_resolver, parse_body
from shared.models import EnqueueResponse

wiring.services()  # a bad configuration fails the cold start with one clear message
contract.validator()  # the schema is compiled once, at cold start

app = make_resolver()


@app.post(JOB_ROUTE)
def enqueue_job() -> Response:
    services = wiring.services()
    event = app.current_event
    document = parse_body(event.body, bool(event.is_base64_encoded), services.settings.max_body_bytes)
    result = service.enqueue(document, settings=services.settings, queue=services.queue, kick=services.kick)
    origin = base_url(app, services.settings.public_url)
    body = EnqueueResponse(
        jobId=result.jobId,
        status="queued" if result.created else result.state,
        state=result.state,
        statusUrl=job_url(origin, result.jobId, "status"),
        artifactUrl=job_url(origin, result.jobId, "artifact"),
    )
    if result.created:
        return json_response(202, body, {"Location": body.statusUrl})
    return json_response(200, body)


handler = lambda_entry(app, "enqueue_job")
