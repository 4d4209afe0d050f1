"""The Lambda packages as packaged: `deploy.package` builds every function of the template for
its runtime (python3.12, manylinux wheels; cached in .build-cache, so a warm build only
copies), and each folder, under a Python 3.12 interpreter with NOTHING but that folder on
sys.path (`-I -S`: no site-packages, no PYTHONPATH; not even the runtime's boto3), imports its
handler and answers every fixture of events/<function>/ against a private Redis: the status
or summary events/expected.json gives. The render worker really renders (PyAV, numpy and
Pillow wheels of 3.12 must load). Sizes stay within their budgets, and no extension module or
bytecode of another Python is shipped.

Skipped, with the reason, where no Python 3.12 interpreter exists or the build cannot reach a
package index; under CI (CI=true), which has both, these fail instead.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from deploy import lambda_runtime, package
from tests.conftest import EVENTS, ROOT
from tests.handlers import EXPECTED, apply_given

pytestmark = pytest.mark.process

PLANS = {plan.logical_id: plan for plan in package.plans()}
HTTP_BUDGET_MB = 60
WORKER_BUDGET_MB = 200
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# What pip prints when it cannot reach an index (rather than a requirement that truly has no
# wheel for the target, which is a build error to fail on).
_OFFLINE = ("Failed to establish a new connection", "Network is unreachable", "Temporary failure in name resolution",
            "Name or service not known", "ConnectTimeoutError", "Could not fetch URL", "ProxyError",
            "No matching distribution found")


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI has a Python 3.12 and package index access: this must run there)")
    pytest.skip(reason)


@dataclass(frozen=True)
class Packages:
    python: str
    built: dict[str, package.Built]
    log: list[str]
    seconds: float


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Packages]:
    """Every function built into a folder of this run (the dependencies from .build-cache,
    shared with `make package`: only the first build on a machine installs anything)."""
    target = next(iter(PLANS.values())).target
    python = package.find_interpreter(target)
    if python is None:
        _unavailable(f"no Python {target.python_version} interpreter here (looked at $TARGET_PYTHON, "
                     f"python{target.python_version} on PATH, pyenv's versions, /usr/bin)")
    assert python is not None
    lines: list[str] = []
    out = tmp_path_factory.mktemp("package")
    started = time.perf_counter()
    try:
        built = package.build(out=out, python=python, log=lines.append)
    except package.BuildError as exc:
        offline = [line for line in lines if any(mark in line for mark in _OFFLINE)]
        if not offline:
            raise
        _unavailable(f"the build cannot reach a package index: {offline[0].strip()} ({exc})")
    seconds = time.perf_counter() - started
    print(f"\npackages built in {seconds:.1f} s: " + ", ".join(
        f"{b.plan.logical_id} {b.bytes / package.MB:.1f} MB" for b in built))
    yield Packages(python, {b.plan.logical_id: b for b in built}, lines, seconds)
    shutil.rmtree(out, ignore_errors=True)  # 0.3 GB; the cache keeps what a rebuild needs


def test_every_function_is_built_within_its_budget_for_the_runtime(packages: Packages) -> None:
    assert set(packages.built) == set(PLANS) and len(PLANS) == 12
    magic = package.magic_number(packages.python)
    for logical_id, built in packages.built.items():
        size_mb = built.bytes / package.MB
        budget = HTTP_BUDGET_MB if built.plan.http else WORKER_BUDGET_MB
        assert size_mb <= budget, f"{logical_id}: {size_mb:.1f} MB unzipped, budget {budget} MB"
        assert built.compiled_with == packages.python, logical_id
        names = [p.name for p in built.path.rglob("*")]
        assert not [n for n in names if "cpython-311" in n], logical_id
        assert not [n for n in names if n.endswith(".so") and "cpython-3" in n and "cpython-312" not in n], logical_id
        assert package.problems(built.path, built.plan.target, magic) == [], logical_id
        # the AWS SDK is the runtime's, and the renderer only the worker's
        top = {p.name for p in built.path.iterdir()}
        assert not top & {"boto3", "botocore", "s3transfer"}, logical_id
        assert ("av" in top) == (logical_id == "RenderWorkerFunction"), logical_id
        assert (built.path / "functions" / built.plan.folder / "app.py").is_file(), logical_id
        assert (built.path / "shared" / "__pycache__").is_dir(), logical_id


def test_a_warm_build_only_copies(packages: Packages, tmp_path: Path) -> None:
    """With the cache filled (by the fixture's build), a rebuild resolves and installs nothing."""
    lines: list[str] = []
    started = time.perf_counter()
    [built] = package.build(["JobStatusFunction"], out=tmp_path, python=packages.python, log=lines.append)
    seconds = time.perf_counter() - started
    print(f"\nwarm build of JobStatusFunction: {seconds:.1f} s (all seven: {packages.seconds:.1f} s)")
    assert any(line.startswith("resolution cached") for line in lines), lines
    assert any(line.startswith("dependencies cached") for line in lines), lines
    assert not [line for line in lines if "pip:" in line or line.startswith(("installing", "resolving"))], lines
    assert built.bytes == packages.built["JobStatusFunction"].bytes


# --------------------------------------------------------------------------- the packaged process

# Runs in the packaged folder the way the Lambda runtime runs a function: _HANDLER imported from
# LAMBDA_TASK_ROOT, then one invocation per event path read from stdin (the first one cold),
# each answer and the modules loaded from outside the folder and the standard library written
# as one JSON line to the fd given.
DRIVER = '''\
import importlib, json, os, sys
root = os.environ["LAMBDA_TASK_ROOT"]
sys.path.insert(0, root)
stdlib = os.path.join(sys.base_prefix, "lib")
out = open(int(sys.argv[1]), "w", buffering=1)
out.write(json.dumps({"sys_path": sys.path, "base_prefix": sys.base_prefix, "version": sys.version_info[:2],
                      "no_site": sys.flags.no_site, "isolated": sys.flags.isolated}) + "\\n")
module, _, name = os.environ["_HANDLER"].rpartition(".")
handler = getattr(importlib.import_module(module), name)
''' + lambda_runtime.context_source(600_000) + '''for line in sys.stdin:
    with open(line.strip(), "rb") as handle:
        event = json.load(handle)
    response = handler(event, Context())
    files = {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items())}
    foreign = sorted(n for n, f in files.items() if f and not f.startswith((root, stdlib)))
    loaded = sorted({n.partition(".")[0] for n in files})
    out.write(json.dumps({"response": response, "foreign": foreign, "loaded": loaded}, default=str) + "\\n")
'''


class PackagedFunction:
    """One warm execution environment of a packaged function: a python3.12 -I -S process."""

    def __init__(self, python: str, built: package.Built, env: dict[str, str], logs: Path) -> None:
        self.built = built
        self.logs = logs
        read_end, write_end = os.pipe()
        self.stdout = (logs / "stdout.txt").open("wb")
        self.stderr = (logs / "stderr.txt").open("wb")
        self.process = subprocess.Popen([python, "-I", "-S", "-c", DRIVER, str(write_end)], env=env, cwd="/",
                                        pass_fds=(write_end,), stdin=subprocess.PIPE, stdout=self.stdout,
                                        stderr=self.stderr)
        os.close(write_end)
        self.answers = os.fdopen(read_end, "rb")
        self.hello = self._read(60)

    def _read(self, timeout: float) -> dict[str, Any]:
        ready, _, _ = select.select([self.answers], [], [], timeout)
        line = self.answers.readline() if ready else b""
        if not line:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"{self.built.plan.logical_id} gave no answer (exit {self.process.returncode}):\n"
                                 + (self.logs / "stderr.txt").read_text(errors="replace")[-4000:])
        answer: dict[str, Any] = json.loads(line)
        return answer

    def invoke(self, event: Path, timeout: float = 120) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{event}\n".encode())
        self.process.stdin.flush()
        return self._read(timeout)

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.answers.close()
        self.stdout.close()
        self.stderr.close()


