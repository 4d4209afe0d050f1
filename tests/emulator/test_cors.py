"""CORS as the template declares it (the AllowedOrigins parameter feeds the HTTP API's
CorsConfiguration and the artifact bucket's rule): the emulator answers a preflight itself,
before any signature check, and puts the allow headers on every answer to an allowed origin,
the artifact files included; an origin not on the list gets none."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from starlette.applications import Starlette

from local.cors import CorsConfig, read_cors
from local.errors import TemplateError
from local.redis_server import RedisServer
from local.runtime import FunctionRuntime
from local.server import Emulator, ServerOptions
from local.startup import ServeArgs
from local.template import load_template
from tests.conftest import ROOT, load_event
from tests.emulator.conftest import write_template
from tests.emulator.in_process import function_stdout, prepared_for, running, start_app
from tests.sigv4 import SigV4

APP = "https://app.example.com"
OTHER = "https://evil.example.net"
PREFLIGHT = {"origin": APP, "access-control-request-method": "POST",
             "access-control-request-headers": "content-type,authorization,x-amz-date"}

ECHO = """\
Resources:
  Api:
    Type: AWS::Serverless::HttpApi
    Properties:
      CorsConfiguration: @CORS@
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.12
      CodeUri: @ROOT@
      Handler: tests.emulator.apps.echo
      Events:
        Post:
          Type: HttpApi
          Properties: {ApiId: !Ref Api, Path: "/echo/{id}", Method: POST}
