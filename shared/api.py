"""HTTP plumbing shared by the handler functions: one error table for every route, JSON
responses, the Lambda entry decorator (logging context, request metric)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from pydantic import BaseModel

from shared.errors import InvalidRequest, PreviewError
from shared.observability import invocation_context, logger, record_failure, record_request

JSON = "application/json"
ID_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


def json_response(status: int, body: BaseModel | dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    payload = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
    return Response(
        status_code=status,
        content_type=JSON,
        body=json.dumps(payload, separators=(",", ":")),
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def check_id(value: str, name: str = "jobId") -> str:
    if not ID_RE.fullmatch(value or ""):
        raise InvalidRequest(
            f"{name} must be 1-128 letters, digits, '.', '_' or '-', not starting with '.'",
            errors=[{"path": f"/{name}", "message": "malformed id"}],
        )
    return value


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


def base_url(app: APIGatewayHttpResolver, configured: str = "") -> str:
    """Public origin for absolute URLs: the configured one, else the request's own host."""
    if configured:
        return configured.rstrip("/")
    event = app.current_event
    headers = event.headers or {}
    host = headers.get("host") or event.request_context.domain_name
    if not host:
        return ""
    proto = headers.get("x-forwarded-proto", "https")
    return f"{proto}://{host}"


def lambda_entry(app: APIGatewayHttpResolver, name: str) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The function's `handler(event, context)`: structured log context, correlation id,
    the request metric, and a 500 with a request id for anything that escapes."""

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        request_id = None
        if isinstance(event, dict):
            request_id = (event.get("requestContext") or {}).get("requestId")
        with invocation_context(context, request_id):
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
