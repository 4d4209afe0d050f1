"""The gateway (local/server.py) as a generic API Gateway emulator: without a service's extras
it serves the template's routes and its own docs and schedules, nothing more; a service's
`Extras` add routes, open paths, banner lines and start/stop work."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from local.runtime import FunctionRuntime
from local.server import AsyncInvoker, Emulator, Extras, ServerOptions
from local.template import Template, load_template
from tests.emulator.conftest import write_template
from tests.emulator.in_process import URL, running

KEY = "gateway-key"
TEMPLATE = """\
Resources:
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.12
      CodeUri: @ROOT@
      Handler: tests.emulator.apps.echo
      Events:
        Post:
          Type: HttpApi
          Properties: {Path: "/echo/{id}", Method: POST}
        Health:
          Type: HttpApi
          Properties: {Path: /health, Method: GET}
  RecordFunction:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.12
      CodeUri: @ROOT@
      Handler: tests.emulator.apps.record
      Environment:
        Variables:
          RECORD_FILE: @RECORD@
"""


@pytest.fixture
def template(tmp_path: Path) -> Template:
    record = tmp_path / "events.jsonl"
    return load_template(write_template(tmp_path, TEMPLATE.replace("@RECORD@", str(record))))


@pytest.fixture
def record_file(template: Template, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = template.functions["RecordFunction"].environment["RECORD_FILE"]
    monkeypatch.setenv("RECORD_FILE", path)
    return Path(path)


def gateway(template: Template, extras: Extras | None = None) -> Starlette:
    runtime = FunctionRuntime(template)
    runtime.load()
    return Emulator(template, runtime, ServerOptions(api_key=KEY), extras).app()


class Recording(Extras):
    """Extras that note what the gateway asks of them."""

    title = "Recording service"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.invoke_async: AsyncInvoker | None = None

    def routes(self) -> Sequence[BaseRoute]:
        async def special(request: Request) -> Response:
            return PlainTextResponse("special")

        async def receipt(request: Request) -> Response:
            return PlainTextResponse("receipt " + request.path_params["code"])

        return (Route("/echo/special", special, methods=["POST"]), Route("/receipts/{code}", receipt))

    def is_open(self, path: str) -> bool:
        return path.startswith("/receipts/")

    def start(self, invoke_async: AsyncInvoker) -> None:
        self.calls.append("start")
        self.invoke_async = invoke_async

    def stop(self) -> None:
        self.calls.append("stop")

    def banner_facts(self) -> Sequence[str]:
        return ("receipts: /receipts", "store: memory")

    def banner_lines(self) -> Sequence[str]:
        return (f"  started: {', '.join(self.calls)}",)


def test_without_extras_only_the_template_and_the_gateways_own_routes(
        template: Template, capsys: pytest.CaptureFixture[str]) -> None:
    with running(gateway(template), headers={"x-api-key": KEY}) as client:
        assert client.post("/echo/a").json()["event"]["pathParameters"] == {"id": "a"}
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/_emulator/schedules").json() == []
        for path in ("/metrics", "/artifacts/previews/x/preview.mp4?expires=1&sig=2"):
            response = client.get(path)
            assert (response.status_code, response.json()) == (404, {"message": "Not Found"}), path
    assert capsys.readouterr().err.splitlines() == [
        f"API emulator on {URL} (docs: /docs)",
        "  POST /echo/{id}                               -> EchoFunction  [api key]",
        "  GET /health                                   -> EchoFunction",
    ]


def test_extras_add_routes_open_paths_and_banner_lines(template: Template, capsys: pytest.CaptureFixture[str]) -> None:
    extras = Recording()
    with running(gateway(template, extras)) as anonymous:
        assert extras.calls == ["start"]
        # Their routes come before the template's, and their open paths need no key
        assert anonymous.get("/receipts/r1").text == "receipt r1"
        assert anonymous.post("/echo/special", headers={"x-api-key": KEY}).text == "special"
        assert anonymous.post("/echo/special").status_code == 401
        assert anonymous.get("/health").status_code == 200  # a health route stays open anyway
        assert anonymous.get("/openapi.json").status_code == 200
    assert extras.calls == ["start", "stop"]
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"Recording service on {URL} (docs: /docs, receipts: /receipts, store: memory)"
    assert err[-1] == "  started: start"  # read once the extras have started


def test_extras_get_the_runtimes_async_invoker(template: Template, record_file: Path) -> None:
    extras = Recording()
    with running(gateway(template, extras)):
        assert extras.invoke_async is not None
        extras.invoke_async("RecordFunction", {"hello": "async"})
        deadline = time.monotonic() + 5
        while not record_file.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    assert record_file.read_text().strip() == '{"hello": "async"}'
