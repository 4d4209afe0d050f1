"""Request bodies in the emulator are read chunk by chunk: one over HTTP API's 10 MB limit is
refused (413) without reading the rest, and the bodies held at once stay within a budget, so a
client cannot make the emulator's memory grow with what it sends."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from local.runtime import FunctionRuntime
from local.server import MAX_REQUEST_BYTES, BodyBudget, Emulator, ServerOptions
from local.template import load_template
from tests.emulator.conftest import write_template

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
"""
CHUNK = 1024 * 1024


def call(app: Any, chunks: int, headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, int]:
    """(status, chunks the app read) of a POST whose body comes in `chunks` chunks of 1 MiB."""
    sent = 0
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent < chunks:
            sent += 1
            return {"type": "http.request", "body": b"x" * CHUNK, "more_body": sent < chunks}
        await asyncio.sleep(3600)  # the client waits for the answer
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/echo/1", "raw_path": b"/echo/1", "query_string": b"", "root_path": "",
             "headers": headers or [(b"host", b"127.0.0.1:3000")], "client": ("127.0.0.1", 5),
             "server": ("127.0.0.1", 3000)}
    asyncio.run(app(scope, receive, send))
    return status[0], sent


@pytest.fixture
def app(tmp_path: Path) -> Any:
    template = load_template(write_template(tmp_path, TEMPLATE))
    runtime = FunctionRuntime(template)
    runtime.load()
    return Emulator(template, runtime, ServerOptions(schedules=False)).app()


@pytest.mark.usefixtures("no_sockets")
def test_a_body_over_the_limit_is_refused_without_reading_the_rest(app: Any) -> None:
    assert call(app, 2)[0] == 200
    status, read = call(app, 400)  # a 400 MiB upload
    assert status == 413
    assert read == MAX_REQUEST_BYTES // CHUNK + 1  # stopped at the first chunk past 10 MiB


@pytest.mark.usefixtures("no_sockets")
def test_a_declared_length_over_the_limit_is_refused_before_reading(app: Any) -> None:
    headers = [(b"host", b"127.0.0.1:3000"), (b"content-length", str(400 * CHUNK).encode())]
    assert call(app, 400, headers) == (413, 0)


@pytest.mark.usefixtures("no_sockets")
def test_the_body_budget_makes_requests_wait_then_gives_up() -> None:
    async def scenario() -> list[Any]:
        budget = BodyBudget(total=10, wait_s=0.3)
        assert await budget.reserve(8)
        waiter = asyncio.create_task(budget.reserve(5))
        await asyncio.sleep(0.05)
        assert not waiter.done()  # 8 + 5 > 10: it waits
        await budget.release(8)
        granted = await waiter
        late = await budget.reserve(6)  # 5 + 6 > 10, nobody releases: gives up after wait_s
        return [granted, late, budget.used]

    assert asyncio.run(scenario()) == [True, False, 5]


# --------------------------------------------------------------------------- a real process


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def chunked_upload(port: int, megabytes: int, answers: list[str]) -> None:
    """POST `megabytes` MiB as a chunked body, as fast as the server takes it, until it answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"POST /api/preview/job HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                     b"x-api-key: limit-test\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n" % CHUNK + b"x" * CHUNK + b"\r\n"
        try:
            for _ in range(megabytes):
                sock.sendall(chunk)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed while we were still sending
        sock.settimeout(30)
        data = b""
        try:
            while b"\r\n" not in data:
                more = sock.recv(65536)
                if not more:
                    break
                data += more
        except OSError:
            pass
        answers.append(data.split(b"\r\n", 1)[0].decode("latin-1"))


@pytest.mark.process
@pytest.mark.slow
def test_oversized_and_concurrent_bodies_keep_the_emulator_small(tmp_path: Path, private_redis: Any,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from tests.emulator.conftest import Emulator as EmulatorProcess
    from tests.emulator.conftest import child_env

    emulator = EmulatorProcess(tmp_path, ["--data-dir", str(tmp_path / "data"), "--no-worker", "--no-schedules",
                                          "--api-key", "limit-test", "--no-access-log"],
                               child_env(REDIS_URL=private_redis.url)).start()
    try:
        assert emulator.process is not None
        pid = emulator.process.pid
        with emulator.client() as client:  # warm: the handlers answer once before measuring
            client.post("/api/preview/job", content=json.dumps({"x": 1}), headers={"x-api-key": "limit-test"})
        before = rss_kib(pid, "VmRSS")
        answers: list[str] = []
        start = time.monotonic()
        chunked_upload(emulator.port, 400, answers)
        one = time.monotonic() - start
        after_one = rss_kib(pid, "VmHWM")
        threads = [threading.Thread(target=chunked_upload, args=(emulator.port, 60, answers)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        peak = rss_kib(pid, "VmHWM")
        assert answers and all(" 413 " in answer for answer in answers), answers
        growth_one, growth_all = (after_one - before) / 1024, (peak - before) / 1024
        with capsys.disabled():
            print(f"\nbody limit: 400 MiB chunked POST -> 413 in {one:.2f} s; emulator RSS {before / 1024:.0f} MiB "
                  f"before, peak +{growth_one:.0f} MiB after it, +{growth_all:.0f} MiB after 8 concurrent 60 MiB "
                  f"uploads")
        assert growth_one < 40
        assert growth_all < 120  # 8 x 10 MiB read at most, within the 32 MiB budget plus copies
    finally:
        emulator.stop()
