"""One OpenAPI 3.1 document for every route of the template, and a Swagger UI page.

Operations come from the template's HttpApi events (summary: the function's Description,
description: its handler module's docstring); a body-carrying route gets the payload schema
from `schemas/*.schema.json` (draft-07 `definitions` moved to `components/schemas`) and the
request bodies of its event fixtures as examples. Its responses are those that
`schemas/responses.schema.json` documents for its route key (each status with its body's
schema and headers), plus any status its fixtures produce (`events/expected.json`). Nothing
here lists routes or status codes by hand. `response_problems` checks an answer against the
document, so tests can hold the handlers to it."""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Callable
from functools import cache
from http import HTTPStatus
from pathlib import Path
from typing import Any

from local.template import HttpRoute, Template

_BODY_METHODS = {"POST", "PUT", "PATCH"}
_ANY_METHODS = ("get", "post", "put", "patch", "delete")
_EXAMPLE_LIMIT = 16_384
RESPONSES_FILE = "responses.schema.json"  # per route key and status: the body's schema
COMPONENTS = "#/components/schemas/"

# API Gateway's own answers (local/server.py `message`): 401 without the key, 404 without a route.
GATEWAY_MESSAGE: dict[str, Any] = {
    "type": "object",
    "required": ["message"],
    "additionalProperties": False,
    "properties": {"message": {"type": "string"}},
}


def _schema_files(root: Path) -> list[Path]:
    """The payload schemas (every schema file but the responses')."""
    return sorted(p for p in (root / "schemas").glob("*.schema.json") if p.name != RESPONSES_FILE)


def _read(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def _title(path: Path, schema: dict[str, Any]) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "", str(schema.get("title") or path.name.split(".")[0]))


class _Names:
    """Component names of the schema files: a payload schema is `Title`, its definitions
    `Title.name`; the responses file's `$defs` keep their own names."""

    def __init__(self, root: Path) -> None:
        self.titles = {p.name: _title(p, _read(p)) for p in _schema_files(root)}

    def of(self, file: str, definition: str | None) -> str:
        if file == RESPONSES_FILE:
            return definition or "Responses"
        title = self.titles.get(file, file)
        return title if definition is None else f"{title}.{definition}"

    def rewrite(self, node: Any, file: str) -> Any:
        """`node` with every `$ref` (local, or to a sibling file) pointing into components."""
        if isinstance(node, dict):
            out = {k: self.rewrite(v, file) for k, v in node.items()}
            ref = out.get("$ref")
            if isinstance(ref, str):
                target, _, fragment = ref.partition("#")
                match = re.fullmatch(r"/(?:definitions|\$defs)/([^/]+)", fragment)
                if (target == "" or target in self.titles or target == RESPONSES_FILE) and \
                        (match or fragment == ""):
                    out["$ref"] = COMPONENTS + self.of(target or file, match.group(1) if match else None)
            return out
        if isinstance(node, list):
            return [self.rewrite(v, file) for v in node]
        return node


def _load_schemas(root: Path, names: _Names) -> dict[str, dict[str, Any]]:
    """Each payload schema file's components, keyed by its title, refs rewritten to components."""
    components: dict[str, dict[str, Any]] = {}
    for path in _schema_files(root):
        schema = _read(path)
        definitions = schema.pop("definitions", {}) or {}
        # $id would re-base every $ref inside; $schema belongs to the standalone file.
        schema.pop("$id", None)
        schema.pop("$schema", None)
        components[names.of(path.name, None)] = names.rewrite(schema, path.name)
        for name, definition in definitions.items():
            components[names.of(path.name, name)] = names.rewrite(definition, path.name)
    return components


def _load_responses(root: Path, names: _Names) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, Any]]]:
    """The responses file's routes (route key -> status -> description, schema, headers), its
    request bodies (route key -> schema, for a route whose body is not one job) and its bodies
    as components; nothing when there is no such file."""
    try:
        document = _read(root / "schemas" / RESPONSES_FILE)
    except OSError:
        return {}, {}, {}
    routes = names.rewrite(document.get("routes") or {}, RESPONSES_FILE)
    requests = names.rewrite(document.get("requests") or {}, RESPONSES_FILE)
    bodies = {name: names.rewrite(schema, RESPONSES_FILE) for name, schema in (document.get("$defs") or {}).items()}
    return routes, requests, bodies