def lambda_env(built: package.Built, redis_url: str, data_dir: str) -> dict[str, str]:
    """The template's environment of the function and what the Lambda runtime sets; Redis is
    the test's, the artifacts the local store on the test's folder, the enqueue kick off (it
    would call the Lambda API)."""
    plan = built.plan
    env = dict(plan.environment)
    env.update({
        "REDIS_URL": redis_url, "DATA_DIR": data_dir, "ARTIFACT_BUCKET": "", "RENDER_WORKER_FUNCTION": "",
        **lambda_runtime.environment(plan.logical_id, built.path, plan.handler, runtime=plan.target.runtime),
    })
    return env


@pytest.fixture
def running(packages: Packages, redis_url: str, tmp_path: Path) -> Iterator[Any]:
    started: list[PackagedFunction] = []

    def start(logical_id: str) -> PackagedFunction:
        built = packages.built[logical_id]
        logs = tmp_path / f"logs-{logical_id}"
        logs.mkdir()
        function = PackagedFunction(packages.python, built, lambda_env(built, redis_url, os.environ["DATA_DIR"]),
                                    logs)
        started.append(function)
        return function

    yield start
    for function in started:
        function.close()


# What an HTTP function's cold start must not load: the AWS SDK (no route here calls AWS with
# the local store; with S3 only the artifact links need it), the long-running worker's
# Prometheus client, the renderer's libraries, and the payload validator outside enqueue.
NEVER_IN_HTTP = {"boto3", "botocore", "prometheus_client", "av", "numpy", "PIL"}
VALIDATOR = {"jsonschema", "referencing", "rpds"}

