"""GET /api/preview/jobs?state=&limit=&cursor=: a page of the jobs in one state, for operators.

`state` is waiting (the default), active, delayed, completed or failed (the dead letters);
waiting, delayed and active jobs come in the order a worker takes them or their lease runs out,
completed and failed ones newest first. `limit` is 1-100 (20). `nextCursor` of an answer,
passed as `cursor`, gives the next page; it holds its place while jobs come and go. `counts`
has every state's count, read at the same instant as the page."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response

from shared import service, wiring
from shared.api import JOBS_ROUTE, json_response, lambda_entry, make_resolver

wiring.services()  # a bad configuration fails the cold start with one clear message

app = make_resolver()


@app.get(JOBS_ROUTE)
def list_jobs() -> Response:
    event = app.current_event
    page = service.list_jobs(wiring.services().queue, state=event.get_query_string_value("state"),
                             limit=event.get_query_string_value("limit"),
                             cursor=event.get_query_string_value("cursor"))
    return json_response(200, page)


handler = lambda_entry(app, "list_jobs")
