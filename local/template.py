"""template.yaml as the emulator sees it: every `AWS::Serverless::Function` with its handler,
timeout, memory, environment, HTTP API routes and schedules, Globals merged in the SAM way,
intrinsic functions resolved to local stand-ins.

Local stand-ins, chosen so the functions behave as they would in the cloud without reaching it:
- `!Ref Parameter`: the override, else the Default, else "" (no default = not configured).
- `!Ref SomeFunction`: its FunctionName if set, else its logical id; that is the name the
  emulator's async invoke accepts, so a kick addressed with it reaches the local function.
- `!Ref SomeBucket` and bucket attributes: "" so the service uses its local artifact store
  (`DATA_DIR`) instead of writing to a real bucket.
- `!Ref SomeHttpApi`: "local". Any other resource: its logical id.
- Pseudo parameters: the shell's AWS_REGION / AWS_DEFAULT_REGION (else us-east-1), account
  123456789012, stack name "local".
Only the properties the emulator uses are resolved, so an intrinsic it cannot evaluate
elsewhere (in Policies, Outputs...) does not stop it.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local.errors import StartupError
from local.schedules import ScheduleError, parse_expression

ACCOUNT_ID = "123456789012"
STACK_NAME = "local"
API_ID = "local"
DEFAULT_REGION = "us-east-1"

FUNCTION_TYPES = {"AWS::Serverless::Function", "AWS::Lambda::Function"}
BUCKET_TYPES = {"AWS::S3::Bucket"}
API_TYPES = {"AWS::Serverless::HttpApi", "AWS::ApiGatewayV2::Api", "AWS::Serverless::Api", "AWS::ApiGateway::RestApi"}

log = logging.getLogger("local.template")


class TemplateError(StartupError):
    pass


class _NoValue:
    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE: Any = _NoValue()


@dataclass(frozen=True)
class HttpRoute:
    function: str  # logical id
    event: str
    method: str  # upper case; ANY matches every method
    path: str | None  # template syntax, `{jobId}`, `{proxy+}`; None is the `$default` route

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


def read_document(path: Path) -> dict[str, Any]:
    """The template as plain dicts and lists, intrinsic short tags in their long form."""
    from cfnlint.decode import decode

    if not path.is_file():
        raise TemplateError(f"template not found: {path} (run from the project folder, or pass --template)")
    # cfn-lint also logs its parse problems; the emulator reports them itself, in one line.
    cfn_logger = logging.getLogger("cfnlint")
    level = cfn_logger.level
    cfn_logger.setLevel(logging.CRITICAL)
    try:
        document, matches = decode(str(path))
    finally:
        cfn_logger.setLevel(level)
    if matches:
        first = matches[0]
        raise TemplateError(f"{path}:{first.linenumber}: invalid template: {first.message}")
    if not isinstance(document, dict):
        raise TemplateError(f"{path}: invalid template: not a mapping")
    plain: dict[str, Any] = _plain(document)
    return plain


def _plain(value: Any) -> Any:
    """cfn-lint's node types (str/dict subclasses carrying line marks) as builtins."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def load_template(path: Path | str, region: str = DEFAULT_REGION,
                  parameter_overrides: Mapping[str, str] | None = None) -> Template:
    path = Path(path).resolve()
    document = read_document(path)
    resources = document.get("Resources")
    if not isinstance(resources, dict) or not resources:
        raise TemplateError(f"{path}: invalid template: no Resources")
    parameters = _parameter_values(path, document.get("Parameters") or {}, parameter_overrides or {})
    resolver = _Resolver(document, parameters, region, path)
    globals_ = ((document.get("Globals") or {}).get("Function")) or {}
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
        functions[logical_id] = _function(path, logical_id, properties, resolver, notes)
    if not functions:
        raise TemplateError(f"{path}: invalid template: no AWS::Serverless::Function resources")
    _check_unique_routes(path, functions.values())
    return Template(path, region, ACCOUNT_ID, parameters, functions, tuple(notes + resolver.notes))


def _check_unique_routes(path: Path, functions: Any) -> None:
    seen: dict[str, str] = {}
    for spec in functions:
        for route in spec.routes:
            other = seen.setdefault(route.route_key, spec.logical_id)
            if other != spec.logical_id:
                raise TemplateError(f"{path}: route {route.route_key} is declared by both {other} and "
                                    f"{spec.logical_id}")


