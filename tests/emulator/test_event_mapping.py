"""local/events.py on its own, without a server: the HTTP API payload 2.0 event made of a
request, the HTTP answer made of a function's result (and the results API Gateway refuses),
EventBridge's scheduled events, and the Lambda context."""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path
from typing import Any

import pytest

from local.events import BadResponse, LambdaContext, http_event, http_response, scheduled_event
from local.template import FunctionSpec, ScheduleSpec, Template

SPEC = FunctionSpec(logical_id="EchoFunction", name="echo-fn", handler="app.handler", code_root=Path("/code"),
                    timeout=7, memory=384, environment={})
TEMPLATE = Template(path=Path("/code/template.yaml"), region="eu-west-1", account_id="123456789012",
                    parameters={}, functions={"EchoFunction": SPEC})


def event(headers: list[tuple[bytes, bytes]] | None = None, body: bytes = b"", raw_query: str = "",
          **overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "route_key": "POST /echo/{id}", "method": "POST", "raw_path": "/echo/abc%20def", "raw_query": raw_query,
        "headers": headers if headers is not None else [(b"host", b"127.0.0.1:3000")], "body": body,
        "path_parameters": {"id": "abc def"}, "source_ip": "10.0.0.7", "scheme": "http", "server_port": 3000,
        "server_host": "127.0.0.1",
    }
    arguments.update(overrides)
    return http_event(**arguments)


# --------------------------------------------------------------------------- requests


