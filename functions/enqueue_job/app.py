"""POST /api/preview/job: validate the payload and admit the job into the queue."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response

from shared import payload as _payload_contract  # noqa: F401 - compiled once, at cold start
from shared import service
from shared.api import base_url, json_response, lambda_entry, make_resolver
from shared.settings import get_settings

get_settings()  # a bad configuration fails the cold start with one clear message

app = make_resolver()


@app.post("/api/preview/job")
def enqueue_job() -> Response:
    event = app.current_event
    status, body = service.enqueue(event.body, bool(event.is_base64_encoded), base_url(app, get_settings().public_url))
    headers = {"Location": body.statusUrl} if status == 202 else {}
    return json_response(status, body, headers)


handler = lambda_entry(app, "enqueue_job")