def _parameter_values(path: Path, declared: dict[str, Any], overrides: Mapping[str, str]) -> dict[str, Any]:
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise TemplateError(f"{path}: parameter override for unknown parameter {unknown[0]}")
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        spec = spec or {}
        kind = str(spec.get("Type", "String"))
        if name in overrides:
            raw = str(overrides[name])
            _check_parameter(path, name, spec, kind, raw)
        else:
            raw = "" if spec.get("Default") is None else _scalar(spec["Default"])
        if kind == "CommaDelimitedList" or kind.startswith("List<"):
            values[name] = [part.strip() for part in raw.split(",")] if raw else []
        else:
            values[name] = raw
    return values


def _check_parameter(path: Path, name: str, spec: Mapping[str, Any], kind: str, raw: str) -> None:
    problem = ""
    allowed = spec.get("AllowedValues")
    if allowed and raw not in [_scalar(v) for v in allowed]:
        problem = f"must be one of {', '.join(_scalar(v) for v in allowed)}"
    elif spec.get("AllowedPattern") and not re.fullmatch(str(spec["AllowedPattern"]), raw):
        problem = f"must match {spec['AllowedPattern']}"
    elif kind == "Number":
        try:
            number = float(raw)
        except ValueError:
            problem = "must be a number"
        else:
            if "MinValue" in spec and number < float(spec["MinValue"]):
                problem = f"must be at least {spec['MinValue']}"
            elif "MaxValue" in spec and number > float(spec["MaxValue"]):
                problem = f"must be at most {spec['MaxValue']}"
    elif "MaxLength" in spec and len(raw) > int(spec["MaxLength"]):
        problem = f"must be at most {spec['MaxLength']} characters"
    if problem:
        raise TemplateError(f"{path}: parameter {name}={raw!r} {problem}")


def _scalar(value: Any) -> str:
    """CloudFormation's string form of a scalar (booleans are lower case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _is_intrinsic(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in _INTRINSIC_KEYS


def _merge_globals(globals_: Any, own: Any) -> Any:
    """SAM's Globals rules: maps merge (the function wins per key), lists concatenate, and any
    other value (intrinsics included) is replaced by the function's own."""
    if isinstance(globals_, dict) and isinstance(own, dict) and not _is_intrinsic(globals_) \
            and not _is_intrinsic(own):
        merged = dict(globals_)
        for key, value in own.items():
            merged[key] = _merge_globals(globals_[key], value) if key in globals_ else value
        return merged
    if isinstance(globals_, list) and isinstance(own, list):
        return globals_ + own
    return own


def _function(path: Path, logical_id: str, properties: dict[str, Any], resolver: _Resolver,
              notes: list[str]) -> FunctionSpec:
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
    environment = {str(k): _scalar(v) for k, v in variables.items() if v is not NO_VALUE}

    routes: list[HttpRoute] = []
    schedules: list[ScheduleSpec] = []
    for event_name, event in (properties.get("Events") or {}).items():
        kind = event.get("Type") if isinstance(event, dict) else None
        event_props = resolver.resolve(event.get("Properties") or {}, f"{where}.Events.{event_name}") \
            if isinstance(event, dict) else {}
        if kind == "HttpApi":
            routes.append(_route(logical_id, event_name, event_props, fail))
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


def _route(function: str, event: str, props: dict[str, Any], fail: Any) -> HttpRoute:
    path, method = props.get("Path"), props.get("Method")
    if path is None and method is None:
        return HttpRoute(function, event, "ANY", None)
    if not isinstance(path, str) or not path.startswith("/"):
        raise fail(f"event {event}: HttpApi Path {path!r} must start with '/'")
    if not isinstance(method, str) or not method:
        raise fail(f"event {event}: HttpApi needs a Method")
    if re.search(r"\{[^}]*\+\}.", path):
        raise fail(f"event {event}: a greedy {{name+}} parameter must end the path")
    return HttpRoute(function, event, method.upper(), path)


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


# --------------------------------------------------------------------------- intrinsics

_INTRINSIC_KEYS = {
    "Ref", "Condition", "Fn::Sub", "Fn::GetAtt", "Fn::Join", "Fn::Split", "Fn::Select", "Fn::If",
    "Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or", "Fn::FindInMap", "Fn::Base64", "Fn::GetAZs",
    "Fn::ImportValue", "Fn::ToJsonString", "Fn::Length", "Fn::Cidr", "Fn::Transform",
}
_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


