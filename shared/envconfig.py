"""A small declarative settings class: frozen, declared by annotated class attributes, read from
environment strings. It replaced a pydantic model (whose import and schema build were most of a
function's cold start), keeping its declaration syntax, coercions and messages:

    class Settings(EnvSettings):
        workers: Annotated[int, Field(alias="PREVIEW_WORKERS", ge=1, le=64)] = 2

        @field_validator("workers", mode="before")
        @classmethod
        def _trimmed(cls, value: Any) -> Any: ...

Types: str, int, float, bool, Path, Literal[...] of str or int, tuple[T, ...], and `X | None` of
these. From a string, as pydantic's lax mode reads one: an int or float with surrounding white
space and `_` between digits ("1_000"), an int also from "5.0"; a bool from 1/0, true/false,
t/f, yes/no, y/n, on/off in any case. Defaults are taken as declared, never validated.
Validators run as pydantic runs them: "before" ones on the raw value, newest first; then the
type and the constraints (ge, gt, le, lt, pattern); then the "after" ones in their order.
A pattern matches anywhere in the string unless anchored, and `$` means its very end (not
before a final newline). The first field that fails (in declaration order) raises
`SettingsError`, which names the field, its variable and pydantic's message for the problem.
"""

from __future__ import annotations

import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

_T = TypeVar("_T", bound="EnvSettings")
_MISSING: Any = object()
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})


class Field:
    """What a field declares besides its type and default: the variable it is read from
    (`alias`), numeric bounds, a regular expression a string must match, and whether its value
    may be shown (`repr=False`: a secret, never printed)."""

    __slots__ = ("alias", "ge", "gt", "le", "lt", "pattern", "repr")

    def __init__(self, *, alias: str | None = None, ge: float | None = None, gt: float | None = None,
                 le: float | None = None, lt: float | None = None, pattern: str | None = None,
                 repr: bool = True) -> None:
        self.alias = alias
        self.ge, self.gt, self.le, self.lt = ge, gt, le, lt
        self.pattern = pattern
        self.repr = repr


class SettingsError(ValueError):
    """A value a field refuses: `variable` is the field's alias (else its name)."""

    def __init__(self, field: FieldSpec, message: str) -> None:
        super().__init__(f"{field.variable}: {message}")
        self.field = field
        self.variable = field.variable
        self.message = message


class FrozenError(AttributeError):
    """Settings are read once and shared: an attribute cannot be changed."""


class ValidationInfo:
    """The optional third argument of a validator: the field's name and the fields validated
    before it (declaration order), as pydantic passes them."""

    __slots__ = ("data", "field_name")

    def __init__(self, field_name: str, data: dict[str, Any]) -> None:
        self.field_name = field_name
        self.data = data


class _Validator:
    """A method marked by `field_validator`, until the class is built."""

    __slots__ = ("fields", "method", "mode")

    def __init__(self, method: Any, fields: tuple[str, ...], mode: str) -> None:
        self.method, self.fields, self.mode = method, fields, mode


def field_validator(*fields: str, mode: Literal["before", "after"] = "after") -> Callable[[Any], Any]:
    """Mark a classmethod `(cls, value)` or `(cls, value, info)` as a validator of `fields`: it
    returns the value to keep and raises ValueError (or AssertionError) to refuse it."""
    if mode not in ("before", "after"):
        raise ValueError(f"mode must be 'before' or 'after', not {mode!r}")
    if not fields or not all(isinstance(name, str) for name in fields):
        raise TypeError("field_validator takes the names of the fields it validates")

    def mark(method: Any) -> _Validator:
        return _Validator(method, fields, mode)

    return mark