FUNCTIONS = [pytest.param(logical_id, id=logical_id,
                          marks=[pytest.mark.slow] if logical_id == "RenderWorkerFunction" else [])
             for logical_id in PLANS]


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_packaged_function_answers_its_fixtures(logical_id: str, running: Any, rdb: redis.Redis) -> None:
    plan = PLANS[logical_id]
    function = running(logical_id)
    hello = function.hello
    stdlib = os.path.join(hello["base_prefix"], "lib")
    assert hello["version"] == list(plan.target.version_info)
    assert hello["no_site"] and hello["isolated"]
    assert hello["sys_path"][0] == str(function.built.path)
    assert all(entry.startswith(stdlib) and "site-packages" not in entry for entry in hello["sys_path"][1:]), hello
    cases = sorted(key for key in EXPECTED if key.split("/")[0] == plan.folder)
    assert cases, f"no fixtures for {plan.folder}"
    for number, case in enumerate(cases):
        expected = EXPECTED[case]
        rdb.flushall()
        apply_given(expected.get("given", []))
        started = time.perf_counter()
        answer = function.invoke(EVENTS / f"{case}.json")
        seconds = time.perf_counter() - started
        print(f"\n{case}: {'first (cold)' if number == 0 else 'warm'} invocation {seconds * 1000:.0f} ms")
        assert answer["foreign"] == [], f"{case}: modules from outside the package: {answer['foreign']}"
        loaded = set(answer["loaded"])
        if plan.http:
            unwanted = NEVER_IN_HTTP | (set() if plan.folder in ("enqueue_job", "enqueue_jobs") else VALIDATOR)
            assert not loaded & unwanted, f"{case} loaded {sorted(loaded & unwanted)}"
        response = answer["response"]
        if plan.http:
            assert response["statusCode"] == expected["status"], (case, response.get("body"))
            assert response["headers"]["Content-Type"] == "application/json", case
            assert isinstance(json.loads(response["body"]), dict), case
        else:
            for key, value in expected["expect"].items():
                assert response.get(key) == value, (case, response)
    if logical_id == "RenderWorkerFunction":  # the kicked job was really rendered, by the packaged PyAV
        videos = list((Path(os.environ["DATA_DIR"]) / "previews").glob("*/preview-job-0003/preview.*[!n]"))
        assert [v for v in videos if v.suffix in {".mp4", ".webm", ".gif"} and v.stat().st_size > 1000], videos


def test_ci_runs_make_test() -> None:
    """CI's entry point runs `make test` (this module included): the reason a missing Python
    3.12 or index fails there instead of skipping."""
    script = (ROOT / ".ci" / "run").read_text()
    assert "make test" in script


def test_a_foreign_architecture_is_not_given_the_hosts_strip() -> None:
    """Building arm64 packages on an x86_64 machine (or the reverse): the host's GNU strip
    cannot read the target's libraries (it once stopped the build), so only a strip of that
    machine or LLVM's is used, else none."""
    import platform

    foreign = "aarch64" if platform.machine() != "aarch64" else "x86_64"
    tool = package.elf_strip_tool(foreign)
    assert tool is None or Path(tool).name in {f"{foreign}-linux-gnu-strip", "llvm-strip"}, tool
