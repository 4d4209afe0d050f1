"""The emulator's app driven in this process through Starlette's TestClient: prepared and built
the way `python -m local serve` does it (`prepare`, `apply_environment`, `build_app`), minus
uvicorn and the socket. Its environment is applied through a MonkeyPatch, so it is undone
when the test ends."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from local.launch import apply_environment, build_app
from local.startup import Prepared, ServeArgs, prepare, shell_environment
from tests.emulator.conftest import child_env

PORT = 3000  # the port the app believes it listens on; TestClient opens no socket
URL = f"http://127.0.0.1:{PORT}"
PEER = ("127.0.0.1", 50000)  # the client address requests come from, as from a local browser
ASYNC_THREADS = "async-invoke-"  # the runtime's pool of asynchronous invocations (local/runtime.py)
ASYNC_GRACE_S = 60


def prepared_for(args: ServeArgs, redis_url: str, **shell: str) -> Prepared:
    """What `serve` prepares from `args` in a shell of `shell` (plus the test session's own
    variables but those an emulator must not inherit), once Redis is at `redis_url`."""
    prepared = prepare(args, shell_environment(args, base=child_env(**shell)))
    prepared.env.values["REDIS_URL"] = redis_url
    return prepared


def start_app(args: ServeArgs, prepared: Prepared, monkeypatch: pytest.MonkeyPatch,
              redis_description: str) -> Starlette:
    """The app `serve_prepared` would serve, its environment in os.environ until the test ends."""
    for name in list(os.environ):
        if name.startswith("PREVIEW_"):  # the developer's own configuration stays out, as for a child
            monkeypatch.delenv(name)
    for name, value in prepared.env.values.items():
        monkeypatch.setenv(name, value)  # recorded, so the teardown restores the variable
    apply_environment(prepared)
    return build_app(args, prepared, PORT, redis_description)


def client_for(app: Starlette, headers: dict[str, str] | None = None) -> TestClient:
    """A client of `app` from 127.0.0.1 (it does not start the app: see `running`)."""
    return TestClient(app, base_url=URL, client=PEER, headers=headers)


@contextlib.contextmanager
def running(app: Starlette, headers: dict[str, str] | None = None) -> Iterator[TestClient]:
    """A client of `app` with the app started (worker, schedules) for its duration. After the
    shutdown, the async invocations still running (a kicked worker function draining the
    queue) are waited for: a real process would end them, here they would outlive the test."""
    before = set(threading.enumerate())
    with client_for(app, headers) as client:
        yield client
    leftovers = [t for t in threading.enumerate() if t not in before and t.name.startswith(ASYNC_THREADS)]
    for thread in leftovers:
        thread.join(ASYNC_GRACE_S)
    assert not [t for t in leftovers if t.is_alive()], f"async invocations still running after {ASYNC_GRACE_S} s"


class LogLines(logging.Handler):
    """The emulator's own log lines (the `local` loggers), formatted as on its stderr."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("emulator %(levelname)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@contextlib.contextmanager
def emulator_log() -> Iterator[LogLines]:
    logger = logging.getLogger("local")
    handler, level = LogLines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@contextlib.contextmanager
def function_stdout() -> Iterator[io.StringIO]:
    """What the service's functions log on stdout (their JSON lines), while the block runs.
    pytest's own capture pauses between a test's setup, call and teardown: a line that a
    background thread (the worker, an async invocation) wrote in such a pause would reach the
    terminal."""
    from shared.observability import SERVICE

    buffer = io.StringIO()
    handlers = [h for h in logging.getLogger(SERVICE).handlers if isinstance(h, logging.StreamHandler)]
    previous = [h.setStream(buffer) for h in handlers]
    try:
        yield buffer
    finally:
        for handler, stream in zip(handlers, previous, strict=True):
            if stream is not None:
                handler.setStream(stream)
