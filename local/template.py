"""template.yaml as the emulator sees it: every `AWS::Serverless::Function` with its handler,
timeout, memory, environment, HTTP API routes and schedules, Globals merged in the SAM way.

Intrinsic functions are resolved to local stand-ins by `local.intrinsics`. Only the
properties the emulator uses are resolved, so an intrinsic it cannot evaluate elsewhere (in
Policies, Outputs...) does not stop it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from local.errors import TemplateError
from local.intrinsics import (
    ACCOUNT_ID,
    DEFAULT_REGION,
    FUNCTION_TYPES,
    NO_VALUE,
    Resolver,
    cfn_string,
    is_intrinsic,
    parameter_values,
)
from local.schedules import ScheduleError, parse_expression

log = logging.getLogger("local.template")


@dataclass(frozen=True)
class HttpRoute:
    function: str  # logical id
    event: str
    method: str  # upper case; ANY matches every method
    path: str | None  # template syntax, `{jobId}`, `{proxy+}`; None is the `$default` route
    auth: str = "NONE"  # the route's authorizer: AWS_IAM, NONE, or the name of one the emulator does not run
    api: str | None = None  # the HttpApi resource's logical id (None: SAM's implicit API)

    @property
    def route_key(self) -> str:
        return "$default" if self.path is None else f"{self.method} {self.path}"


@dataclass(frozen=True)
class ScheduleSpec:
    function: str
    event: str
    kind: str  # Schedule (EventBridge rule) or ScheduleV2 (EventBridge Scheduler)
    expression: str
    enabled: bool
    input: str | None  # an explicit Input replaces the scheduled-event document

    @property
    def key(self) -> str:
        return f"{self.function}.{self.event}"


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    name: str
    handler: str
    code_root: Path
    timeout: int
    memory: int
    environment: Mapping[str, str]
    routes: tuple[HttpRoute, ...] = ()
    schedules: tuple[ScheduleSpec, ...] = ()
    description: str = ""

    @property
    def module(self) -> str:
        return self.handler.rpartition(".")[0]

    @property
    def attribute(self) -> str:
        return self.handler.rpartition(".")[2]

    @property
    def folder(self) -> str:
        """The function's folder name (`enqueue_job` for `functions.enqueue_job.app.handler`)."""
        parent = self.module.rpartition(".")[0]
        return parent.rpartition(".")[2] if parent else self.code_root.name

    @property
    def source_file(self) -> Path:
        return self.code_root / (self.module.replace(".", "/") + ".py")


@dataclass(frozen=True)
class Template:
    path: Path
    region: str
    account_id: str
    parameters: Mapping[str, Any]
    functions: Mapping[str, FunctionSpec]  # in template order
    notes: tuple[str, ...] = field(default=())  # things the emulator leaves out, worth a log line
    # The routes' HTTP API `CorsConfiguration`, resolved (None: no CORS); see local/cors.py.
    cors: Any = None

    def find(self, name: str) -> FunctionSpec | None:
        """By logical id, FunctionName or folder name (`EnqueueJobFunction` or `enqueue_job`)."""
        if name in self.functions:
            return self.functions[name]
        for spec in self.functions.values():
            if name in (spec.name, spec.folder):
                return spec
        return None

    def routes(self) -> list[HttpRoute]:
        return [route for spec in self.functions.values() for route in spec.routes]

    def schedules(self) -> list[ScheduleSpec]:
        return [s for spec in self.functions.values() for s in spec.schedules]

    def code_roots(self) -> list[Path]:
        return sorted({spec.code_root for spec in self.functions.values()})

    def function_arn(self, spec: FunctionSpec) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{spec.name}"


# --------------------------------------------------------------------------- loading


# CloudFormation's short-form tags, in the long form the resolver reads: `!Ref X` is
# {"Ref": "X"}, `!GetAtt A.B` is {"Fn::GetAtt": ["A", "B"]}, `!Condition C` is {"Condition": "C"}
# and every other tag `!Name ...` is {"Fn::Name": ...}.
_SHORT_TAGS = ("Ref", "Condition", "GetAtt", "Sub", "If", "Join", "Split", "Select", "Equals", "Not", "And",
               "Or", "FindInMap", "Base64", "Cidr", "GetAZs", "ImportValue", "Transform", "ToJsonString", "Length")


