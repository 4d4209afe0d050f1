"""One OpenAPI 3.1 document for every route of the template, and a Swagger UI page.

Operations come from the template's HttpApi events (summary: the function's Description,
description: its handler module's docstring); a body-carrying route gets the payload schema
from `schemas/*.schema.json` (draft-07 `definitions` moved to `components/schemas`) and the
request bodies of its event fixtures as examples; its responses are the status codes its
fixtures produce (`events/expected.json`), plus the 503 every route gives while Redis is
unreachable. Nothing here lists routes or status codes by hand."""

from __future__ import annotations

import json
import re
import sys
from http import HTTPStatus
from pathlib import Path
from typing import Any

from local.template import HttpRoute, Template

_BODY_METHODS = {"POST", "PUT", "PATCH"}
_ANY_METHODS = ("get", "post", "put", "patch", "delete")
_EXAMPLE_LIMIT = 16_384


def _schema_files(root: Path) -> list[Path]:
    return sorted((root / "schemas").glob("*.schema.json"))


def _load_schemas(root: Path) -> dict[str, dict[str, Any]]:
    """Each schema file's components, keyed by its title, refs rewritten to components."""
    components: dict[str, dict[str, Any]] = {}
    for path in _schema_files(root):
        schema = json.loads(path.read_text())
        title = re.sub(r"[^A-Za-z0-9._-]", "", str(schema.get("title") or path.name.split(".")[0]))
        definitions = schema.pop("definitions", {}) or {}
        # $id would re-base every $ref inside; $schema belongs to the standalone file.
        schema.pop("$id", None)
        schema.pop("$schema", None)

        def rewrite(node: Any, title: str = title) -> Any:
            if isinstance(node, dict):
                out = {k: rewrite(v) for k, v in node.items()}
                ref = out.get("$ref")
                if isinstance(ref, str):
                    if ref == "#":
                        out["$ref"] = f"#/components/schemas/{title}"
                    elif ref.startswith("#/definitions/"):
                        out["$ref"] = f"#/components/schemas/{title}.{ref.removeprefix('#/definitions/')}"
                return out
            if isinstance(node, list):
                return [rewrite(v) for v in node]
            return node

        components[title] = rewrite(schema)
        for name, definition in definitions.items():
            components[f"{title}.{name}"] = rewrite(definition)
    return components


def _examples(root: Path, template: Template, route: HttpRoute, schema: dict[str, Any] | None) -> dict[str, Any]:
    """Request bodies of the route's fixtures that the payload schema accepts (the fixtures
    of refused payloads would be poor examples)."""
    import jsonschema

    spec = template.functions[route.function]
    validator = jsonschema.Draft7Validator(schema) if schema else None
    examples: dict[str, Any] = {}
    for path in sorted((root / "events" / spec.folder).glob("*.json")):
        try:
            event = json.loads(path.read_text())
        except ValueError:
            continue
        body = event.get("body") if isinstance(event, dict) else None
        if event.get("routeKey") != route.route_key or not isinstance(body, str) or event.get("isBase64Encoded"):
            continue
        if len(body) > _EXAMPLE_LIMIT:
            continue
        try:
            value = json.loads(body)
        except ValueError:
            continue
        if validator is None or validator.is_valid(value):
            examples[path.stem] = {"value": value}
    return examples


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "description": "machine-readable code"},
        "message": {"type": "string", "description": "what went wrong, for people"},
        "errors": {
            "type": "array",
            "description": "every payload problem (400 on enqueue)",
            "items": {"type": "object", "properties": {"path": {"type": "string"}, "message": {"type": "string"}}},
        },
    },
    "additionalProperties": True,
}


def _expected(root: Path) -> dict[str, Any]:
    """events/expected.json: what each fixture produces (empty when absent or unreadable)."""
    try:
        expected: dict[str, Any] = json.loads((root / "events" / "expected.json").read_text())
    except (OSError, ValueError):
        return {}
    return expected


def _fixture_statuses(root: Path, expected: dict[str, Any], template: Template,
                      route: HttpRoute) -> dict[int, list[str]]:
    """Status code -> the fixtures of this route that produce it."""
    folder = template.functions[route.function].folder
    statuses: dict[int, list[str]] = {}
    for path in sorted((root / "events" / folder).glob("*.json")):
        status = (expected.get(f"{folder}/{path.stem}") or {}).get("status")
        try:
            route_key = json.loads(path.read_text()).get("routeKey")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(status, int) and route_key == route.route_key:
            statuses.setdefault(status, []).append(path.stem)
    return statuses


