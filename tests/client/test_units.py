"""The client's pieces that need no service: the progress display, where the signing region comes
from, the routes it calls (the template's, through shared.api), and what installing the client
brings (everything it imports, and nothing new for the Lambda packages)."""

from __future__ import annotations

import ast
import importlib.metadata
import io
import re
import sys
import tomllib
from pathlib import Path

import pytest

from preview_client import client
from preview_client.progress import Progress
from shared import api
from tests.conftest import ROOT
from tests.test_install_extras import closure, requirement_name


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_one_bar_is_redrawn_in_place() -> None:
    screen = Terminal()
    progress = Progress(screen, "job-1")
    assert progress.tty
    for state, percent in (("waiting", 0), ("active", 40), ("active", 100), ("completed", 100)):
        progress.update({"state": state, "progress": percent, "attemptsMade": 1, "attemptsMax": 5})
    progress.finish()
    text = screen.getvalue()
    assert text.count("\r") == 4 and text.endswith("\n") and text.count("\n") == 1
    frames = [frame for frame in text.split("\r") if frame]
    assert frames[1].startswith("job-1 [" + "#" * 12 + "-" * 18 + "]  40% active attempt 1/5")
    assert frames[-1].startswith("job-1 [" + "#" * 30 + "] 100% completed")
    # each frame covers what the one before showed (a shorter line is padded with spaces)
    assert all(len(later.rstrip("\n")) >= len(earlier.rstrip()) for earlier, later in zip(frames, frames[1:],
                                                                                          strict=False))


def test_elsewhere_a_plain_line_per_change() -> None:
    log = io.StringIO()
    progress = Progress(log, "job-1")
    assert not progress.tty
    for state, percent in (("waiting", 0), ("waiting", 0), ("active", 50), ("active", 50), ("completed", 100)):
        progress.update({"state": state, "progress": percent})
    progress.finish()
    assert log.getvalue() == "job-1 waiting 0%\njob-1 active 50%\njob-1 completed 100%\n"


@pytest.mark.parametrize(("url", "flag", "env", "expected"), [
    ("https://abc123.execute-api.eu-central-1.amazonaws.com", None, {"AWS_REGION": "us-west-2"}, "eu-central-1"),
    ("https://abc123.execute-api.eu-central-1.amazonaws.com", "ap-south-1", {}, "ap-south-1"),
    ("http://127.0.0.1:3000", None, {"AWS_REGION": "us-west-2", "AWS_DEFAULT_REGION": "eu-west-3"}, "us-west-2"),
    ("http://127.0.0.1:3000", None, {"AWS_DEFAULT_REGION": "eu-west-3"}, "eu-west-3"),
])
def test_the_signing_region(url: str, flag: str | None, env: dict[str, str], expected: str) -> None:
    assert client.resolve_region(url, flag, None, env) == expected


def test_the_signing_region_falls_back_to_the_profiles_then_the_emulators(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config"
    config.write_text("[profile ci]\nregion = sa-east-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    assert client.resolve_region("http://127.0.0.1:3000", None, "ci", {}) == "sa-east-1"
    assert client.resolve_region("http://127.0.0.1:3000", None, None, {}) == client.DEFAULT_REGION == "us-east-1"


def test_the_client_calls_the_handlers_routes() -> None:
    assert client.JOB_ROUTE == api.JOB_ROUTE
    assert client.QUEUE_METRICS_ROUTE == api.QUEUE_METRICS_ROUTE
    assert client.WORKER_HEALTH_ROUTE == api.WORKER_HEALTH_ROUTE
    assert client.JOBS_ROUTE == api.JOBS_ROUTE


def _requirement_names(requirements: list[str]) -> set[str]:
    return {requirement_name(r) for r in requirements}


def test_the_client_extra_brings_everything_the_client_imports() -> None:
    """`pip install 'preview-service[client]'` (the dependencies and the client extra) gives a
    working `preview`: every third-party module preview_client/ imports, and the shared modules
    it takes, come with it; the local extra includes the client."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    installed = closure(_requirement_names(project["dependencies"] + extras["client"]))
    providers = importlib.metadata.packages_distributions()
    # what the client imports, and what the shared modules it imports import in turn
    from tests.test_structure import CLIENT_LAYERS, MODULES, reach

    modules = set().union(*(reach(m) for m in CLIENT_LAYERS))
    missing = {}
    for module in sorted(modules):
        for node in ast.walk(ast.parse(MODULES[module].read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in {"shared", "preview_client", "hiredis"}:
                    continue
                dists = {d.lower().replace("_", "-") for d in providers.get(top, [])}
                if not dists & installed:
                    missing[top] = module
    assert missing == {}
    assert "httpx" in _requirement_names(extras["client"])
    assert any(re.search(r"preview-service\[.*\bclient\b.*\]", r) for r in extras["local"])
    assert project["scripts"] == {"preview": "preview_client.cli:main"}


def test_the_lambda_packages_do_not_get_the_client() -> None:
    from deploy.package import project_requirements

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    functions = pyproject["tool"]["preview-service"]["package"]["functions"]
    for extras in [(), *(tuple(f.get("extras", ())) for f in functions.values())]:
        assert "httpx" not in _requirement_names(project_requirements(pyproject["project"], extras))
