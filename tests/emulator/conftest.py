"""What the emulator tests share: `python -m local serve` as a real process on a free port
(`Emulator`, for start-up, reload and signals), a private Redis per test module, temporary
templates. Most tests drive the app in this process instead: see in_process.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from local.redis_server import RedisServer, free_port
from tests.conftest import ROOT

# Variables the outer test session sets for its own use; an emulator must not inherit them.
_SESSION_ONLY = ("REDIS_URL", "DATA_DIR")


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SESSION_ONLY and not k.startswith("PREVIEW_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_local(args: Sequence[str], env: dict[str, str], stdin: str | None = None,
              timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "local", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=timeout)


class Emulator:
    """One `python -m local serve` process."""

    def __init__(self, workdir: Path, args: Sequence[str], env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stdout_path = workdir / f"emulator-{self.port}.out"
        self.stderr_path = workdir / f"emulator-{self.port}.err"
        self.args = ["serve", "--port", str(self.port), *args]
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> Emulator:
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen([sys.executable, "-m", "local", *self.args], cwd=ROOT,
                                            env=self.env, stdout=out, stderr=err)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"emulator exited ({self.process.returncode}): {self.stderr}")
            # The banner is printed once the app (worker, schedules) has started.
            if "Preview service emulator on" in self.stderr and _accepts(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"emulator did not start within {timeout} s: {self.stderr}")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)  # type: ignore[arg-type]

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis of this test module's own, on a free loopback port."""
    server = RedisServer(tmp_path_factory.mktemp("emulator-redis")).start()
    yield server
    server.stop()


TEMPLATE_HEAD = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
"""


def write_template(directory: Path, body: str, name: str = "template.yaml") -> Path:
    path = directory / name
    path.write_text(TEMPLATE_HEAD + body.replace("@ROOT@", str(ROOT)))
    return path