class FieldSpec:
    """One field as the class reads it: its name, variable, default, whether it may be shown,
    and how a value becomes its type."""

    __slots__ = ("after", "alias", "annotation", "before", "constraints", "convert", "default", "name",
                 "pattern", "repr", "_regex")

    def __init__(self, name: str, annotation: Any, field: Field, default: Any) -> None:
        self.name = name
        self.annotation = annotation
        self.alias = field.alias
        self.default = default
        self.repr = field.repr
        self.pattern = field.pattern
        self.convert = _converter(annotation, name)
        # pydantic's order, which decides the message for NaN (that fails them all)
        self.constraints = tuple((kind, bound) for kind, bound in (("le", field.le), ("lt", field.lt),
                                                                    ("ge", field.ge), ("gt", field.gt))
                                 if bound is not None)
        self.before: list[Callable[..., Any]] = []
        self.after: list[Callable[..., Any]] = []
        self._regex: Any = None

    def copy(self) -> FieldSpec:
        made = FieldSpec.__new__(FieldSpec)
        for slot in FieldSpec.__slots__:
            setattr(made, slot, getattr(self, slot))
        made.before, made.after = list(self.before), list(self.after)
        return made

    @property
    def variable(self) -> str:
        return self.alias or self.name

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    def __repr__(self) -> str:
        return f"FieldSpec({self.name!r}, alias={self.alias!r}, default={self.default!r})"

    def validate(self, value: Any, data: dict[str, Any]) -> Any:
        """The value this field keeps for `value` (a string from the environment or a Python
        value); SettingsError when it is refused."""
        try:
            for check in reversed(self.before):
                value = _call(check, value, self.name, data)
            value = self.convert(value)
            if value is not None:
                self._check_constraints(value)
            for check in self.after:
                value = _call(check, value, self.name, data)
        except _Refused as refused:
            raise SettingsError(self, str(refused)) from None
        except ValueError as exc:
            raise SettingsError(self, f"Value error, {exc}") from None
        except AssertionError as exc:
            raise SettingsError(self, f"Assertion failed, {exc}") from None
        return value

    def _check_constraints(self, value: Any) -> None:
        for kind, bound in self.constraints:
            # Written so that NaN fails every bound, as it does in pydantic.
            if kind == "ge" and not value >= bound:
                raise _Refused(f"Input should be greater than or equal to {bound}")
            if kind == "gt" and not value > bound:
                raise _Refused(f"Input should be greater than {bound}")
            if kind == "le" and not value <= bound:
                raise _Refused(f"Input should be less than or equal to {bound}")
            if kind == "lt" and not value < bound:
                raise _Refused(f"Input should be less than {bound}")
        if self.pattern is not None and isinstance(value, str):
            if self._regex is None:
                import re

                self._regex = re.compile(_end_anchored(self.pattern))
            if self._regex.search(value) is None:
                raise _Refused(f"String should match pattern '{self.pattern}'")


class _Refused(Exception):
    """A value the type or a constraint refuses, with pydantic's message."""


def _call(check: Callable[..., Any], value: Any, name: str, data: dict[str, Any]) -> Any:
    if getattr(check, "_takes_info", False):
        return check(value, ValidationInfo(name, dict(data)))
    return check(value)


class EnvSettings:
    """Base of a settings class: subclasses declare fields as annotated class attributes."""

    __settings_fields__: ClassVar[dict[str, FieldSpec]] = {}
    __settings_aliases__: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        specs = {name: spec.copy() for name, spec in cls.__settings_fields__.items()}  # a base's come first
        namespace = sys.modules[cls.__module__].__dict__
        for name, annotation in cls.__dict__.get("__annotations__", {}).items():
            if isinstance(annotation, str):  # `from __future__ import annotations` in the declaring module
                annotation = eval(annotation, namespace, dict(vars(cls)))
            if typing.get_origin(annotation) is ClassVar or name.startswith("_"):
                continue
            field = Field()
            if typing.get_origin(annotation) is typing.Annotated:
                annotation, *extras = typing.get_args(annotation)
                field = next((extra for extra in extras if isinstance(extra, Field)), field)
            specs[name] = FieldSpec(name, annotation, field, cls.__dict__.get(name, _MISSING))
        for attribute, marked in list(cls.__dict__.items()):
            if not isinstance(marked, _Validator):
                continue
            setattr(cls, attribute, marked.method)
            bound = getattr(cls, attribute)
            function = getattr(marked.method, "__func__", marked.method)
            takes = function.__code__.co_argcount - (0 if isinstance(marked.method, staticmethod) else 1)
            check = _with_info(bound) if takes >= 2 else bound
            for name in marked.fields:
                if name not in specs:
                    raise TypeError(f"{cls.__name__}.{attribute} validates {name!r}, which is no field")
                (specs[name].before if marked.mode == "before" else specs[name].after).append(check)
        cls.__settings_fields__ = specs
        cls.__settings_aliases__ = {spec.alias: name for name, spec in specs.items() if spec.alias}

    def __init__(self, **values: Any) -> None:
        """Every field given by name (or by its variable) is validated; the others keep their
        defaults."""
        fields = self.__settings_fields__
        by_name: dict[str, Any] = {}
        for key, value in values.items():
            name = key if key in fields else self.__settings_aliases__.get(key)
            if name is None:
                raise TypeError(f"{type(self).__name__} has no field {key!r}")
            by_name[name] = value
        self.__dict__.update(self._validated(by_name))

    @classmethod
    def from_variables(cls: type[_T], values: Mapping[str, Any]) -> _T:
        """Settings from values keyed by variable (alias); other keys are ignored."""
        aliases = cls.__settings_aliases__
        return cls(**{aliases[key]: value for key, value in values.items() if key in aliases})

    @classmethod
    def unvalidated(cls: type[_T], **values: Any) -> _T:
        """The defaults with these values (by name) as given, unchecked: for a caller that means
        to bypass the checks."""
        fields = cls.__settings_fields__
        unknown = set(values) - set(fields)
        if unknown:
            raise TypeError(f"{cls.__name__} has no field {sorted(unknown)[0]!r}")
        made = cls.__new__(cls)
        made.__dict__.update({name: values.get(name, spec.default) for name, spec in fields.items()})
        return made

    @classmethod
    def fields(cls) -> Mapping[str, FieldSpec]:
        """Every field by name, in declaration order."""
        return types.MappingProxyType(cls.__settings_fields__)

    @classmethod
    def _validated(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for name, spec in cls.__settings_fields__.items():
            if name in given:
                data[name] = spec.validate(given[name], data)
            elif spec.required:
                raise SettingsError(spec, "Field required")
            else:
                data[name] = spec.default
        return data

    def replace(self: _T, **changes: Any) -> _T:
        """A copy with these fields (by name) validated and changed."""
        made = type(self).__new__(type(self))
        made.__dict__.update(self.__dict__)
        fields = self.__settings_fields__
        for name, value in changes.items():
            if name not in fields:
                raise TypeError(f"{type(self).__name__} has no field {name!r}")
            made.__dict__[name] = fields[name].validate(value, dict(made.__dict__))
        return made

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenError(f"{type(self).__name__} is frozen: {name} cannot be set")

    def __delattr__(self, name: str) -> None:
        raise FrozenError(f"{type(self).__name__} is frozen: {name} cannot be deleted")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash((type(self), *(self.__dict__.get(name) for name in self.__settings_fields__)))

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        """(name, value) of every field, in declaration order."""
        for name in self.__settings_fields__:
            yield name, self.__dict__.get(name)

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={self.__dict__.get(name)!r}" for name, spec in self.__settings_fields__.items()
                          if spec.repr)
        return f"{type(self).__name__}({shown})"


