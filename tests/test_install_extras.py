"""What `pip install '.[local]'` brings is what the emulator imports: every third-party module
that shared/, functions/ or local/ import (at the top, in a function, or under a guard) comes
from a distribution the project's own dependencies or its `local` extra name (with the extras
`local` names, and what they all require), never only from the dev extra. A module the
emulator imports from the dev extra alone (cfn-lint was one) fails `make run` on a machine
without the dev tools."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.usefixtures("no_sockets")

PACKAGES = ("shared", "functions", "local")
OWN = {"shared", "functions", "local", "tests", "bench"}
# Imported only when present, each behind its own fallback (checked where it is used).
OPTIONAL = {"hiredis"}


def _top_level_imports() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in OWN and top not in sys.stdlib_module_names:
                        found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def closure(names: set[str]) -> set[str]:
    """The distributions `names` install, with everything they require (markers aside)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo.extend(requirement_name(r) for r in requires if "extra ==" not in r)
    return seen


def test_the_local_extra_brings_every_module_the_code_imports() -> None:
    from deploy.package import project_requirements

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # The dependencies, the local extra and any extra it names through the project itself
    # (`preview-service[render]`), expanded as the Lambda packages expand theirs.
    requirements = project_requirements(project, ["local"])
    wanted = {requirement_name(r) for r in requirements}
    # Extras asked for in a requirement (redis[hiredis]) install their own dependencies too.
    wanted |= {m.group(1).lower() for r in project["dependencies"] if (m := re.search(r"\[(\w+)\]", r))}
    installed = closure(wanted)
    providers = importlib.metadata.packages_distributions()
    missing = {}
    for module, users in sorted(_top_level_imports().items()):
        if module in OPTIONAL:
            continue
        dists = {d.lower().replace("_", "-") for d in providers.get(module, [])}
        assert dists, f"{module} (imported by {sorted(users)[0]}) is not installed at all"
        if not dists & installed:
            missing[module] = sorted(users)
    assert missing == {}, f"imported but only in the dev extra (or nowhere in the install): {missing}"