# libyaml where PyYAML has it: faster, and it reads `{Schedule: cron(0 12 L * ? *)}` (a plain
# `?` inside a flow mapping) as CloudFormation does, which the pure-Python parser refuses.
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _TemplateLoader(_SafeLoader):  # type: ignore[misc]
    """YAML (or JSON) with CloudFormation's short tags; a key given twice in one mapping is an
    error, as CloudFormation treats it, rather than the last one silently winning."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=True)


def _short_tag(tag: str) -> Any:
    name = tag if tag in ("Ref", "Condition") else f"Fn::{tag}"

    def construct(loader: _TemplateLoader, node: yaml.Node) -> dict[str, Any]:
        value: Any
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if tag == "GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        return {name: value}

    return construct


for _tag in _SHORT_TAGS:
    _TemplateLoader.add_constructor(f"!{_tag}", _short_tag(_tag))


def read_document(path: Path) -> dict[str, Any]:
    """The template as plain dicts and lists, intrinsic short tags in their long form."""
    if not path.is_file():
        raise TemplateError(f"template not found: {path} (run from the project folder, or pass --template)")
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_TemplateLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise TemplateError(f"{where}: invalid template: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"{path}: cannot read the template: {exc}") from None
    if not isinstance(document, dict):
        raise TemplateError(f"{path}: invalid template: not a mapping")
    return document


def load_template(path: Path | str, region: str = DEFAULT_REGION,
                  parameter_overrides: Mapping[str, str] | None = None) -> Template:
    path = Path(path).resolve()
    document = read_document(path)
    resources = document.get("Resources")
    if not isinstance(resources, dict) or not resources:
        raise TemplateError(f"{path}: invalid template: no Resources")
    parameters = parameter_values(path, document.get("Parameters") or {}, parameter_overrides or {})
    resolver = Resolver(document, parameters, region, path)
    globals_ = ((document.get("Globals") or {}).get("Function")) or {}
    api_auth = _default_authorizers(document, resources)
    functions: dict[str, FunctionSpec] = {}
    notes: list[str] = []
    for logical_id, resource in resources.items():
        if not isinstance(resource, dict) or resource.get("Type") not in FUNCTION_TYPES:
            continue
        condition = resource.get("Condition")
        if condition and not resolver.condition(condition, f"Resources.{logical_id}.Condition"):
            continue
        properties = resource.get("Properties") or {}
        if resource["Type"] == "AWS::Serverless::Function":
            properties = _merge_globals(globals_, properties)
        functions[logical_id] = _function(path, logical_id, properties, resolver, notes, api_auth)
    if not functions:
        raise TemplateError(f"{path}: invalid template: no AWS::Serverless::Function resources")
    _check_unique_routes(path, functions.values())
    cors = _cors_configuration(path, document, resources, resolver, functions.values())
    return Template(path, region, ACCOUNT_ID, parameters, functions, tuple(notes + resolver.notes), cors)


def _check_unique_routes(path: Path, functions: Any) -> None:
    seen: dict[str, str] = {}
    for spec in functions:
        for route in spec.routes:
            other = seen.setdefault(route.route_key, spec.logical_id)
            if other != spec.logical_id:
                raise TemplateError(f"{path}: route {route.route_key} is declared by both {other} and "
                                    f"{spec.logical_id}")


def _merge_globals(globals_: Any, own: Any) -> Any:
    """SAM's Globals rules: maps merge (the function wins per key), lists concatenate, and any
    other value (intrinsics included) is replaced by the function's own."""
    if isinstance(globals_, dict) and isinstance(own, dict) and not is_intrinsic(globals_) \
            and not is_intrinsic(own):
        merged = dict(globals_)
        for key, value in own.items():
            merged[key] = _merge_globals(globals_[key], value) if key in globals_ else value
        return merged
    if isinstance(globals_, list) and isinstance(own, list):
        return globals_ + own
    return own