def test_payload_2_shape() -> None:
    made = event(headers=[(b"Host", b"127.0.0.1:3000"), (b"User-Agent", b"probe/1")], raw_query="a=1")
    assert list(made) == ["version", "routeKey", "rawPath", "rawQueryString", "headers", "queryStringParameters",
                          "requestContext", "pathParameters", "isBase64Encoded"]
    assert (made["version"], made["routeKey"], made["rawPath"]) == ("2.0", "POST /echo/{id}", "/echo/abc%20def")
    assert made["pathParameters"] == {"id": "abc def"}
    context = made["requestContext"]
    assert set(context) == {"accountId", "apiId", "domainName", "domainPrefix", "http", "requestId", "routeKey",
                            "stage", "time", "timeEpoch"}
    assert (context["accountId"], context["apiId"], context["stage"]) == ("123456789012", "local", "$default")
    assert (context["domainName"], context["domainPrefix"]) == ("127.0.0.1:3000", "127")
    assert context["http"] == {"method": "POST", "path": "/echo/abc%20def", "protocol": "HTTP/1.1",
                               "sourceIp": "10.0.0.7", "userAgent": "probe/1"}
    assert re.fullmatch(r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000", context["time"])
    assert abs(context["timeEpoch"] / 1000 - time.time()) < 60
    assert re.fullmatch(r"[A-Za-z0-9Zx]{15}=", context["requestId"])
    assert made["isBase64Encoded"] is False and "body" not in made


def test_optional_parts_are_left_out() -> None:
    made = event(path_parameters={}, server_port=None, route_key="$default", stage="dev", account_id="999",
                 api_id="abc")
    assert not {"cookies", "queryStringParameters", "pathParameters", "body"} & set(made)
    assert "x-forwarded-port" not in made["headers"]
    assert made["requestContext"]["domainName"] == "127.0.0.1:3000"
    context = made["requestContext"]
    assert (context["stage"], context["accountId"], context["apiId"], context["routeKey"]) == \
        ("dev", "999", "abc", "$default")


@pytest.mark.parametrize(("host", "domain"), [
    (b"127.0.0.1:3000", "127.0.0.1:3000"), (b"LocalHost:3000", "localhost:3000"), (b"[::1]:3000", "[::1]:3000"),
    (b"evil.example", "127.0.0.1:3000"), (b'evil.example"><script>', "127.0.0.1:3000"),
    (b"localhost:4000", "127.0.0.1:3000"), (b"127.0.0.1", "127.0.0.1:3000"), (b"", "127.0.0.1:3000"),
])
def test_domain_name_is_the_emulators_own_name_never_a_forged_host(host: bytes, domain: str) -> None:
    assert event(headers=[(b"host", host)])["requestContext"]["domainName"] == domain


def test_domain_name_off_loopback() -> None:
    made = event(headers=[(b"host", b"localhost:3000")], server_host="192.0.2.10")
    assert made["requestContext"]["domainName"] == "192.0.2.10:3000"
    made = event(headers=[(b"host", b"192.0.2.10:3000")], server_host="192.0.2.10")
    assert made["requestContext"]["domainName"] == "192.0.2.10:3000"
    made = event(headers=[(b"host", b"x")], server_host="fe80::1", server_port=80)
    assert made["requestContext"]["domainName"] == "[fe80::1]"


def test_headers_are_lower_case_and_repeated_ones_joined() -> None:
    headers = event(headers=[(b"X-Multi", b"one"), (b"x-multi", b"two"), (b"Accept", b"*/*")])["headers"]
    assert headers["x-multi"] == "one,two" and headers["accept"] == "*/*"
    assert all(name == name.lower() for name in headers)


def test_forwarding_headers() -> None:
    headers = event()["headers"]
    assert (headers["x-forwarded-for"], headers["x-forwarded-proto"], headers["x-forwarded-port"]) == \
        ("10.0.0.7", "http", "3000")
    assert re.fullmatch(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24}", headers["x-amzn-trace-id"])
    behind_proxy = event(headers=[(b"x-forwarded-for", b"203.0.113.9"), (b"x-amzn-trace-id", b"Root=given")],
                         scheme="https")["headers"]
    assert behind_proxy["x-forwarded-for"] == "203.0.113.9, 10.0.0.7"
    assert behind_proxy["x-forwarded-proto"] == "https" and behind_proxy["x-amzn-trace-id"] == "Root=given"


def test_cookies_leave_the_headers_for_their_own_list() -> None:
    made = event(headers=[(b"Cookie", b"c1=v1; c2=v2"), (b"cookie", b"c3=v3;")])
    assert made["cookies"] == ["c1=v1", "c2=v2", "c3=v3"]
    assert "cookie" not in made["headers"]


def test_repeated_query_parameters_are_joined() -> None:
    made = event(raw_query="a=1&a=2&b=x%20y&empty=&a=3")
    assert made["rawQueryString"] == "a=1&a=2&b=x%20y&empty=&a=3"
    assert made["queryStringParameters"] == {"a": "1,2,3", "b": "x y", "empty": ""}


@pytest.mark.parametrize("content_type", [
    "application/json", "application/json; charset=utf-8", "text/plain", "TEXT/CSV", "application/xml",
    "application/javascript", "application/graphql", "application/vnd.api+json", "application/atom+xml",
])
def test_text_bodies_arrive_as_text(content_type: str) -> None:
    made = event(headers=[(b"content-type", content_type.encode())], body='{"name": "Zoë"}'.encode())
    assert (made["body"], made["isBase64Encoded"]) == ('{"name": "Zoë"}', False)


@pytest.mark.parametrize("content_type", [
    None, "application/octet-stream", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "image/png",
])
def test_other_bodies_arrive_base64(content_type: str | None) -> None:
    headers = [] if content_type is None else [(b"content-type", content_type.encode())]
    payload = bytes(range(256))
    made = event(headers=headers, body=payload)
    assert made["isBase64Encoded"] is True and base64.b64decode(made["body"]) == payload


def test_text_that_is_not_utf8_arrives_base64() -> None:
    made = event(headers=[(b"content-type", b"text/plain")], body=b"\xff\xfe caf\xe9")
    assert made["isBase64Encoded"] is True and base64.b64decode(made["body"]) == b"\xff\xfe caf\xe9"


def test_request_ids_are_unique() -> None:
    assert len({event()["requestContext"]["requestId"] for _ in range(50)}) == 50


# --------------------------------------------------------------------------- answers


@pytest.mark.parametrize(("result", "body"), [
    ("plain words", b"plain words"),
    ({"answer": 42}, b'{"answer": 42}'),
    ([1, 2], b"[1, 2]"),
    (None, b"null"),
    (7, b"7"),
])
def test_a_result_without_status_is_a_200_json_body(result: Any, body: bytes) -> None:
    assert http_response(result) == (200, [(b"content-type", b"application/json")], body)


def test_a_full_answer() -> None:
    status, headers, body = http_response({
        "statusCode": 201,
        "headers": {"X-Single": "one", "x-flag": True, "x-count": 3},
        "multiValueHeaders": {"x-multi": ["a", "b"]},
        "cookies": ["first=1; Path=/", "second=2; HttpOnly"],
        "body": "made",
    })
    assert (status, body) == (201, b"made")
    assert headers == [(b"X-Single", b"one"), (b"x-flag", b"true"), (b"x-count", b"3"), (b"x-multi", b"a"),
                       (b"x-multi", b"b"), (b"set-cookie", b"first=1; Path=/"), (b"set-cookie", b"second=2; HttpOnly")]


def test_answers_without_a_body_or_with_a_binary_one() -> None:
    assert http_response({"statusCode": 204}) == (204, [], b"")
    assert http_response({"statusCode": 200, "body": None, "headers": None}) == (200, [], b"")
    encoded = base64.b64encode(bytes(range(256))).decode()
    assert http_response({"statusCode": 200, "body": encoded, "isBase64Encoded": True})[2] == bytes(range(256))
    assert http_response({"statusCode": 200, "body": encoded, "isBase64Encoded": False})[2] == encoded.encode()


def test_header_values_outside_latin1_are_replaced() -> None:
    assert http_response({"statusCode": 200, "headers": {"x-name": "Zoë ☃"}})[1] == [(b"x-name", b"Zo\xeb ?")]


@pytest.mark.parametrize(("result", "problem"), [
    ({"answer": {1, 2}}, "result is not JSON"),
    ({"statusCode": "200"}, "statusCode '200' is not an HTTP status"),
    ({"statusCode": True}, "statusCode True is not an HTTP status"),
    ({"statusCode": 99}, "statusCode 99 is not an HTTP status"),
    ({"statusCode": 600}, "statusCode 600 is not an HTTP status"),
    ({"statusCode": 200.0}, "statusCode 200.0 is not an HTTP status"),
    ({"statusCode": 200, "multiValueHeaders": {"x-multi": "a"}}, "multiValueHeaders['x-multi'] is not a list"),
    ({"statusCode": 200, "body": {"json": "object"}}, "body is not a string"),
    ({"statusCode": 200, "body": b"bytes"}, "body is not a string"),
    ({"statusCode": 200, "body": "not base64!", "isBase64Encoded": True}, "the body is not base64"),
    ({"statusCode": 200, "headers": {"x-bad": "one\r\nx-injected: two"}}, "header contains a line break"),
    ({"statusCode": 200, "headers": {"x-bad\n": "one"}}, "header contains a line break"),
    ({"statusCode": 200, "multiValueHeaders": {"x-bad": ["a", "b\nc"]}}, "header contains a line break"),
    ({"statusCode": 200, "cookies": ["a=1\r\nset-cookie: b=2"]}, "header contains a line break"),
])
def test_malformed_answers_are_refused(result: Any, problem: str) -> None:
    with pytest.raises(BadResponse, match=re.escape(problem)):
        http_response(result)


# --------------------------------------------------------------------------- schedules


def schedule(kind: str, payload: str | None = None) -> ScheduleSpec:
    expression = "rate(5 minutes)" if kind == "Schedule" else "cron(0 12 * * ? *)"
    return ScheduleSpec(function="EchoFunction", event="Every5", kind=kind, expression=expression, enabled=True,
                        input=payload)


def test_eventbridge_rule_event() -> None:
    made = scheduled_event(TEMPLATE, schedule("Schedule"))
    assert set(made) == {"version", "id", "detail-type", "source", "account", "time", "region", "resources",
                         "detail"}
    assert (made["version"], made["detail-type"], made["source"]) == ("0", "Scheduled Event", "aws.events")
    assert (made["account"], made["region"], made["detail"]) == ("123456789012", "eu-west-1", {})
    assert made["resources"] == ["arn:aws:events:eu-west-1:123456789012:rule/local-EchoFunctionEvery5"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", made["time"])
    assert made["id"] != scheduled_event(TEMPLATE, schedule("Schedule"))["id"]


def test_eventbridge_scheduler_event() -> None:
    made = scheduled_event(TEMPLATE, schedule("ScheduleV2"))
    assert (made["source"], made["detail-type"], made["detail"]) == ("aws.scheduler", "Scheduled Event", "{}")
    assert made["resources"] == ["arn:aws:scheduler:eu-west-1:123456789012:schedule/default/EchoFunctionEvery5"]


@pytest.mark.parametrize("kind", ["Schedule", "ScheduleV2"])
def test_an_explicit_input_replaces_the_event(kind: str) -> None:
    assert scheduled_event(TEMPLATE, schedule(kind, '{"mode": "sweep", "n": 2}')) == {"mode": "sweep", "n": 2}
    assert scheduled_event(TEMPLATE, schedule(kind, "[1, 2]")) == [1, 2]
    assert scheduled_event(TEMPLATE, schedule(kind, "not json")) == "not json"


# --------------------------------------------------------------------------- context


def test_lambda_context() -> None:
    context = LambdaContext(TEMPLATE, SPEC)
    assert (context.function_name, context.function_version, context.memory_limit_in_mb) == ("echo-fn", "$LATEST", 384)
    assert context.invoked_function_arn == "arn:aws:lambda:eu-west-1:123456789012:function:echo-fn"
    assert context.log_group_name == "/aws/lambda/echo-fn"
    assert re.fullmatch(r"\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}", context.log_stream_name)
    assert re.fullmatch(r"[0-9a-f-]{36}", context.aws_request_id)
    assert context.aws_request_id != LambdaContext(TEMPLATE, SPEC).aws_request_id
    assert (context.identity, context.client_context) == (None, None)
    assert 6000 < context.get_remaining_time_in_millis() <= 7000  # the function's Timeout


def test_lambda_context_deadline() -> None:
    assert 1000 < LambdaContext(TEMPLATE, SPEC, timeout_s=1.5).get_remaining_time_in_millis() <= 1500
    assert LambdaContext(TEMPLATE, SPEC, timeout_s=0).get_remaining_time_in_millis() == 0