def _responses(root: Path, expected: dict[str, Any], template: Template, route: HttpRoute) -> dict[str, Any]:
    statuses = _fixture_statuses(root, expected, template, route)
    responses: dict[str, Any] = {}
    for status in sorted({*statuses, 503}):
        reason = HTTPStatus(status).phrase
        cases = statuses.get(status, [])
        if status == 503 and not cases:
            reason += ": Redis is unreachable or not ready (retry later)"
        schema: dict[str, Any] = {"$ref": "#/components/schemas/Error"} if status >= 400 else {"type": "object"}
        responses[str(status)] = {
            "description": reason + (f" (fixtures: {', '.join(cases)})" if cases else ""),
            "content": {"application/json": {"schema": schema}},
        }
    return responses


def _parameters(path: str) -> list[dict[str, Any]]:
    return [
        {"name": name.rstrip("+"), "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"\{([^}]+)\}", path)
    ]


def build_openapi(template: Template, *, protected: set[str] | None = None) -> dict[str, Any]:
    """`protected`: route keys that need the API key (None: no key configured)."""
    root = template.path.parent  # schemas/ and events/ sit beside the template
    schemas = _load_schemas(root)
    payload = next((name for name in schemas if "." not in name), None)
    expected = _expected(root)
    paths: dict[str, dict[str, Any]] = {}
    for route in template.routes():
        if route.path is None:
            continue
        spec = template.functions[route.function]
        module = sys.modules.get(spec.module)
        operation: dict[str, Any] = {
            "operationId": spec.logical_id if len(spec.routes) == 1 else f"{spec.logical_id}{route.event}",
            "summary": spec.description or spec.logical_id,
            "tags": [spec.folder],
            "responses": _responses(root, expected, template, route),
        }
        if module is not None and module.__doc__:
            operation["description"] = module.__doc__.strip()
        if _parameters(route.path):
            operation["parameters"] = _parameters(route.path)
        if route.method in _BODY_METHODS and payload:
            media: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{payload}"}}
            files = _schema_files(root)
            examples = _examples(root, template, route, json.loads(files[0].read_text()) if files else None)
            if examples:
                media["examples"] = examples
            operation["requestBody"] = {"required": True, "content": {"application/json": media}}
        if protected is not None:
            operation["security"] = [{"apiKey": []}, {"bearer": []}] if route.route_key in protected else []
            if route.route_key in protected:
                operation["responses"]["401"] = {"description": "missing or wrong API key"}
        openapi_path = re.sub(r"\{([^}]+)\+\}", r"{\1}", route.path)
        methods = _ANY_METHODS if route.method == "ANY" else (route.method.lower(),)
        for method in methods:
            paths.setdefault(openapi_path, {})[method] = operation
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Preview job service (local emulator)",
            "version": "local",
            "description": f"Routes of {template.path.name}, served by `python -m local serve`.",
        },
        "paths": paths,
        "components": {"schemas": {**schemas, "Error": ERROR_SCHEMA}},
    }
    if protected is not None:
        document["components"]["securitySchemes"] = {
            "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            "bearer": {"type": "http", "scheme": "bearer"},
        }
    return document


DOCS_ASSETS = "/docs/assets"
CDN = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5"


def swagger_ui_dir() -> Path | None:
    """The Swagger UI files the `swagger-ui-bundle` package ships (so /docs works offline)."""
    try:
        import swagger_ui_bundle  # type: ignore[import-untyped]
    except ImportError:
        return None
    folder = Path(swagger_ui_bundle.swagger_ui_path)
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def docs_html(local_assets: bool) -> str:
    """The Swagger UI page: its scripts from the installed bundle, else from a CDN."""
    base = DOCS_ASSETS if local_assets else CDN
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Preview service API (local)</title>
  <link rel="stylesheet" href="{base}/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <noscript>The interactive docs need JavaScript; the document itself is at
    <a href="/openapi.json">/openapi.json</a>.</noscript>
  <script src="{base}/swagger-ui-bundle.js" crossorigin></script>
  <script>
    window.ui = SwaggerUIBundle({{url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true}});
  </script>
</body>
</html>
"""