def _examples(root: Path, template: Template, route: HttpRoute, valid: Callable[[Any], bool] | None,
              expected: dict[str, Any]) -> dict[str, Any]:
    """Request bodies of the route's fixtures that its request schema accepts (the fixtures
    of refused payloads would be poor examples), each with a summary of what it does
    (events/expected.json): those that need no earlier request first, so the default example
    does on its own what its summary says."""
    spec = template.functions[route.function]
    examples: dict[str, Any] = {}

    def order(path: Path) -> tuple[int, int, str]:  # standalone first, then by status
        outcome = expected.get(f"{spec.folder}/{path.stem}") or {}
        return 1 if outcome.get("given") else 0, int(outcome.get("status") or 999), path.stem

    for path in sorted((root / "events" / spec.folder).glob("*.json"), key=order):
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
        if valid is None or valid(value):
            outcome = expected.get(f"{spec.folder}/{path.stem}") or {}
            status = outcome.get("status")
            summary = outcome.get("summary") or path.stem
            examples[path.stem] = {"summary": f"{summary} ({status})" if status else summary, "value": value}
    return examples


def _takes_body(root: Path, template: Template, route: HttpRoute) -> bool:
    """Whether a fixture of the route sends a body (a POST such as a retry may take none)."""
    for path in (root / "events" / template.functions[route.function].folder).glob("*.json"):
        try:
            event = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(event, dict) and event.get("routeKey") == route.route_key and event.get("body"):
            return True
    return False


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


def _responses(root: Path, expected: dict[str, Any], template: Template, route: HttpRoute,
               documented: dict[str, Any]) -> dict[str, Any]:
    statuses = _fixture_statuses(root, expected, template, route)
    responses: dict[str, Any] = {}
    for status in sorted({*statuses, *(int(s) for s in documented)}):
        entry = documented.get(str(status)) or {}
        cases = statuses.get(status, [])
        description = entry.get("description") or HTTPStatus(status).phrase
        response: dict[str, Any] = {"description": description + (f" (fixtures: {', '.join(cases)})" if cases else "")}
        if "schema" in entry:
            response["content"] = {"application/json": {"schema": entry["schema"]}}
        if entry.get("headers"):
            response["headers"] = entry["headers"]
        responses[str(status)] = response
    return responses or {"default": {"description": "not documented"}}


def _request_schema(route: HttpRoute, requests: dict[str, Any], payload: str | None, payload_file: Path | None,
                    components: dict[str, Any]) -> tuple[dict[str, Any] | None, Callable[[Any], bool] | None]:
    """The schema of the route's request body (the responses file's `requests` entry for its
    route key, else the payload schema) and a check of an example against it."""
    own = requests.get(route.route_key)
    if own is not None:
        return own, schema_validator({"components": {"schemas": components}}, own).is_valid
    if payload is None:
        return None, None
    if payload_file is None:
        return {"$ref": COMPONENTS + payload}, None
    import jsonschema

    return {"$ref": COMPONENTS + payload}, jsonschema.Draft7Validator(_read(payload_file)).is_valid


def _parameters(path: str) -> list[dict[str, Any]]:
    return [
        {"name": name.rstrip("+"), "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"\{([^}]+)\}", path)
    ]


def build_openapi(template: Template, *, protected: set[str] | None = None, scheme: str = "apiKey") -> dict[str, Any]:
    """`protected`: route keys that need the API key (`scheme` "apiKey") or a SigV4 signature
    ("sigv4"); None: every route is open."""
    root = template.path.parent  # schemas/ and events/ sit beside the template
    names = _Names(root)
    schemas = _load_schemas(root, names)
    documented, requests, bodies = _load_responses(root, names)
    components = {**schemas, **bodies, "GatewayMessage": GATEWAY_MESSAGE}
    payload = next((name for name in schemas if "." not in name), None)
    payload_file = next((p for p in _schema_files(root) if names.of(p.name, None) == payload), None)
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
            "responses": _responses(root, expected, template, route, documented.get(route.route_key) or {}),
        }
        if module is not None and module.__doc__:
            operation["description"] = module.__doc__.strip()
        if _parameters(route.path):
            operation["parameters"] = _parameters(route.path)
        body_schema, valid = _request_schema(route, requests, payload, payload_file, components)
        if route.method in _BODY_METHODS and body_schema and _takes_body(root, template, route):
            media: dict[str, Any] = {"schema": body_schema}
            examples = _examples(root, template, route, valid, expected)
            if examples:
                media["examples"] = examples
            operation["requestBody"] = {"required": True, "content": {"application/json": media}}
        if protected is not None:
            guarded = route.route_key in protected
            if scheme == "sigv4":
                operation["security"] = [{"sigv4": []}] if guarded else []
            else:
                operation["security"] = [{"apiKey": []}, {"bearer": []}] if guarded else []
            if guarded:
                status, why = ("403", "missing, wrong or stale SigV4 signature") if scheme == "sigv4" \
                    else ("401", "missing or wrong API key")
                operation["responses"][status] = {
                    "description": why,
                    "content": {"application/json": {"schema": {"$ref": COMPONENTS + "GatewayMessage"}}},
                }
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
        "components": {"schemas": components},
    }
    if protected is not None and scheme == "sigv4":
        # How API Gateway itself exports an IAM-authorized API.
        document["components"]["securitySchemes"] = {
            "sigv4": {"type": "apiKey", "in": "header", "name": "Authorization",
                      "x-amazon-apigateway-authtype": "awsSigv4",
                      "description": "AWS Signature Version 4 (service execute-api). On the emulator's "
                                     "/docs page, enter ACCESS_KEY_ID:SECRET_ACCESS_KEY (the emulator's "
                                     "local credentials): the page signs each request with them."},
        }
    elif protected is not None:
        document["components"]["securitySchemes"] = {
            "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            "bearer": {"type": "http", "scheme": "bearer"},
        }
    return document