class _Resolver:
    def __init__(self, document: dict[str, Any], parameters: Mapping[str, Any], region: str, path: Path) -> None:
        self.resources: dict[str, Any] = document.get("Resources") or {}
        self.mappings: dict[str, Any] = document.get("Mappings") or {}
        self.conditions: dict[str, Any] = document.get("Conditions") or {}
        self.parameters = parameters
        self.region = region
        self.path = path
        self.notes: list[str] = []
        self._condition_cache: dict[str, bool] = {}

    def error(self, where: str, message: str) -> TemplateError:
        return TemplateError(f"{self.path}: {where}: {message}")

    def resolve(self, value: Any, where: str) -> Any:
        if isinstance(value, dict):
            if len(value) == 1:
                key = next(iter(value))
                if key == "Ref" or key.startswith("Fn::"):
                    return self._intrinsic(key, value[key], where)
            resolved = {k: self.resolve(v, f"{where}.{k}") for k, v in value.items()}
            return {k: v for k, v in resolved.items() if v is not NO_VALUE}
        if isinstance(value, list):
            items = [self.resolve(v, f"{where}[{i}]") for i, v in enumerate(value)]
            return [v for v in items if v is not NO_VALUE]
        return value

    def _intrinsic(self, key: str, arg: Any, where: str) -> Any:
        if key == "Ref":
            return self.ref(self._string(arg, where), where)
        if key in ("Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or"):
            return self._truth({key: arg}, where)
        handler = getattr(self, "_fn_" + key.removeprefix("Fn::").lower(), None)
        if handler is None:
            raise self.error(where, f"{key} is not supported by the emulator")
        return handler(arg, where)

    def _string(self, value: Any, where: str) -> str:
        value = self.resolve(value, where)
        if isinstance(value, bool | int | float):
            return _scalar(value)
        if not isinstance(value, str):
            raise self.error(where, f"expected a string, got {value!r}")
        return value

    def _list(self, value: Any, where: str) -> list[Any]:
        value = self.resolve(value, where)
        if not isinstance(value, list):
            raise self.error(where, f"expected a list, got {value!r}")
        return value

    # -- Ref and GetAtt

    def ref(self, name: str, where: str) -> Any:
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::StackName": STACK_NAME,
            "AWS::StackId": f"arn:aws:cloudformation:{self.region}:{ACCOUNT_ID}:stack/{STACK_NAME}/local",
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NotificationARNs": [],
            "AWS::NoValue": NO_VALUE,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        resource = self.resources.get(name)
        if not isinstance(resource, dict):
            raise self.error(where, f"!Ref {name}: no such parameter or resource")
        kind = resource.get("Type")
        if kind in FUNCTION_TYPES:
            function_name = (resource.get("Properties") or {}).get("FunctionName")
            return self._string(function_name, f"Resources.{name}.Properties.FunctionName") \
                if function_name else name
        if kind in BUCKET_TYPES:
            return ""
        if kind in API_TYPES:
            return API_ID
        return name

    def _fn_getatt(self, arg: Any, where: str) -> Any:
        if isinstance(arg, str):
            resource_name, _, attribute = arg.partition(".")
        else:
            parts = self._list(arg, where)
            if len(parts) != 2:
                raise self.error(where, "Fn::GetAtt takes [resource, attribute]")
            resource_name, attribute = str(parts[0]), str(parts[1])
        resource = self.resources.get(resource_name)
        if not isinstance(resource, dict):
            raise self.error(where, f"!GetAtt {resource_name}.{attribute}: no such resource")
        kind = resource.get("Type")
        if kind in FUNCTION_TYPES and attribute == "Arn":
            return f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{self.ref(resource_name, where)}"
        if kind in BUCKET_TYPES:
            return ""
        return f"{resource_name}.{attribute}"

    # -- string and list functions

    def _fn_sub(self, arg: Any, where: str) -> str:
        variables: dict[str, Any] = {}
        if isinstance(arg, list):
            if len(arg) != 2 or not isinstance(arg[1], dict):
                raise self.error(where, "Fn::Sub takes a string or [string, {variables}]")
            text = arg[0]
            variables = {k: self.resolve(v, f"{where}.{k}") for k, v in arg[1].items()}
        else:
            text = arg
        if not isinstance(text, str):
            raise self.error(where, "Fn::Sub needs a string")

        def substitute(match: re.Match[str]) -> str:
            name = match[1]
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                value = variables[name]
            elif "." in name and not name.startswith("AWS::"):
                value = self._fn_getatt(name, where)
            else:
                value = self.ref(name, where)
            if isinstance(value, list) or value is NO_VALUE:
                raise self.error(where, f"Fn::Sub variable {name} is not a string")
            return _scalar(value)

        return _SUB_VARIABLE.sub(substitute, text)

    def _fn_join(self, arg: Any, where: str) -> str:
        if not isinstance(arg, list) or len(arg) != 2:
            raise self.error(where, "Fn::Join takes [delimiter, [values]]")
        delimiter = self._string(arg[0], where)
        return delimiter.join(_scalar(v) for v in self._list(arg[1], where))

    def _fn_split(self, arg: Any, where: str) -> list[str]:
        if not isinstance(arg, list) or len(arg) != 2:
            raise self.error(where, "Fn::Split takes [delimiter, string]")
        return self._string(arg[1], where).split(self._string(arg[0], where))

    def _fn_select(self, arg: Any, where: str) -> Any:
        if not isinstance(arg, list) or len(arg) != 2:
            raise self.error(where, "Fn::Select takes [index, [values]]")
        index = int(self._string(arg[0], where))
        items = self._list(arg[1], where)
        if not 0 <= index < len(items):
            raise self.error(where, f"Fn::Select index {index} is out of range")
        return items[index]

    def _fn_base64(self, arg: Any, where: str) -> str:
        return base64.b64encode(self._string(arg, where).encode()).decode()

    def _fn_getazs(self, arg: Any, where: str) -> list[str]:
        return [f"{self.region}{zone}" for zone in "abc"]

    def _fn_findinmap(self, arg: Any, where: str) -> Any:
        if not isinstance(arg, list) or len(arg) not in (3, 4):
            raise self.error(where, "Fn::FindInMap takes [map, key, key]")
        names = [self._string(a, where) for a in arg[:3]]
        try:
            return self.resolve(self.mappings[names[0]][names[1]][names[2]], where)
        except (KeyError, TypeError):
            if len(arg) == 4 and isinstance(arg[3], dict) and "DefaultValue" in arg[3]:
                return self.resolve(arg[3]["DefaultValue"], where)
            raise self.error(where, f"Fn::FindInMap: no {'/'.join(names)} in Mappings") from None

    def _fn_importvalue(self, arg: Any, where: str) -> str:
        # Another stack's export cannot exist locally; "" reads as "not configured", and an
        # --env-vars override can supply the real value.
        self.notes.append(f"{where}: Fn::ImportValue has no local value; using \"\"")
        return ""

    def _fn_tojsonstring(self, arg: Any, where: str) -> str:
        return json.dumps(self.resolve(arg, where), separators=(",", ":"))

    def _fn_length(self, arg: Any, where: str) -> int:
        return len(self._list(arg, where))

    # -- conditions

    def _fn_if(self, arg: Any, where: str) -> Any:
        if not isinstance(arg, list) or len(arg) != 3:
            raise self.error(where, "Fn::If takes [condition, then, else]")
        chosen = arg[1] if self.condition(str(arg[0]), where) else arg[2]
        return self.resolve(chosen, where)

    def condition(self, name: str, where: str) -> bool:
        if name not in self._condition_cache:
            if name not in self.conditions:
                raise self.error(where, f"no condition {name}")
            self._condition_cache[name] = self._truth(self.conditions[name], f"Conditions.{name}")
        return self._condition_cache[name]

    def _truth(self, value: Any, where: str) -> bool:
        if isinstance(value, dict) and len(value) == 1:
            key, arg = next(iter(value.items()))
            if key == "Condition":
                return self.condition(str(arg), where)
            if key == "Fn::Equals":
                left, right = (self.resolve(a, where) for a in arg)
                return _scalar(left) == _scalar(right)
            if key == "Fn::Not":
                return not self._truth(arg[0], where)
            if key == "Fn::And":
                return all(self._truth(a, where) for a in arg)
            if key == "Fn::Or":
                return any(self._truth(a, where) for a in arg)
        resolved = self.resolve(value, where)
        if isinstance(resolved, bool):
            return resolved
        raise self.error(where, f"not a condition: {value!r}")

