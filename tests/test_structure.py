"""The layout the architecture depends on, read from the code's own imports and literals:
no import cycle in shared/ or local/ (function-level imports count), shared/ never imports
functions/ or local/, the contract never imports what uses it, the client (preview_client/)
takes only the contract from the service, and each fact has one home."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ("shared", "functions", "local", "preview_client")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The project module `name` refers to (a module, or the package holding it)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """Every project module `module` imports, at the top, in functions or for type checking."""
    tree = ast.parse(MODULES[module].read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # `from shared.artifacts import layout` names the submodule when there is one
            targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
                       for alias in node.names]
        else:
            continue
        found.update(t for t in (_resolve(name) for name in targets) if t and t != module)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def cycles(prefix: str) -> list[list[str]]:
    """Strongly connected components of more than one module among those under `prefix`."""
    nodes = [m for m in GRAPH if m == prefix or m.startswith(prefix + ".")]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in GRAPH[node]:
            if other not in nodes:
                continue
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in nodes:
        if node not in index:
            visit(node)
    return found


@pytest.mark.parametrize("package", ["shared", "local", "preview_client"])
def test_no_import_cycles(package: str) -> None:
    assert cycles(package) == []


def test_the_core_never_imports_functions_or_the_emulator() -> None:
    for module, imported in GRAPH.items():
        if module.startswith("shared"):
            assert not {m for m in imported if m.startswith(("functions", "local", "preview_client"))}, module


# preview_client/ top to bottom: each module imports only those below. Of the service it takes
# the contract and admission's body decoding (for `preview validate`), never a handler, the
# emulator, the queue or Redis.
CLIENT_LAYERS = [
    "preview_client.__main__", "preview_client", "preview_client.cli", "preview_client.verify",
    "preview_client.offline", "preview_client.progress", "preview_client.client", "preview_client.errors",
]
CLIENT_TAKES = {"shared.contract", "shared.api", "shared.errors", "shared.settings"}


def test_the_client_has_its_layers_and_takes_only_the_contract() -> None:
    assert {m for m in MODULES if m.startswith("preview_client")} == set(CLIENT_LAYERS)
    for high, module in enumerate(CLIENT_LAYERS):
        for imported in GRAPH[module]:
            if imported.startswith("preview_client"):
                assert CLIENT_LAYERS.index(imported) > high, f"{module} imports {imported}"
            else:
                assert imported in CLIENT_TAKES, f"{module} imports {imported}"
    reached = set().union(*(reach(m) for m in CLIENT_LAYERS))
    assert not {m for m in reached if m.startswith(("functions", "local", "shared.queue", "shared.redis_client",
                                                    "shared.wiring", "shared.worker", "shared.render"))}


def test_the_contract_imports_nothing_that_uses_it() -> None:
    allowed = {"shared.errors", "shared.media", "shared.payload_check", "shared.records", "shared.settings"}
    assert {m for m in GRAPH["shared.contract"] if m.startswith("shared.")} <= allowed
    for module in GRAPH:
        if module.startswith("shared.artifacts"):
            assert not {m for m in GRAPH[module] if m.startswith(("shared.render", "shared.worker"))}, module


def _constructions(name: str) -> Iterator[str]:
    """Modules outside tests that call `name(...)`."""
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == name:
                yield module


def test_queues_and_stores_are_built_in_one_place() -> None:
    assert set(_constructions("JobQueue")) == {"shared.wiring"}
    assert set(_constructions("build_store")) == {"shared.wiring"}
    assert set(_constructions("WorkerKick")) == {"shared.wiring"}


def _string_literals(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.value


def test_a_previews_file_names_live_in_the_layout_module() -> None:
    names = {"container.json", "preview.json", "poster.png", "captions.vtt", "preview.mp4", "preview."}
    for module, path in MODULES.items():
        if module == "shared.artifacts.layout":
            continue
        written = {text for text in _string_literals(path) if text in names}
        assert not written, f"{module} spells {sorted(written)}"


# local/ top to bottom, as local/__init__.py lists it: each module imports only those below.
LOCAL_LAYERS = [
    "local.__main__", "local.serve", "local.reload", "local.invoke", "local.launch", "local.startup",
    "local.preview", "local.server", "local.cors", "local.runtime", "local.events", "local.openapi", "local.sigv4",
    "local.environment", "local.template", "local.intrinsics", "local.samconfig", "local.schedules", "local.isolation",
    "local.redis_embed", "local.redis_cluster", "local.redis_server", "local.errors",
]


def reach(module: str) -> set[str]:
    """`module` and every project module it reaches through imports."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(GRAPH[current])
    return seen


def test_every_emulator_module_has_its_layer() -> None:
    assert {m for m in MODULES if m.startswith("local.")} == set(LOCAL_LAYERS)
    for high, module in enumerate(LOCAL_LAYERS):
        for imported in GRAPH[module]:
            if imported.startswith("local."):
                assert LOCAL_LAYERS.index(imported) > high, f"{module} imports {imported}"


def test_the_gateway_emulator_is_generic() -> None:
    """API Gateway, Lambda and EventBridge stand-ins know nothing of this service; its extras
    (artifact links, metrics, the worker thread, the kick) are local.preview's."""
    gateway = reach("local.server")
    assert {"local.runtime", "local.events", "local.template", "local.intrinsics"} <= gateway
    assert not {m for m in gateway if m == "local.preview" or m.startswith("shared")}
    assert reach("local.intrinsics") == {"local.intrinsics", "local.errors"}


def test_the_handlers_routes_are_the_templates() -> None:
    from cfnlint.decode import decode

    from shared import api

    template, _ = decode(str(ROOT / "template.yaml"))
    declared = {event["Properties"]["Path"] for resource in template["Resources"].values()
                for event in (resource.get("Properties") or {}).get("Events", {}).values()
                if event.get("Type") == "HttpApi"}
    built = {api.JOB_ROUTE, f"{api.JOB_ROUTE}/{{jobId}}/status", f"{api.JOB_ROUTE}/{{jobId}}/artifact",
             api.QUEUE_METRICS_ROUTE, api.WORKER_HEALTH_ROUTE, api.JOBS_ROUTE, f"{api.JOB_ROUTE}/{{jobId}}",
             f"{api.JOB_ROUTE}/{{jobId}}/retry", f"{api.JOB_ROUTE}/{{jobId}}/cancel"}  # JOBS_ROUTE: GET and POST
    assert declared == built
    # and each handler matches its route with these (the fixtures drive every route through it)
    for folder in ("enqueue_job", "enqueue_jobs", "job_status", "job_artifact", "queue_metrics", "worker_health",
                   "list_jobs", "job_detail", "retry_job", "cancel_job"):
        literals = _string_literals(ROOT / "functions" / folder / "app.py")
        assert not [text for text in literals if "/api/preview" in text], folder