# --------------------------------------------------------------------------- checking answers


def documented_response(document: dict[str, Any], method: str, path: str, status: int) -> dict[str, Any] | None:
    """What `document` says `method path` (an OpenAPI path, `{jobId}` and all) answers with
    `status`, or None when it does not document that status."""
    operation = (document.get("paths", {}).get(path) or {}).get(method.lower())
    if operation is None:
        return None
    response: dict[str, Any] | None = operation.get("responses", {}).get(str(status))
    return response


def _ecma(pattern: str) -> str:
    """A JSON Schema (ECMA-262) pattern for Python's `re`: `$` outside a character class
    matches only at the very end (Python's would also match before a final newline)."""
    out, in_class, escaped = [], False, False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        elif char == "$" and not in_class:
            out.append(r"\Z")
            continue
        out.append(char)
    return "".join(out)


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(_ecma(pattern))


@cache
def _validator_class() -> Any:
    from jsonschema import Draft202012Validator, validators
    from jsonschema.exceptions import ValidationError

    def pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Any:
        if validator.is_type(instance, "string") and not _compiled(pattern).search(instance):
            yield ValidationError(f"{instance!r} does not match {pattern!r}")

    return validators.extend(Draft202012Validator, {"pattern": pattern})


def schema_validator(document: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A validator of `schema` (a schema of `document`, its refs into the components), with
    formats checked and patterns read as JSON Schema means them."""
    from jsonschema import FormatChecker

    root = {**copy.deepcopy(schema), "components": document.get("components", {})}
    return _validator_class()(root, format_checker=FormatChecker())


def response_problems(document: dict[str, Any], method: str, path: str, status: int, body: Any,
                      headers: Callable[[str], str | None] | None = None) -> list[str]:
    """Where an answer departs from `document`: an undocumented status, a body that is not
    the documented schema's, a documented header missing (`headers`: name -> value)."""
    response = documented_response(document, method, path, status)
    if response is None:
        return [f"{method.upper()} {path} does not document status {status}"]
    problems = []
    schema = (response.get("content") or {}).get("application/json", {}).get("schema")
    if schema is not None:
        validator = schema_validator(document, schema)
        for error in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path)):
            where = "".join(f"/{p}" for p in error.absolute_path) or "/"
            problems.append(f"{status} body at {where}: {error.message[:300]}")
    for name, header in (response.get("headers") or {}).items():
        value = headers(name) if headers is not None else None
        if value is None:
            problems.append(f"{status} without its {name} header")
        elif "schema" in header and not schema_validator(document, header["schema"]).is_valid(value):
            problems.append(f"{status} {name} header {value[:100]!r} is not as documented")
    return problems


DOCS_ASSETS = "/docs/assets"
DOCS_SIGNER = "/docs/sigv4.js"
CDN = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5"
SIGNER_FILE = Path(__file__).with_name("docs_sigv4.js")


def swagger_ui_dir() -> Path | None:
    """The Swagger UI files (5.x, which renders OpenAPI 3.1) that the `swagger-ui-py` package
    ships, so /docs works offline. Found without importing the package, which would pull in
    its template engine for nothing."""
    import importlib.util

    spec = importlib.util.find_spec("swagger_ui")
    for location in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(location) / "static"
        if (folder / "swagger-ui-bundle.js").is_file():
            return folder
    return None


def docs_html(local_assets: bool, *, sigv4_region: str | None = None) -> str:
    """The Swagger UI page: its scripts from the installed bundle, else from a CDN. With
    `sigv4_region`, "Try it out" signs each request in the page (docs_sigv4.js) with the
    access key and secret typed into the Authorize dialog; nothing leaves the page but the
    signature."""
    base = DOCS_ASSETS if local_assets else CDN
    signer = f'<script src="{DOCS_SIGNER}"></script>' if sigv4_region else ""
    interceptor = (f"requestInterceptor: (request) => window.previewSigV4.sign(request, {json.dumps(sigv4_region)}),"
                   if sigv4_region else "")
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
  {signer}
  <script>
    window.ui = SwaggerUIBundle({{url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
      persistAuthorization: true, {interceptor}}});
  </script>
</body>
</html>
"""
