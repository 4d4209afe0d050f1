"""`@lazy_dataclass`: a dataclass made when its first instance is, not when its module loads.

`dataclasses.dataclass` writes the source of `__init__`, `__repr__`, `__eq__`, `__hash__` (and
for a frozen class `__setattr__`, `__delattr__`) and compiles it as the class is declared:
a few tenths of a millisecond to a millisecond and more per class in a fresh process. An HTTP
function's cold start imports records it never builds (the worker's claim records, the typed
request), so those wait for their first construction; from then on the class is exactly the
dataclass `@dataclass(...)` makes, with the same options.

Only construction builds it: use it for classes whose instances come from their constructor
(not from `copy`/`pickle` before any was constructed) and whose dataclass attributes
(`dataclasses.fields`, `__match_args__`) nobody reads before one is.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform, overload

_T = TypeVar("_T")
_lock = threading.RLock()


@overload
def lazy_dataclass(cls: type[_T], /) -> type[_T]: ...


@overload
def lazy_dataclass(**options: Any) -> Callable[[type[_T]], type[_T]]: ...


@dataclass_transform(field_specifiers=(dataclasses.field, dataclasses.Field))
def lazy_dataclass(cls: type[_T] | None = None, /, **options: Any) -> Any:
    """`@lazy_dataclass` or `@lazy_dataclass(frozen=True, ...)`: `@dataclass` with the same
    options, applied when the class is first constructed."""
    if "slots" in options:
        raise TypeError("lazy_dataclass cannot make slots: a slotted dataclass is a new class")

    def defer(target: type[_T]) -> type[_T]:
        def build_then_init(self: Any, *args: Any, **kwargs: Any) -> None:
            _build(target)
            target.__init__(self, *args, **kwargs)  # type: ignore[misc]

        build_then_init.__qualname__ = f"{target.__qualname__}.__init__"
        build_then_init.__lazy_dataclass__ = options  # type: ignore[attr-defined]
        target.__init__ = build_then_init  # type: ignore[method-assign]
        return target

    return defer if cls is None else defer(cls)


def _build(cls: type) -> None:
    with _lock:
        stub = cls.__dict__.get("__init__")
        options = getattr(stub, "__lazy_dataclass__", None)
        if options is None:  # built meanwhile by another thread
            return
        for base in reversed(cls.__mro__[1:]):  # a lazy base's fields come first
            if hasattr(base.__dict__.get("__init__"), "__lazy_dataclass__"):
                _build(base)
        del cls.__init__  # type: ignore[misc]  # dataclass never replaces a method the class defines
        dataclasses.dataclass(cls, **options)


def build(*classes: type) -> None:
    """Make these lazy dataclasses now (what their first construction would do)."""
    for cls in classes:
        _build(cls)
