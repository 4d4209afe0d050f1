"""What API Gateway and EventBridge would hand a function, and how API Gateway turns the
function's answer into an HTTP response: HTTP API payload format 2.0, EventBridge scheduled
events, and a Lambda-like context object."""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from local.template import FunctionSpec, ScheduleSpec, Template

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# Bodies API Gateway passes as text; anything else (binary, forms, unknown) arrives base64-encoded.
_TEXT_TYPES = ("application/json", "application/xml", "application/javascript", "application/graphql")


class BadResponse(Exception):
    """The function answered something API Gateway cannot turn into HTTP (it answers 502)."""


def request_id() -> str:
    """API Gateway's style of id (base64 of 11 random bytes)."""
    return base64.b64encode(os.urandom(11), altchars=b"Zx").decode()


def _clf_time(epoch: float) -> str:
    t = time.gmtime(epoch)
    return f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"


def _is_text(content_type: str | None) -> bool:
    if not content_type:
        return False
    main = content_type.split(";", 1)[0].strip().lower()
    return main.startswith("text/") or main in _TEXT_TYPES or main.endswith(("+json", "+xml"))


_LOOPBACK = ("localhost", "127.0.0.1", "::1")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _split_host(value: str, default_port: int | None) -> tuple[str, int | None]:
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        name, _, port_text = value.partition(":")
    return name, int(port_text) if port_text.isdigit() else default_port


def own_domain(host_header: str | None, server_host: str | None, server_port: int | None, scheme: str) -> str:
    """`requestContext.domainName` as API Gateway gives it: the API's own name. The Host header
    counts only when it names the address the request arrived on (or, on loopback, another
    loopback name); any other Host gets that address instead, so a forged Host never reaches
    the function (nor the URLs it builds)."""
    default_port = _DEFAULT_PORTS.get(scheme)
    if not server_host:
        return "localhost" if server_port in (None, default_port) else f"localhost:{server_port}"
    own = {server_host.lower()} | (set(_LOOPBACK) if server_host.lower() in _LOOPBACK
                                  or server_host.startswith("127.") else set())
    if host_header:
        name, asked_port = _split_host(host_header, default_port)
        if name in own and server_port in (None, asked_port):
            return host_header.strip().lower()
    name = f"[{server_host}]" if ":" in server_host else server_host
    return name if server_port in (None, default_port) else f"{name}:{server_port}"


