"""Shared fixtures: a private Redis per test session (emptied per test), no services carried
over between tests, and each test sorted by what it costs.

Markers (`make test-fast` runs `-m unit`):
    unit     no socket and no child process: enforced, a connect or a spawn fails the test
    redis    talks to a private Redis server (any test using its fixtures)
    process  starts processes: the emulator, a worker, a CLI, a Python interpreter
    slow     takes seconds on purpose: renders real video, kills processes, waits on leases
A test that is neither redis nor process is unit. A module marks itself process or slow.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from local.redis_server import RedisServer
from shared import wiring

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"

# Never let a test reach a real AWS account or a developer's Redis by accident.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ["REDIS_URL"] = "redis://127.0.0.1:1/0"
os.environ.pop("AWS_LAMBDA_FUNCTION_NAME", None)
os.environ["POWERTOOLS_SERVICE_NAME"] = "preview-service"


# Fixtures that bring a Redis server (tests/emulator adds its own).
REDIS_FIXTURES = {"redis_server", "redis_url", "rdb", "private_redis", "redis_cluster", "clean_cluster",
                  "cluster_url"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & REDIS_FIXTURES and not item.get_closest_marker("redis"):
            item.add_marker(pytest.mark.redis)
        if not (item.get_closest_marker("redis") or item.get_closest_marker("process")):
            item.add_marker(pytest.mark.unit)


class SocketBlocked(RuntimeError):
    pass


def _block_sockets_and_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket
    import subprocess

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise SocketBlocked("unit tests must not open sockets (mark the test redis or process)")

    def no_spawn(*args: Any, **kwargs: Any) -> None:
        raise SocketBlocked("unit tests must not start processes (mark the test process)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket.socket, "bind", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(subprocess.Popen, "__init__", no_spawn)


@pytest.fixture(autouse=True)
def _unit_isolation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit test proves it needs no network and no other process."""
    if request.node.get_closest_marker("unit"):
        _block_sockets_and_processes(monkeypatch)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _clean_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    wiring.reset()
    yield
    wiring.reset()


@pytest.fixture
def redis_url(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the service at the private Redis, emptied for this test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    wiring.reset()
    return redis_server.url


@pytest.fixture
def rdb(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.01) -> Any:
    """The predicate's first true value, polled every `interval` s for up to `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def load_event(function: str, case: str) -> dict[str, Any]:
    return json.loads((EVENTS / function / f"{case}.json").read_text())


class LambdaContext:
    """The attributes Powertools reads from a Lambda context."""

    def __init__(self, name: str = "test-function") -> None:
        self.function_name = name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
        self.memory_limit_in_mb = 512
        self.aws_request_id = "req-test-0001"
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = "2026/11/28/[$LATEST]test"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@pytest.fixture
def lambda_context() -> LambdaContext:
    return LambdaContext()


@pytest.fixture
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """For a test that must stay socket-free whatever its marks."""
    _block_sockets_and_processes(monkeypatch)
