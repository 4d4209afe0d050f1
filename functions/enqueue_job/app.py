"""POST /api/preview/job: validate the payload and admit the job into the queue."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response

from shared import contract, service, wiring
from shared.api import JOB_ROUTE, admission_answer, base_url, json_response, lambda_entry, make_resolver, parse_body

wiring.services()  # a bad configuration fails the cold start with one clear message
contract.validator()  # the schema is compiled once, at cold start

app = make_resolver()


@app.post(JOB_ROUTE)
def enqueue_job() -> Response:
    services = wiring.services()
    event = app.current_event
    document = parse_body(event.body, bool(event.is_base64_encoded), services.settings.max_body_bytes)
    result = service.enqueue(document, settings=services.settings, queue=services.queue, kick=services.kick)
    status, body = admission_answer(result, base_url(app, services.settings.public_url))
    return json_response(status, body, {"Location": body.statusUrl} if status == 202 else {})


handler = lambda_entry(app, "enqueue_job")
