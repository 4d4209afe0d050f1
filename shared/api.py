"""HTTP plumbing shared by the handler functions: the route paths, request body decoding,
one error table for every route, JSON responses, absolute URLs, and the Lambda entry
(logging context, request metric). Routes are declared in template.yaml; the handlers match
the same paths, built from the route constants here (a test holds the two together)."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import sys
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response

from shared.contract import ID_RULE, is_id
from shared.errors import InvalidPayload, InvalidRequest, PayloadTooLarge, PreviewError
from shared.models import AdmitResult, ApiModel, EnqueueResponse
from shared.observability import ColdStart, invocation_context, logger, record_failure, record_request

JSON = "application/json"
JOB_ROUTE = "/api/preview/job"
QUEUE_METRICS_ROUTE = "/api/preview/queue/metrics"
WORKER_HEALTH_ROUTE = "/api/preview/worker/health"
# The collection: GET lists jobs by state (operators), POST admits a batch of jobs; one job's
# detail, retry and cancel are under JOB_ROUTE.
JOBS_ROUTE = "/api/preview/jobs"


def job_url(origin: str, job_id: str, what: str) -> str:
    """The absolute URL of a job's `status` or `artifact` route."""
    return f"{origin}{JOB_ROUTE}/{job_id}/{what}"


def admission_answer(result: AdmitResult, origin: str) -> tuple[int, EnqueueResponse]:
    """What enqueue answers: 202 for a new job, 200 with the existing one for a replay."""
    body = EnqueueResponse(
        jobId=result.jobId,
        status="queued" if result.created else result.state,
        state=result.state,
        statusUrl=job_url(origin, result.jobId, "status"),
        artifactUrl=job_url(origin, result.jobId, "artifact"),
    )
    return (202 if result.created else 200), body


def batch_answer(results: list[AdmitResult | PreviewError], origin: str) -> dict[str, Any]:
    """What the batch route answers: `{"results": [{"status", "body"}, ...]}` in the order of
    the jobs, each the status and body POST JOB_ROUTE answers for that job alone (its
    Retry-After is the body's `retryAfter`, its Location the body's `statusUrl`)."""
    items: list[dict[str, Any]] = []
    for result in results:
        if isinstance(result, AdmitResult):
            status, body = admission_answer(result, origin)
            items.append({"status": status, "body": body.as_json()})
        else:
            items.append({"status": result.status_code, "body": result.body()})
    return {"results": items}