def _with_info(check: Callable[..., Any]) -> Callable[..., Any]:
    def with_info(value: Any, info: ValidationInfo) -> Any:
        return check(value, info)

    with_info._takes_info = True  # type: ignore[attr-defined]
    return with_info


# -- coercion -----------------------------------------------------------------------------


def _converter(annotation: Any, name: str) -> Callable[[Any], Any]:
    """How a value (an environment string or a Python value) becomes `annotation`."""
    simple = _SIMPLE.get(annotation)
    if simple is not None:
        return simple
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return _literal(args)
    if origin in (types.UnionType, typing.Union) and type(None) in args:
        rest = [arg for arg in args if arg is not type(None)]
        if len(rest) == 1:
            inner = _converter(rest[0], name)
            return lambda value: None if value is None else inner(value)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = _converter(args[0], name)

        def to_tuple(value: Any) -> tuple[Any, ...]:
            if not isinstance(value, tuple | list):  # a string is no tuple: a before validator splits it
                raise _Refused("Input should be a valid tuple")
            return tuple(item(part) for part in value)

        return to_tuple
    raise TypeError(f"field {name!r}: {annotation!r} is not a type a setting can have")


def _to_str(value: Any) -> str:
    if not isinstance(value, str):
        raise _Refused("Input should be a valid string")
    return value


def _to_int(value: Any) -> int:
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not value.is_integer():
            raise _Refused("Input should be a valid integer, got a number with a fractional part")
        return int(value)
    if not isinstance(value, str):
        raise _Refused("Input should be a valid integer")
    text = value.strip()
    whole, dot, fraction = text.partition(".")
    # ASCII digits only (int() also reads other scripts' digits), "5.0" but not "5." or "5 .0"
    if text.isascii() and whole == whole.rstrip() and (not dot or (fraction and not fraction.strip("0"))):
        try:
            return int(whole)
        except ValueError:
            pass
    raise _Refused("Input should be a valid integer, unable to parse string as an integer")


def _to_float(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        raise _Refused("Input should be a valid number")
    text = value.strip()
    if text.isascii():
        try:
            return float(text)
        except ValueError:
            pass
    raise _Refused("Input should be a valid number, unable to parse string as a number")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise _Refused("Input should be a valid boolean, unable to interpret input")
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    raise _Refused("Input should be a valid boolean, unable to interpret input")


def _to_path(value: Any) -> Path:
    if isinstance(value, Path):
        return value
    if isinstance(value, str):
        return Path(value)
    raise _Refused("Input is not a valid path")


_SIMPLE: dict[Any, Callable[[Any], Any]] = {str: _to_str, int: _to_int, float: _to_float, bool: _to_bool,
                                            Path: _to_path}


def _literal(choices: tuple[Any, ...]) -> Callable[[Any], Any]:
    shown = [repr(choice) for choice in choices]
    expected = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"

    def choose(value: Any) -> Any:
        for choice in choices:
            if value == choice and type(value) is type(choice):
                return choice
            if isinstance(choice, int) and isinstance(value, str) and value.strip() == str(choice):
                return choice
        raise _Refused(f"Input should be {expected}")

    return choose


def _end_anchored(pattern: str) -> str:
    """`pattern` with each `$` outside a character class written `\\Z`: the end of the string,
    as in the regular expressions pydantic used (Python's `$` also matches before a final
    newline)."""
    out: list[str] = []
    escaped = in_class = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]" or out[-1] == "["
        elif char == "[":
            in_class = True
        elif char == "$":
            out.append(r"\Z")
            continue
        out.append(char)
    return "".join(out)