def _default_authorizers(document: dict[str, Any], resources: dict[str, Any]) -> dict[str | None, str]:
    """Each HTTP API's `Auth.DefaultAuthorizer` by logical id (None: the implicit API, which
    takes Globals.HttpApi); NONE where it names none."""

    def default(properties: Any) -> str:
        auth = properties.get("Auth") if isinstance(properties, dict) else None
        value = auth.get("DefaultAuthorizer") if isinstance(auth, dict) else None
        return value if isinstance(value, str) and value else "NONE"

    found: dict[str | None, str] = {None: default((document.get("Globals") or {}).get("HttpApi"))}
    for logical_id, resource in resources.items():
        if isinstance(resource, dict) and resource.get("Type") == "AWS::Serverless::HttpApi":
            found[logical_id] = default(resource.get("Properties"))
    return found


def _cors_configuration(path: Path, document: dict[str, Any], resources: dict[str, Any], resolver: Resolver,
                        functions: Any) -> Any:
    """The `CorsConfiguration` of the HTTP API the routes are on (its own, else Globals.HttpApi's);
    routes spread over APIs with different ones are refused, the emulator serving them all on one port."""
    global_cors = ((document.get("Globals") or {}).get("HttpApi") or {}).get("CorsConfiguration")
    found: dict[str, Any] = {}
    for spec in functions:
        for route in spec.routes:
            api = route.api or ""
            if api in found:
                continue
            resource = resources.get(api) if api else None
            properties = (resource or {}).get("Properties") or {}
            raw = properties.get("CorsConfiguration", global_cors)
            value = resolver.resolve(raw, f"Resources.{api or 'ServerlessHttpApi'}.Properties.CorsConfiguration")
            found[api] = None if value is NO_VALUE else value
    distinct = {repr(v) for v in found.values()}
    if len(distinct) > 1:
        raise TemplateError(f"{path}: the routes' HTTP APIs have different "
                            "CorsConfiguration blocks; the emulator serves every route on one origin")
    return next(iter(found.values()), None)


def _function(path: Path, logical_id: str, properties: dict[str, Any], resolver: Resolver,
              notes: list[str], api_auth: Mapping[str | None, str]) -> FunctionSpec:
    where = f"Resources.{logical_id}.Properties"

    def prop(name: str, default: Any = None) -> Any:
        if name not in properties:
            return default
        value = resolver.resolve(properties[name], f"{where}.{name}")
        return default if value is NO_VALUE else value

    def fail(message: str) -> TemplateError:
        return TemplateError(f"{path}: {logical_id}: {message}")

    if prop("PackageType", "Zip") != "Zip":
        raise fail("only Zip functions with a Python handler can run in the emulator")
    handler = prop("Handler")
    if not handler:
        raise fail("function has no Handler")
    if not isinstance(handler, str) or not re.fullmatch(r"[A-Za-z_][\w.]*\.[A-Za-z_]\w*", handler):
        raise fail(f"Handler {handler!r} is not of the form module.function")
    runtime = prop("Runtime")
    if runtime is not None and not str(runtime).startswith("python"):
        raise fail(f"Runtime {runtime} cannot run in this Python emulator")
    if "InlineCode" in properties:
        raise fail("InlineCode is not supported; use CodeUri")
    code_uri = prop("CodeUri", ".")
    if not isinstance(code_uri, str):
        raise fail("CodeUri must be a local folder")
    code_root = (path.parent / code_uri).resolve()
    if not code_root.is_dir():
        raise fail(f"CodeUri {code_uri} is not a folder")
    timeout = _int(prop("Timeout", 3), 1, 900, fail, "Timeout")
    memory = _int(prop("MemorySize", 128), 128, 10_240, fail, "MemorySize")
    variables = (prop("Environment") or {}).get("Variables") or {}
    if not isinstance(variables, dict):
        raise fail("Environment.Variables must be a mapping")
    for key, value in variables.items():
        if isinstance(value, dict | list):
            raise fail(f"environment variable {key} resolved to {value!r}, not a string")
    environment = {str(k): cfn_string(v) for k, v in variables.items() if v is not NO_VALUE}

    routes: list[HttpRoute] = []
    schedules: list[ScheduleSpec] = []
    for event_name, event in (properties.get("Events") or {}).items():
        kind = event.get("Type") if isinstance(event, dict) else None
        event_props = resolver.resolve(event.get("Properties") or {}, f"{where}.Events.{event_name}") \
            if isinstance(event, dict) else {}
        if kind == "HttpApi":
            route = _route(logical_id, event_name, event_props, fail, _authorizer(event, event_props, api_auth),
                           _api_id(event))
            if route.auth not in ("AWS_IAM", "NONE"):
                notes.append(f"{logical_id}.{event_name}: authorizer {route.auth} is not emulated; the route is open")
            routes.append(route)
        elif kind in ("Schedule", "ScheduleV2"):
            schedules.append(_schedule(logical_id, event_name, kind, event_props, fail))
        else:
            notes.append(f"{logical_id}.{event_name}: {kind} events are not emulated")
    name = prop("FunctionName") or logical_id
    return FunctionSpec(
        logical_id=logical_id,
        name=str(name),
        handler=handler,
        code_root=code_root,
        timeout=timeout,
        memory=memory,
        environment=environment,
        routes=tuple(routes),
        schedules=tuple(schedules),
        description=str(prop("Description", "") or ""),
    )


