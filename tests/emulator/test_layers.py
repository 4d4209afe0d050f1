"""local/ in layers, read from the modules' own imports (in functions and for type checking
too): each imports only the layers below it, as local/__init__.py lists them; the gateway never
reaches the service's code, nor the intrinsics the template model."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from tests.conftest import ROOT

# Top to bottom, as in local/__init__.py.
LAYERS = [
    "local.__main__", "local.serve", "local.reload", "local.invoke", "local.launch", "local.startup",
    "local.preview", "local.server", "local.runtime", "local.events", "local.openapi", "local.environment",
    "local.template", "local.intrinsics", "local.schedules", "local.isolation", "local.redis_embed",
    "local.redis_server", "local.errors",
]


def _imports(module: str) -> Iterator[str]:
    """Every module `module` imports (at the top, in functions, for type checking); for
    `from package import name`, the submodule when `name` is one."""
    path = ROOT / (module.replace(".", "/") + ".py")
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                is_module = (ROOT / (submodule.replace(".", "/") + ".py")).exists() or \
                    (ROOT / submodule.replace(".", "/") / "__init__.py").exists()
                yield submodule if is_module else node.module


def _closure(module: str) -> set[str]:
    """`module` and the modules of local/ it reaches through imports."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(m for m in _imports(current) if m.startswith("local.") and m != current)
    return seen


def test_the_gateway_never_imports_the_service() -> None:
    gateway_modules = _closure("local.server")
    assert {"local.runtime", "local.events", "local.template", "local.intrinsics"} <= gateway_modules
    assert "local.preview" not in gateway_modules
    for module in gateway_modules:
        assert not [m for m in _imports(module) if m == "shared" or m.startswith("shared.")], module


def test_intrinsics_know_nothing_of_the_template_model() -> None:
    assert _closure("local.intrinsics") == {"local.intrinsics", "local.errors"}


def test_every_module_has_its_layer() -> None:
    modules = {f"local.{p.stem}" for p in (ROOT / "local").glob("*.py") if p.stem != "__init__"}
    assert modules == set(LAYERS)


def test_each_module_imports_only_the_layers_below() -> None:
    for high, module in enumerate(LAYERS):
        for imported in _imports(module):
            if imported.startswith("local."):
                assert LAYERS.index(imported) > high, f"{module} imports {imported}"