"""


def echo_app(tmp_path: Path, cors: str) -> Starlette:
    template = load_template(write_template(tmp_path, ECHO.replace("@CORS@", cors)))
    runtime = FunctionRuntime(template)
    runtime.load()
    return Emulator(template, runtime, ServerOptions(schedules=False)).app()


# --------------------------------------------------------------------------- the template's block


@pytest.mark.unit
def test_the_real_template_has_no_cors_unless_origins_are_given() -> None:
    assert load_template(ROOT / "template.yaml").cors is None
    template = load_template(ROOT / "template.yaml",
                             parameter_overrides={"AllowedOrigins": f"{APP},http://localhost:5173"})
    config = read_cors(template.cors, "test")
    assert config is not None
    assert config.allow_origins == (APP, "http://localhost:5173")
    assert "x-amz-date" in config.allow_headers and "retry-after" in config.expose_headers


@pytest.mark.unit
def test_the_artifact_bucket_allows_the_same_origins_as_the_api() -> None:
    from local.template import read_document

    resources = read_document(ROOT / "template.yaml")["Resources"]
    api = resources["PreviewApi"]["Properties"]["CorsConfiguration"]["Fn::If"]
    bucket = resources["ArtifactBucket"]["Properties"]["CorsConfiguration"]["Fn::If"]
    assert api[0] == bucket[0] == "HasAllowedOrigins"
    rule = bucket[1]["CorsRules"][0]
    assert api[1]["AllowOrigins"] == rule["AllowedOrigins"] == {"Ref": "AllowedOrigins"}
    assert set(rule["AllowedMethods"]) == {"GET", "HEAD"} and "range" in rule["AllowedHeaders"]


@pytest.mark.unit
def test_cors_blocks_read_as_sam_documents_them() -> None:
    assert read_cors(None, "t") is None
    assert read_cors(True, "t") == CorsConfig(allow_origins=("*",), allow_headers=("*",))
    assert read_cors({"AllowOrigins": []}, "t") is None
    assert read_cors({"AllowOrigins": ["*"], "AllowMethods": ["get"]}, "t").allow_methods == ("GET",)  # type: ignore[union-attr]
    with pytest.raises(TemplateError, match="MaxAge"):
        read_cors({"AllowOrigins": [APP], "MaxAge": "soon"}, "t")
    with pytest.raises(TemplateError, match="true or a mapping"):
        read_cors("yes", "t")


@pytest.mark.unit
def test_routes_on_apis_with_different_cors_are_refused(tmp_path: Path) -> None:
    body = ECHO.replace("@CORS@", "{AllowOrigins: [https://a.example]}") + """\
  Other:
    Type: AWS::Serverless::HttpApi
    Properties:
      CorsConfiguration: {AllowOrigins: [https://b.example]}
  OtherFunction:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.12
      CodeUri: @ROOT@
      Handler: tests.emulator.apps.echo
      Events:
        Get:
          Type: HttpApi
          Properties: {ApiId: !Ref Other, Path: /other, Method: GET}
"""
    with pytest.raises(TemplateError, match="different CorsConfiguration"):
        load_template(write_template(tmp_path, body))


# --------------------------------------------------------------------------- the gateway


@pytest.mark.unit
def test_preflight_and_response_headers_follow_the_configuration(tmp_path: Path) -> None:
    app = echo_app(tmp_path, "{AllowOrigins: [https://app.example.com], AllowMethods: [POST], "
                             "AllowHeaders: [content-type, authorization, x-amz-date], "
                             "ExposeHeaders: [retry-after], MaxAge: 600}")
    with running(app) as client:
        # A preflight is the gateway's own answer, whatever route it names
        pre = client.options("/echo/1", headers=PREFLIGHT)
        assert pre.status_code == 204 and pre.content == b""
        assert pre.headers["access-control-allow-origin"] == APP
        assert pre.headers["access-control-allow-methods"] == "POST"
        assert pre.headers["access-control-allow-headers"] == "content-type,authorization,x-amz-date"
        assert pre.headers["access-control-max-age"] == "600"
        # Not allowed: another origin, another method, another header
        for headers in ({**PREFLIGHT, "origin": OTHER},
                        {**PREFLIGHT, "access-control-request-method": "DELETE"},
                        {**PREFLIGHT, "access-control-request-headers": "x-secret"}):
            refused = client.options("/echo/1", headers=headers)
            assert refused.status_code == 204 and "access-control-allow-origin" not in refused.headers, headers
        # The real request from the allowed origin carries the headers; Vary keeps caches apart
        answer = client.post("/echo/1", json={}, headers={"origin": APP})
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == APP
        assert answer.headers["access-control-expose-headers"] == "retry-after"
        assert "Origin" in answer.headers["vary"]
        # Another origin, or none (a server-side client), gets no CORS headers at all
        for headers in ({"origin": OTHER}, {}):
            plain = client.post("/echo/1", json={}, headers=headers)
            assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers


@pytest.mark.unit
def test_without_a_configuration_there_is_no_preflight_answer(tmp_path: Path) -> None:
    app = echo_app(tmp_path, "!Ref AWS::NoValue")
    with running(app) as client:
        assert client.options("/echo/1", headers=PREFLIGHT).status_code == 404
        assert "access-control-allow-origin" not in client.post("/echo/1", json={}, headers={"origin": APP}).headers


# --------------------------------------------------------------------------- the service


@pytest.fixture
def service(tmp_path: Path, private_redis: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[httpx.Client]:
    redis.Redis.from_url(private_redis.url).flushall()
    args = ServeArgs(data_dir=tmp_path / "data", schedules=False,
                     parameter_overrides={"AllowedOrigins": APP})
    prepared = prepared_for(args, private_redis.url)
    app = start_app(args, prepared, monkeypatch, redis_description=private_redis.url)
    with function_stdout(), running(app) as client:
        yield client


@pytest.mark.redis
@pytest.mark.slow
def test_a_page_on_the_allowed_origin_can_call_the_signed_api_and_load_the_preview(service: httpx.Client) -> None:
    sign = SigV4()
    # Given the preflight a browser sends before a signed POST: answered without a signature
    pre = service.options("/api/preview/job", headers=PREFLIGHT)
    assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == APP
    # When the page posts the job, signed, from its origin
    body = load_event("enqueue_job", "render")["body"]
    answer = service.post("/api/preview/job", content=body, auth=sign,
                          headers={"content-type": "application/json", "origin": APP})
    assert answer.status_code == 202, answer.text
    assert answer.headers["access-control-allow-origin"] == APP
    assert "location" in answer.headers["access-control-expose-headers"]
    # A refusal still carries the headers, so the page can read why
    unsigned = service.post("/api/preview/job", content=body, headers={"origin": APP})
    assert unsigned.status_code == 403 and unsigned.headers["access-control-allow-origin"] == APP
    # Then, once rendered, the video and its captions track load cross-origin
    job_id = answer.json()["jobId"]
    deadline = time.monotonic() + 60
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = service.get(f"/api/preview/job/{job_id}/status", auth=sign).json()
        if status["state"] in ("completed", "failed"):
            break
        time.sleep(0.1)
    assert status["state"] == "completed", status
    document = service.get(f"/api/preview/job/{job_id}/artifact", auth=sign, headers={"origin": APP}).json()
    files = {f["name"]: f["url"] for f in document["files"]}
    captions = next(url for name, url in files.items() if name.endswith(".vtt"))
    for url in (document["url"], captions):
        loaded = service.get(url, headers={"origin": APP, "range": "bytes=0-99"})
        assert loaded.status_code == 206 and loaded.headers["access-control-allow-origin"] == APP, url
        stranger = service.get(url, headers={"origin": OTHER})
        assert stranger.status_code == 200 and "access-control-allow-origin" not in stranger.headers
    assert json.loads(body)["jobId"] == job_id