def http_event(
    *,
    route_key: str,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Iterable[tuple[bytes, bytes]],
    body: bytes,
    path_parameters: dict[str, str],
    source_ip: str,
    scheme: str,
    server_port: int | None,
    server_host: str | None = None,
    stage: str = "$default",
    account_id: str = "123456789012",
    api_id: str = "local",
    iam: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An HTTP API payload 2.0 event for one request (`iam`: the caller's identity on a route
    with IAM authorization)."""
    joined: dict[str, str] = {}
    cookies: list[str] = []
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if name == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        # Repeated headers arrive as one, comma-joined, as API Gateway does it.
        joined[name] = f"{joined[name]},{value}" if name in joined else value
    forwarded = joined.get("x-forwarded-for")
    joined["x-forwarded-for"] = f"{forwarded}, {source_ip}" if forwarded else source_ip
    joined["x-forwarded-proto"] = scheme
    if server_port:
        joined["x-forwarded-port"] = str(server_port)
    now = time.time()
    if "x-amzn-trace-id" not in joined:
        joined["x-amzn-trace-id"] = f"Root=1-{int(now):08x}-{uuid.uuid4().hex[:24]}"
    domain = own_domain(joined.get("host"), server_host, server_port, scheme)
    req_id = request_id()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = joined
    if raw_query:
        params: dict[str, str] = {}
        for key, value in parse_qsl(raw_query, keep_blank_values=True):
            params[key] = f"{params[key]},{value}" if key in params else value
        event["queryStringParameters"] = params
    event["requestContext"] = {
        "accountId": account_id,
        "apiId": api_id,
        **({"authorizer": {"iam": iam}} if iam is not None else {}),
        "domainName": domain,
        "domainPrefix": domain.split(":", 1)[0].split(".", 1)[0],
        "http": {
            "method": method,
            "path": raw_path,
            "protocol": "HTTP/1.1",
            "sourceIp": source_ip,
            "userAgent": joined.get("user-agent", ""),
        },
        "requestId": req_id,
        "routeKey": route_key,
        "stage": stage,
        "time": _clf_time(now),
        "timeEpoch": int(now * 1000),
    }
    if path_parameters:
        event["pathParameters"] = path_parameters
    if body:
        if _is_text(joined.get("content-type")):
            try:
                event["body"] = body.decode("utf-8")
                event["isBase64Encoded"] = False
                return event
            except UnicodeDecodeError:
                pass
        event["body"] = base64.b64encode(body).decode("ascii")
        event["isBase64Encoded"] = True
    else:
        event["isBase64Encoded"] = False
    return event


def scheduled_event(template: Template, schedule: ScheduleSpec) -> Any:
    """EventBridge's scheduled event (or the schedule's own Input, which replaces it)."""
    if schedule.input is not None:
        try:
            return json.loads(schedule.input)
        except ValueError:
            return schedule.input
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    detail: Any
    if schedule.kind == "ScheduleV2":
        # EventBridge Scheduler's default notification: its own source, the detail as a string.
        resource = f"arn:aws:scheduler:{template.region}:{template.account_id}:schedule/default/" \
                   f"{schedule.function}{schedule.event}"
        source, detail = "aws.scheduler", "{}"
    else:
        resource = f"arn:aws:events:{template.region}:{template.account_id}:rule/local-" \
                   f"{schedule.function}{schedule.event}"
        source, detail = "aws.events", {}
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": source,
        "account": template.account_id,
        "time": now,
        "region": template.region,
        "resources": [resource],
        "detail": detail,
    }


def http_response(result: Any) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Status, headers and body API Gateway makes of a payload 2.0 function result."""
    if not (isinstance(result, dict) and "statusCode" in result):
        # No statusCode: the whole result is the body of a 200 JSON response; a string as is.
        if isinstance(result, str):
            body = result.encode()
        else:
            try:
                body = json.dumps(result).encode()
            except (TypeError, ValueError) as exc:
                raise BadResponse(f"result is not JSON: {exc}") from None
        return 200, [(b"content-type", b"application/json")], body
    status = result["statusCode"]
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise BadResponse(f"statusCode {status!r} is not an HTTP status")
    headers: list[tuple[bytes, bytes]] = []
    for name, value in (result.get("headers") or {}).items():
        headers.append((_header_bytes(name), _header_bytes(value)))
    for name, values in (result.get("multiValueHeaders") or {}).items():
        if not isinstance(values, list):
            raise BadResponse(f"multiValueHeaders[{name!r}] is not a list")
        headers.extend((_header_bytes(name), _header_bytes(v)) for v in values)
    for cookie in result.get("cookies") or []:
        headers.append((b"set-cookie", _header_bytes(cookie)))
    raw_body = result.get("body")
    if raw_body is None:
        body = b""
    elif not isinstance(raw_body, str):
        raise BadResponse("body is not a string")
    elif result.get("isBase64Encoded"):
        try:
            body = base64.b64decode(raw_body, validate=True)
        except (binascii.Error, ValueError):
            raise BadResponse("isBase64Encoded is true but the body is not base64") from None
    else:
        body = raw_body.encode()
    return status, headers, body


def _header_bytes(value: Any) -> bytes:
    if isinstance(value, bool):
        value = "true" if value else "false"
    text = str(value)
    if "\r" in text or "\n" in text:
        raise BadResponse("header contains a line break")
    return text.encode("latin-1", "replace")


class LambdaContext:
    """The context object the Python runtime passes: names, memory, time left."""

    def __init__(self, template: Template, spec: FunctionSpec, timeout_s: float | None = None) -> None:
        self.function_name = spec.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = template.function_arn(spec)
        self.memory_limit_in_mb = spec.memory
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{spec.name}"
        self.log_stream_name = time.strftime("%Y/%m/%d/[$LATEST]", time.gmtime()) + uuid.uuid4().hex
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + (spec.timeout if timeout_s is None else timeout_s)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))
