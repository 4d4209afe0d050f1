"""`python -m local serve` as a real process: start-up failures are one clear line on stderr
and exit status 2; a server that started says what it found on stderr, serves, and stops
cleanly on SIGTERM (exit status 0, its embedded Redis stopped)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from local.redis_server import RedisServer
from tests.emulator.apps_project import PARAMETER_OVERRIDES, SCHEDULE_SCALE, SHELL, write_project
from tests.emulator.conftest import Emulator, child_env, run_local, write_template

pytestmark = pytest.mark.process

FUNCTION = """\
Resources:
  HelloFunction:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.12
      CodeUri: @ROOT@
{handler}
      Events:
        Hello:
          Type: HttpApi
          Properties: {{Path: /hello, Method: GET}}
"""


def fails(args: list[str], tmp_path: Path, **env: str) -> str:
    result = run_local(["serve", "--data-dir", str(tmp_path / "data"), *args],
                       child_env(REDIS_URL="redis://127.0.0.1:1/0", **env), timeout=30)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = fails(["--port", str(port)], tmp_path)
    assert f"port {port} on 127.0.0.1 is already in use" in line


def test_template_missing(tmp_path: Path) -> None:
    assert "template not found" in fails(["--template", str(tmp_path / "nope.yaml")], tmp_path)


@pytest.mark.parametrize(("body", "message"), [
    ("Resources: [\n", "invalid template"),
    ("Resources:\n  X:\n    Type: AWS::SNS::Topic\n", "no AWS::Serverless::Function"),
    (FUNCTION.format(handler=""), "HelloFunction: function has no Handler"),
    (FUNCTION.format(handler="      Handler: tests.emulator.apps.echo\n      Timeout: soon"),
     "Timeout 'soon' is not a whole number"),
    (FUNCTION.format(handler="      Handler: tests.emulator.apps.echo\n      Environment:\n        Variables:\n"
                             "          X: !Ref Missing"), "!Ref Missing: no such parameter or resource"),
    (FUNCTION.format(handler="      Handler: tests.emulator.apps.echo").replace(
        "Type: HttpApi\n          Properties: {Path: /hello, Method: GET}",
        "Type: Schedule\n          Properties: {Schedule: cron(0 12 L * ? *)}"), "not supported by the emulator"),
])
def test_bad_template(tmp_path: Path, body: str, message: str) -> None:
    template = write_template(tmp_path, body)
    assert message in fails(["--template", str(template)], tmp_path)


def test_handler_import_error_names_function_and_file(tmp_path: Path) -> None:
    template = write_template(tmp_path, FUNCTION.format(handler="      Handler: tests.emulator.missing.handler"))
    line = fails(["--template", str(template)], tmp_path)
    assert "cannot import handler of HelloFunction (tests.emulator.missing.handler" in line
    assert "tests/emulator/missing.py" in line and "ModuleNotFoundError" in line


def test_bad_configuration(tmp_path: Path) -> None:
    line = fails([], tmp_path, PREVIEW_QUEUE_MAX="lots")
    assert "PREVIEW_QUEUE_MAX='lots'" in line


def test_bad_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "env.json"
    env_file.write_text("{not json")
    assert "--env-vars" in fails(["--env-vars", str(env_file)], tmp_path)


def test_handler_import_error_under_reload(tmp_path: Path) -> None:
    template = write_template(tmp_path, FUNCTION.format(handler="      Handler: tests.emulator.missing.handler"))
    assert "cannot import handler of HelloFunction" in fails(["--template", str(template), "--reload"], tmp_path)


@pytest.mark.slow
def test_serves_and_stops_cleanly(tmp_path: Path) -> None:
    # Given the tiny handlers' project, with no REDIS_URL: the data folder's embedded Redis
    template, env_file = write_project(tmp_path, tmp_path / "events.jsonl")
    overrides = [f"{name}={value}" for name, value in PARAMETER_OVERRIDES.items()]
    emulator = Emulator(tmp_path, [
        "--template", str(template), "--env-vars", str(env_file), "--data-dir", str(tmp_path / "data"),
        "--parameter-overrides", *overrides, "--schedule-scale", str(SCHEDULE_SCALE),
    ], child_env(**SHELL)).start()
    try:
        with emulator.client() as client:
            assert client.get("/boom").status_code == 502
            # The functions see the embedded Redis (it is not in any template or env file)
            seen = client.post("/echo/x", params={"env": "REDIS_URL"}).json()["env"]["REDIS_URL"]
            assert seen.startswith("redis://127.0.0.1:") and f"at {seen} " in emulator.stderr
        # The traceback is in the emulator's log, for the developer
        deadline = time.monotonic() + 5
        while "hunter2" not in emulator.stderr and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "RuntimeError: secret internal detail" in emulator.stderr
    finally:
        assert emulator.stop() == 0, emulator.stderr
    # Start-up said what it found
    assert "MODE differs between functions" in emulator.stderr
    assert "Redis: embedded at redis://127.0.0.1:" in emulator.stderr
    # The embedded Redis went away with it (its owner file is removed on a clean stop).
    assert not (tmp_path / "data" / "redis" / "owner.json").exists()


@pytest.mark.slow
def test_the_service_stops_cleanly_with_its_worker(tmp_path: Path, private_redis: RedisServer) -> None:
    emulator = Emulator(tmp_path, ["--api-key", "test-key-0123", "--data-dir", str(tmp_path / "data")],
                        child_env(REDIS_URL=private_redis.url)).start()
    try:
        with emulator.client() as client:
            assert client.get("/api/preview/worker/health").status_code in (200, 503)
        assert "long-running worker (2 job loops) -> RenderWorkerFunction" in emulator.stderr
    finally:
        assert emulator.stop() == 0, emulator.stderr
