"""`serve --reload`: a saved change to a handler is served within moments, on the same port,
with the same embedded Redis."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.emulator.conftest import Emulator, child_env, write_template

pytestmark = [pytest.mark.process, pytest.mark.slow]

TEMPLATE = """\
Resources:
  HelloFunction:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.12
      CodeUri: .
      Handler: hello.app.handler
      Events:
        Hello:
          Type: HttpApi
          Properties: {Path: /hello, Method: GET}
"""

HANDLER = """\
import os


def handler(event, context):
    return {"version": VERSION, "redis": os.environ["REDIS_URL"]}


VERSION = 1
"""


def test_code_change_restarts_the_functions(tmp_path: Path) -> None:
    # Given a project of its own (the repository's files are never touched)
    package = tmp_path / "hello"
    package.mkdir()
    (package / "__init__.py").write_text("")
    app = package / "app.py"
    app.write_text(HANDLER)
    template = write_template(tmp_path, TEMPLATE)
    emulator = Emulator(tmp_path, ["--template", str(template), "--data-dir", str(tmp_path / "data"), "--reload"],
                        child_env()).start()
    try:
        with emulator.client() as client:
            first = client.get("/hello").json()
            assert first["version"] == 1
            # When the handler changes
            time.sleep(0.2)  # let the watcher settle in
            app.write_text(HANDLER.replace("VERSION = 1", "VERSION = 2"))
            changed = time.monotonic()
            # Then the new code answers, on the same port and the same Redis
            while time.monotonic() - changed < 10:
                answer = client.get("/hello").json()
                if answer["version"] == 2:
                    break
                time.sleep(0.02)
            reload_seconds = time.monotonic() - changed
            assert answer == {"version": 2, "redis": first["redis"]}
            assert reload_seconds < 3, f"reload took {reload_seconds:.2f} s"
            assert "reloading (app.py)" in emulator.stderr
    finally:
        assert emulator.stop() == 0, emulator.stderr
    assert not (tmp_path / "data" / "redis" / "owner.json").exists()