def _int(value: Any, low: int, high: int, fail: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise fail(f"{name} {value!r} is not a whole number") from None
    if not low <= number <= high:
        raise fail(f"{name} {number} is outside {low}-{high}")
    return number


def _authorizer(event: dict[str, Any], props: dict[str, Any], api_auth: Mapping[str | None, str]) -> str:
    """The event's own `Auth.Authorizer`, else its API's default (ApiId read before resolution:
    a `!Ref` names the API resource)."""
    auth = props.get("Auth")
    own = auth.get("Authorizer") if isinstance(auth, dict) else None
    if isinstance(own, str) and own:
        return own
    return api_auth.get(_api_id(event), api_auth[None])


def _api_id(event: dict[str, Any]) -> str | None:
    """The HttpApi an event names (`ApiId: !Ref X`, read before resolution), None for the implicit one."""
    api = (event.get("Properties") or {}).get("ApiId")
    return api.get("Ref") if isinstance(api, dict) else None


def _route(function: str, event: str, props: dict[str, Any], fail: Any, auth: str,
           api: str | None = None) -> HttpRoute:
    path, method = props.get("Path"), props.get("Method")
    if path is None and method is None:
        return HttpRoute(function, event, "ANY", None, auth, api)
    if not isinstance(path, str) or not path.startswith("/"):
        raise fail(f"event {event}: HttpApi Path {path!r} must start with '/'")
    if not isinstance(method, str) or not method:
        raise fail(f"event {event}: HttpApi needs a Method")
    if re.search(r"\{[^}]*\+\}.", path):
        raise fail(f"event {event}: a greedy {{name+}} parameter must end the path")
    return HttpRoute(function, event, method.upper(), path, auth, api)


def _schedule(function: str, event: str, kind: str, props: dict[str, Any], fail: Any) -> ScheduleSpec:
    expression = props.get("Schedule" if kind == "Schedule" else "ScheduleExpression")
    if not isinstance(expression, str):
        raise fail(f"event {event}: {kind} needs a schedule expression")
    try:
        parse_expression(expression)
    except ScheduleError as exc:
        raise fail(f"event {event}: {exc}") from None
    if kind == "Schedule":
        enabled = props.get("Enabled", True) not in (False, "false", "False") and props.get("State") != "DISABLED"
    else:
        enabled = props.get("State", "ENABLED") != "DISABLED"
    payload = props.get("Input")
    return ScheduleSpec(function, event, kind, expression, enabled, None if payload is None else str(payload))
