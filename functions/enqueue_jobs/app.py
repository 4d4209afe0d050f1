"""POST /api/preview/jobs: admit a batch of jobs, `{"jobs": [job, ...]}` with 1 to 100 jobs.

The answer is 200 with `{"results": [{"status", "body"}, ...]}`, one per job in the order
given, each the status and body POST /api/preview/job answers for that job alone: 202
admitted, 200 an identical replay, 400 invalid (every problem listed), 409 a conflict, 429 the
queue full (`retryAfter` in the body). The valid jobs are admitted in order, atomically
against the backlog limit; a jobId given twice answers as if sent twice. A body that is not
such an envelope is a 400 for the whole request and admits nothing; one over
PREVIEW_MAX_BODY_BYTES a 413; Redis unreachable a 503 (the same body again is safe: what was
admitted answers 200)."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response

from shared import api, contract, service, wiring
from shared.api import JOBS_ROUTE, lambda_entry, make_resolver

wiring.services()  # a bad configuration fails the cold start with one clear message
contract.validator()  # the schema is compiled once, at cold start

app = make_resolver()


@app.post(JOBS_ROUTE)
def enqueue_jobs() -> Response:
    services = wiring.services()
    event = app.current_event
    document = api.parse_batch_body(event.body, bool(event.is_base64_encoded), services.settings.max_body_bytes)
    results = service.enqueue_batch(document, settings=services.settings, queue=services.queue, kick=services.kick)
    return api.json_response(200, api.batch_answer(results, api.base_url(app, services.settings.public_url)))


handler = lambda_entry(app, "enqueue_jobs")
