"""CloudFormation's intrinsic functions and parameters, evaluated with local stand-ins chosen so
the functions behave as they would in the cloud without reaching it:
- `!Ref Parameter`: the override, else the Default, else "" (no default = not configured).
- `!Ref SomeFunction`: its FunctionName if set, else its logical id; that is the name the
  emulator's async invoke accepts, so a kick addressed with it reaches the local function.
- `!Ref SomeBucket` and bucket attributes: "" so the service uses its local artifact store
  (`DATA_DIR`) instead of writing to a real bucket.
- `!Ref SomeHttpApi`: "local". Any other resource: its logical id.
- Pseudo parameters: the shell's AWS_REGION / AWS_DEFAULT_REGION (else us-east-1), account
  123456789012, stack name "local".
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from local.errors import TemplateError

ACCOUNT_ID = "123456789012"
STACK_NAME = "local"
API_ID = "local"
DEFAULT_REGION = "us-east-1"

FUNCTION_TYPES = {"AWS::Serverless::Function", "AWS::Lambda::Function"}
BUCKET_TYPES = {"AWS::S3::Bucket"}
API_TYPES = {"AWS::Serverless::HttpApi", "AWS::ApiGatewayV2::Api", "AWS::Serverless::Api", "AWS::ApiGateway::RestApi"}

_INTRINSIC_KEYS = {
    "Ref", "Condition", "Fn::Sub", "Fn::GetAtt", "Fn::Join", "Fn::Split", "Fn::Select", "Fn::If",
    "Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or", "Fn::FindInMap", "Fn::Base64", "Fn::GetAZs",
    "Fn::ImportValue", "Fn::ToJsonString", "Fn::Length", "Fn::Cidr", "Fn::Transform",
}
_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


class _NoValue:
    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE: Any = _NoValue()  # what `!Ref AWS::NoValue` resolves to: the property is left out


def cfn_string(value: Any) -> str:
    """CloudFormation's string form of a scalar (booleans are lower case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def is_intrinsic(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in _INTRINSIC_KEYS


# --------------------------------------------------------------------------- parameters


def parameter_values(path: Path, declared: dict[str, Any], overrides: Mapping[str, str]) -> dict[str, Any]:
    """Each declared parameter's value: its override (checked against the declaration), else its
    Default, else "" (a list for the list types)."""
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
            raw = "" if spec.get("Default") is None else cfn_string(spec["Default"])
        if kind == "CommaDelimitedList" or kind.startswith("List<"):
            values[name] = [part.strip() for part in raw.split(",")] if raw else []
        else:
            values[name] = raw
    return values


def _check_parameter(path: Path, name: str, spec: Mapping[str, Any], kind: str, raw: str) -> None:
    problem = ""
    allowed = spec.get("AllowedValues")
    if allowed and raw not in [cfn_string(v) for v in allowed]:
        problem = f"must be one of {', '.join(cfn_string(v) for v in allowed)}"
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


# --------------------------------------------------------------------------- intrinsic functions


class Resolver:
    """Evaluates the intrinsic functions of one template document: `resolve` a property,
    `condition` a named condition; `notes` collects the stand-ins worth a log line."""

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
            return cfn_string(value)
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
            return cfn_string(value)

        return _SUB_VARIABLE.sub(substitute, text)

    def _fn_join(self, arg: Any, where: str) -> str:
        if not isinstance(arg, list) or len(arg) != 2:
            raise self.error(where, "Fn::Join takes [delimiter, [values]]")
        delimiter = self._string(arg[0], where)
        return delimiter.join(cfn_string(v) for v in self._list(arg[1], where))

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
                return cfn_string(left) == cfn_string(right)
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