def json_response(status: int, body: ApiModel | dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    payload = body.as_json() if isinstance(body, ApiModel) else body
    return Response(
        status_code=status,
        content_type=JSON,
        body=json.dumps(payload, separators=(",", ":")),
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def check_id(value: str, name: str = "jobId") -> str:
    if not is_id(value):
        raise InvalidRequest(
            f"{name} {ID_RULE}",
            errors=[{"path": f"/{name}", "message": "malformed id"}],
        )
    return value


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON, and NaN slips through every numeric range check.
    raise json.JSONDecodeError(f"{name} is not a JSON value", name, 0)


class _NumberRefused(ValueError):
    """A JSON number this service cannot hold, with the reason as its message."""


_MAX_DIGITS = sys.get_int_max_str_digits() or 4300


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400 reads as infinity
        raise _NumberRefused(f"number {text[:40]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_DIGITS:
        raise _NumberRefused(f"an integer has more than {_MAX_DIGITS} digits")
    return int(text)


def parse_body(body: str | bytes | None, is_base64: bool, limit: int) -> dict[str, Any]:
    """Decode an HTTP body into a JSON object, enforcing the size limit before parsing."""
    if body is None or body == "":
        raise InvalidRequest("request body is empty; send the job as a JSON object")
    raw: bytes
    if is_base64:
        if len(body) > limit * 4 // 3 + 4:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes", limit=limit)
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest("request body is not valid base64") from None
    else:
        raw = body.encode("utf-8") if isinstance(body, str) else body
    if len(raw) > limit:
        raise PayloadTooLarge(f"request body exceeds {limit} bytes", limit=limit)
    try:
        document = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float,
                              parse_int=_bounded_int)
    except _NumberRefused as exc:
        raise InvalidRequest(f"request body holds a number this service cannot take: {exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest("request body is nested too deeply") from None
    if not isinstance(document, dict):
        raise InvalidPayload(
            "the job must be a JSON object", [{"path": "/", "message": "must be an object"}]
        )
    return document


def parse_batch_body(body: str | bytes | None, is_base64: bool, limit: int) -> dict[str, Any]:
    """`parse_body` for the batch route: a body that is no JSON object is a malformed
    envelope (`InvalidRequest`), not an invalid job."""
    if body is None or body == "":
        raise InvalidRequest('request body is empty; send the jobs as {"jobs": [job, ...]}')
    try:
        return parse_body(body, is_base64, limit)
    except InvalidPayload:
        raise InvalidRequest('the batch body must be a JSON object {"jobs": [job, ...]}',
                             errors=[{"path": "/", "message": "must be an object"}]) from None


def make_resolver() -> APIGatewayHttpResolver:
    """An HTTP API (payload 2.0) resolver with the service's error mapping installed."""
    app = APIGatewayHttpResolver()

    @app.exception_handler(PreviewError)
    def _domain_error(exc: PreviewError) -> Response:
        if exc.status_code >= 500:
            logger.warning("request failed", extra={"error": exc.code, "reason": exc.message})
        return json_response(exc.status_code, exc.body(), exc.headers())

    @app.exception_handler(Exception)
    def _unexpected(exc: Exception) -> Response:
        record_failure("http")
        logger.exception("unexpected error")
        return internal_error(_request_id(app))

    @app.not_found
    def _not_found(exc: Exception) -> Response:
        return json_response(404, {"error": "not_found", "message": "no such route"})

    return app


_INTERNAL = {"error": "internal_error", "message": "unexpected error; quote the requestId when reporting it"}


def internal_error(request_id: str | None) -> Response:
    return json_response(500, _INTERNAL | {"requestId": request_id})


def _request_id(app: APIGatewayHttpResolver) -> str | None:
    try:
        return app.current_event.request_context.request_id
    except Exception:  # the event itself may be what broke
        return None


# A host name or address with an optional port, nothing else (no quotes, brackets of markup,
# paths or spaces): what may appear in an origin.
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                   r"[A-Za-z0-9])?)*\.?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?\Z")


def base_url(app: APIGatewayHttpResolver, configured: str = "") -> str:
    """Public origin for absolute URLs: the configured one, else the API's own name for this
    request (`requestContext.domainName`: the domain API Gateway matched, or the name the
    emulator answered on). The client's Host header is never copied: a name that is not a
    plain host[:port] gives relative URLs instead."""
    if configured:
        return configured.rstrip("/")
    event = app.current_event
    domain = event.request_context.domain_name or ""
    if not _HOST.match(domain):
        return ""
    proto = (event.headers or {}).get("x-forwarded-proto", "https").lower()
    return f"{proto if proto in ('http', 'https') else 'https'}://{domain}"


def lambda_entry(app: APIGatewayHttpResolver, name: str) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The function's `handler(event, context)`: structured log context, correlation id,
    the request metric, and a 500 with a request id for anything that escapes."""
    cold_start = ColdStart()

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        request_id = None
        if isinstance(event, dict):
            request_id = (event.get("requestContext") or {}).get("requestId")
        with invocation_context(context, request_id, cold=cold_start()):
            return _handle(event, context)

    def _handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        try:
            response = app.resolve(event, context)
        except Exception:
            record_failure("http")
            logger.exception("unexpected error outside the route")
            request_id = (event.get("requestContext") or {}).get("requestId") if isinstance(event, dict) else None
            response = {
                "statusCode": 500,
                "headers": {"Content-Type": JSON, "Cache-Control": "no-store"},
                "body": json.dumps(_INTERNAL | {"requestId": request_id}),
                "isBase64Encoded": False,
            }
        route = event.get("routeKey") if isinstance(event, dict) else None
        record_request(route if route and route != "$default" else name, int(response.get("statusCode", 500)))
        return response

    return handler
