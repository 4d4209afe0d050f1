"""What the client tests share: the `preview` command run as a real process, emulators of their
own (`python -m local serve` on a free port, each with its private embedded Redis unless told
otherwise), and job documents taken from the enqueue fixtures."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import pytest

from tests.conftest import ROOT, load_event
from tests.emulator.conftest import Emulator, child_env

API_KEY = "client-test-key"
# The SigV4 emulator's local credentials and region (any strings: nothing leaves the machine).
KEY, SECRET, REGION = "AKIDCLIENTTEST", "client-test-secret", "eu-west-1"
_AWS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
        "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE")


def client_env(tmp: Path, **extra: str) -> dict[str, str]:
    """A shell for the command: none of the session's AWS or PREVIEW_ settings, no AWS files of
    the developer, no instance metadata lookups; then `extra`."""
    env = {k: v for k, v in child_env().items() if k not in _AWS}
    env.update(HOME=str(tmp), AWS_SHARED_CREDENTIALS_FILE=str(tmp / "no-credentials"),
               AWS_CONFIG_FILE=str(tmp / "no-config"), AWS_EC2_METADATA_DISABLED="true")
    env.update(extra)
    return env


def signing_env(tmp: Path, **extra: str) -> dict[str, str]:
    return client_env(tmp, **{"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": REGION, **extra})


def preview(args: Sequence[str], env: dict[str, str], stdin: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m preview_client ARGS` to its end."""
    return subprocess.run([sys.executable, "-m", "preview_client", *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=timeout)


class Running:
    """`python -m preview_client ARGS` still running: its stderr is read line by line as it comes."""

    def __init__(self, args: Sequence[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "preview_client", *args], cwd=ROOT, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[tuple[float, str]] = []  # (monotonic time, line) of stderr
        self._reader = threading.Thread(target=self._read, args=(self.process.stderr,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait_for(self, text: str, timeout: float = 30) -> float:
        """When the first stderr line holding `text` came."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for when, line in list(self.lines):
                if text in line:
                    return when
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"no stderr line with {text!r}: {self.stderr}")

    def finish(self, timeout: float = 60) -> tuple[int, str, float]:
        """(exit code, stdout, when it ended)."""
        out, _ = self.process.communicate(timeout=timeout)
        ended = time.monotonic()
        self._reader.join(5)
        return self.process.returncode, out, ended

    @property
    def stderr(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def job_body(case: str) -> str:
    """The job document of an enqueue fixture, as its body holds it."""
    return str(load_event("enqueue_job", case)["body"])


def job_file(directory: Path, case: str, **changes: object) -> Path:
    """A job file from an enqueue fixture (its top-level fields changed by `changes`)."""
    document = json.loads(job_body(case))
    document.update(changes)
    path = directory / f"{case}-{document['jobId']}.json"
    path.write_text(json.dumps(document))
    return path


def start_emulator(directory: Path, args: Sequence[str], **env: str) -> Emulator:
    """An emulator with its own data folder (and embedded Redis, unless REDIS_URL is given)."""
    data = directory / "data"
    shell = child_env(**env)
    for name in _AWS:
        if name not in env:
            shell.pop(name, None)
    shell.update(HOME=str(directory), AWS_SHARED_CREDENTIALS_FILE=str(directory / "no-credentials"),
                 AWS_CONFIG_FILE=str(directory / "no-config"))
    shell.update(env)
    return Emulator(directory, ["--data-dir", str(data), *args], shell).start()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """An emulator with its worker, in API key mode."""
    emulator = start_emulator(tmp_path_factory.mktemp("keyed"), ["--api-key", API_KEY, "--no-schedules"])
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """An emulator with its worker, IAM routes checked against KEY/SECRET in REGION."""
    emulator = start_emulator(tmp_path_factory.mktemp("signed"), ["--no-schedules"], AWS_ACCESS_KEY_ID=KEY,
                              AWS_SECRET_ACCESS_KEY=SECRET, AWS_REGION=REGION)
    yield emulator
    emulator.stop()


def data_dir(emulator: Emulator) -> Path:
    return Path(emulator.args[emulator.args.index("--data-dir") + 1])


def assert_exit(result: subprocess.CompletedProcess[str], code: int) -> None:
    assert result.returncode == code, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


@pytest.fixture
def shell(tmp_path: Path) -> dict[str, str]:
    return client_env(tmp_path)


def keyed_args(emulator: Emulator, *args: str) -> list[str]:
    return ["--url", emulator.url, "--api-key", API_KEY, *args]

