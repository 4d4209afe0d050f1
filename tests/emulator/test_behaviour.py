"""The emulator as API Gateway + Lambda + EventBridge, on a template of tiny test handlers
(tests/emulator/apps.py), its app driven in this process: event and context shape, answers,
errors, timeouts, concurrency, environment layering, schedules. None of it needs Redis or a
socket, so these are unit tests; what only a real process shows (its stderr, the embedded
Redis, a clean stop) is in test_startup.py."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from local.startup import Prepared, ServeArgs
from tests.emulator.apps_project import PARAMETER_OVERRIDES, SCHEDULE_SCALE, SHELL, write_project
from tests.emulator.in_process import LogLines, emulator_log, prepared_for, running, start_app

# Nothing listens there: the tiny handlers never use Redis, and a unit test may not connect.
NO_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture(scope="module")
def record_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("record") / "events.jsonl"


@pytest.fixture(scope="module")
def args(tmp_path_factory: pytest.TempPathFactory, record_file: Path) -> ServeArgs:
    workdir = tmp_path_factory.mktemp("behaviour")
    template, env_file = write_project(workdir, record_file)
    return ServeArgs(template=template, env_vars=env_file, data_dir=workdir / "data",
                     parameter_overrides=PARAMETER_OVERRIDES, schedule_scale=SCHEDULE_SCALE)


@pytest.fixture(scope="module")
def prepared(args: ServeArgs) -> Prepared:
    return prepared_for(args, NO_REDIS, **SHELL)


@pytest.fixture
def log() -> Iterator[LogLines]:
    with emulator_log() as lines:
        yield lines


@pytest.fixture
def client(args: ServeArgs, prepared: Prepared, monkeypatch: pytest.MonkeyPatch,
           log: LogLines) -> Iterator[httpx.Client]:
    app = start_app(args, prepared, monkeypatch, redis_description=NO_REDIS)
    with running(app) as client:
        yield client


def echo(client: httpx.Client, **kwargs: Any) -> dict[str, Any]:
    response = client.post("/echo/abc%20def", **kwargs)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_event_is_http_api_payload_2(client: httpx.Client) -> None:
    # Given a JSON body, a repeated query parameter, repeated headers and two cookies
    response = client.post(
        "/echo/abc%20def?a=1&a=2&b=x%20y",
        content=b'{"hello": "world"}',
        headers=[("Content-Type", "application/json"), ("X-Multi", "one"), ("X-Multi", "two"),
                 ("Cookie", "c1=v1; c2=v2"), ("User-Agent", "emulator-test/1")],
    )
    assert response.status_code == 200
    event = response.json()["event"]
    # Then the function sees what API Gateway would send
    assert event["version"] == "2.0"
    assert event["routeKey"] == "POST /echo/{id}"
    assert event["rawPath"] == "/echo/abc%20def"
    assert event["rawQueryString"] == "a=1&a=2&b=x%20y"
    assert event["queryStringParameters"] == {"a": "1,2", "b": "x y"}
    assert event["pathParameters"] == {"id": "abc def"}
    assert event["cookies"] == ["c1=v1", "c2=v2"]
    headers = event["headers"]
    assert "cookie" not in headers and headers["x-multi"] == "one,two"
    assert all(name == name.lower() for name in headers)
    assert headers["x-forwarded-proto"] == "http" and headers["x-forwarded-for"] == "127.0.0.1"
    assert event["body"] == '{"hello": "world"}' and event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert context["routeKey"] == "POST /echo/{id}" and context["stage"] == "$default"
    assert context["accountId"] == "123456789012" and context["apiId"]
    assert context["domainName"].startswith("127.0.0.1")
    assert context["http"] == {"method": "POST", "path": "/echo/abc%20def", "protocol": "HTTP/1.1",
                               "sourceIp": "127.0.0.1", "userAgent": "emulator-test/1"}
    assert re.fullmatch(r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000", context["time"])
    assert abs(context["timeEpoch"] / 1000 - time.time()) < 60
    assert response.headers["apigw-requestid"] == context["requestId"]


def test_request_ids_are_unique(client: httpx.Client) -> None:
    ids = {echo(client)["event"]["requestContext"]["requestId"] for _ in range(5)}
    assert len(ids) == 5


def test_binary_body_arrives_base64(client: httpx.Client) -> None:
    payload = bytes(range(256))
    event = echo(client, content=payload, headers={"content-type": "application/octet-stream"})["event"]
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == payload


def test_greedy_and_any_routes(client: httpx.Client) -> None:
    files = client.get("/files/a/b/c.txt").json()["event"]
    assert files["routeKey"] == "GET /files/{proxy+}" and files["pathParameters"] == {"proxy": "a/b/c.txt"}
    for method in ("GET", "DELETE", "PUT"):
        assert client.request(method, "/any").json()["event"]["routeKey"] == "ANY /any"


def test_unknown_route_is_api_gateway_404(client: httpx.Client) -> None:
    for method, path in (("GET", "/nope"), ("GET", "/echo/x"), ("POST", "/echo/x/")):
        response = client.request(method, path)
        assert (response.status_code, response.json()) == (404, {"message": "Not Found"})


def test_context_is_lambda_like(client: httpx.Client) -> None:
    context = echo(client)["context"]
    assert context["function_name"] == "EchoFunction" and context["function_version"] == "$LATEST"
    assert context["invoked_function_arn"] == "arn:aws:lambda:us-east-1:123456789012:function:EchoFunction"
    assert context["memory_limit_in_mb"] == 384
    assert 3000 < context["remaining_ms"] <= 5000  # Timeout 5 from Globals
    assert context["log_group_name"] == "/aws/lambda/EchoFunction"
    assert "[$LATEST]" in context["log_stream_name"]


def test_environment_layers(client: httpx.Client, log: LogLines, record_file: Path) -> None:
    names = ["GREETING", "FROM_GLOBALS", "OWN_VAR", "FROM_FILE", "SHARED_VAR", "REGION_SUB", "JOINED", "PICKED",
             "BUCKET", "ECHO_ARN", "OTHER_FUNCTION", "OVERRIDDEN_BY_SHELL", "MODE", "RECORD_FILE", "REDIS_URL"]
    env = echo(client, params={"env": ",".join(names)})["env"]
    assert env.pop("REDIS_URL") == NO_REDIS  # the one Redis of the process
    assert env == {
        "GREETING": "hi",  # --parameter-overrides
        "FROM_GLOBALS": "globals",
        "OWN_VAR": "own-from-file",  # env file, function section
        "FROM_FILE": "file",  # env file Parameters may add variables
        "SHARED_VAR": "from-file",  # env file Parameters beat the template
        "REGION_SUB": "us-east-1-hi",
        "JOINED": "a,b,y",
        "PICKED": "mild",
        "BUCKET": "",  # a bucket stands in as "": the local store
        "ECHO_ARN": "arn:aws:lambda:us-east-1:123456789012:function:EchoFunction",
        "OTHER_FUNCTION": "RecordFunction",
        "OVERRIDDEN_BY_SHELL": "shell",  # a variable set in the shell wins
        "MODE": "echo-mode",  # two functions disagree: the first in template order wins...
        "RECORD_FILE": str(record_file),
    }
    # ...and start-up said so
    assert "MODE differs between functions" in log.text


def test_handler_error_is_502_without_internals(client: httpx.Client, log: LogLines) -> None:
    response = client.get("/boom")
    assert response.status_code == 502
    assert response.json() == {"message": "Internal Server Error"}
    assert "hunter2" not in response.text
    # The traceback is in the emulator's log, for the developer
    deadline = time.monotonic() + 5
    while "hunter2" not in log.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "RuntimeError: secret internal detail" in log.text


@pytest.mark.slow  # waits out the function's Timeout on purpose
def test_timeout_is_504(client: httpx.Client) -> None:
    started = time.monotonic()
    response = client.get("/slow", params={"seconds": "3"})
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.json() == {"message": "Endpoint request timed out"}
    assert 0.9 < elapsed < 2.5  # the function's Timeout is 1 s


@pytest.mark.slow  # three answers that take 0.7 s each, on purpose
def test_requests_are_served_concurrently(client: httpx.Client) -> None:
    results: list[int] = []

    def call() -> None:
        results.append(client.get("/slow", params={"seconds": "0.7"}).status_code)

    threads = [threading.Thread(target=call) for _ in range(3)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert results == [200, 200, 200]
    assert elapsed < 1.6, f"3 x 0.7 s requests took {elapsed:.2f} s: not concurrent"


def test_concurrent_powertools_requests_keep_their_own_event(client: httpx.Client) -> None:
    # Powertools stores the current event class-wide; in Lambda one environment serves one
    # request at a time, so the emulator must give each concurrent request its own.
    answers: dict[str, Any] = {}

    def call(name: str) -> None:
        answers[name] = client.get(f"/powertools/{name}", params={"q": name}).json()

    threads = [threading.Thread(target=call, args=(f"n{i}",)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, answer in answers.items():
        assert answer == {"name": name, "path": f"/powertools/{name}", "query": {"q": name}}


@pytest.mark.parametrize(("kind", "status", "content_type", "body"), [
    ("string", 200, "application/json", b"plain words"),
    ("dict", 200, "application/json", b'{"answer": 42}'),
    ("list", 200, "application/json", b"[1, 2]"),
    ("binary", 200, "application/octet-stream", bytes(range(256))),
    ("empty", 204, None, b""),
])
def test_answers_become_http(client: httpx.Client, kind: str, status: int, content_type: str | None,
                             body: bytes) -> None:
    response = client.get(f"/shape/{kind}")
    assert response.status_code == status
    assert response.headers.get("content-type") == content_type
    assert response.content == body


def test_headers_and_cookies_of_an_answer(client: httpx.Client) -> None:
    response = client.get("/shape/cookies")
    assert response.status_code == 201 and response.text == "made"
    assert response.headers["x-single"] == "one"
    assert response.headers.get_list("x-multi") == ["a", "b"]
    assert response.headers.get_list("set-cookie") == ["first=1; Path=/", "second=2; HttpOnly"]


def test_malformed_answer_is_502(client: httpx.Client) -> None:
    response = client.get("/shape/broken")
    assert (response.status_code, response.json()) == (502, {"message": "Internal Server Error"})


def _recorded(record_file: Path) -> list[Any]:
    if not record_file.exists():
        return []
    return [json.loads(line) for line in record_file.read_text().splitlines() if line]


def test_scaled_rate_schedule_fires_scheduled_events(client: httpx.Client, record_file: Path) -> None:
    # rate(1 minute) at --schedule-scale 600 fires every 0.1 s
    deadline = time.monotonic() + 10
    while len(_recorded(record_file)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    events = [e for e in _recorded(record_file) if e.get("source") == "aws.events"]
    assert len(events) >= 3
    event = events[0]
    assert set(event) == {"version", "id", "detail-type", "source", "account", "time", "region", "resources",
                          "detail"}
    assert event["version"] == "0" and event["detail-type"] == "Scheduled Event"
    assert event["account"] == "123456789012" and event["region"] == "us-east-1"
    assert event["resources"] == ["arn:aws:events:us-east-1:123456789012:rule/local-RecordFunctionOften"]
    assert event["detail"] == {}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["time"])
    assert len({e["id"] for e in events}) == len(events)


def test_fire_endpoint_runs_a_schedule_now(client: httpx.Client) -> None:
    listing = {s["event"]: s for s in client.get("/_emulator/schedules").json()}
    assert listing["Daily"]["expression"] == "cron(0 12 * * ? *)"
    assert 0 <= listing["Daily"]["nextInSeconds"] <= 86_400
    response = client.post("/_emulator/schedules/RecordFunction/fire", params={"event": "Daily"})
    assert response.status_code == 200
    fired = response.json()
    assert fired["result"] == {"recorded": True, "function": "RecordFunction"}
    # EventBridge Scheduler's default notification
    assert fired["event"]["source"] == "aws.scheduler" and fired["event"]["detail-type"] == "Scheduled Event"
    assert fired["event"]["resources"][0].startswith("arn:aws:scheduler:us-east-1:123456789012:schedule/")
    assert client.post("/_emulator/schedules/EchoFunction/fire").status_code == 404
