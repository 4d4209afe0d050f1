"""Per-thread request state for Powertools' event handler.

Lambda runs one request at a time per execution environment, and Powertools relies on it:
`resolve()` stores the current event on the `BaseRouter` *class* (one slot for every
resolver in the process) and the route arguments in the resolver's `context` dict. The
emulator runs concurrent requests in threads of one process, where those slots would be
overwritten by another request mid-flight (a status call answering for someone else's job).
`install()` gives each thread its own copy of that state, which is what separate execution
environments give each request in the cloud. If Powertools' internals ever change so this
cannot be installed, the caller falls back to one request at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_installed = False
_lock = threading.Lock()


class _PerThread:
    """A data descriptor: one value per thread, for the class itself and for each instance."""

    def __init__(self, default: Callable[[], Any] | None) -> None:
        self._local = threading.local()
        self._default = default

    def _slots(self) -> dict[Any, Any]:
        slots = getattr(self._local, "slots", None)
        if slots is None:
            slots = self._local.slots = {}
        return slots

    def get(self, key: Any) -> Any:
        slots = self._slots()
        if key in slots:
            return slots[key]
        if key is not None and None in slots:
            return slots[None]  # an instance reads what was set on the class, as in Python
        if self._default is None:
            raise AttributeError("no value in this thread")
        value = slots[key] = self._default()
        return value

    def set(self, key: Any, value: Any) -> None:
        self._slots()[key] = value

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self.get(None if obj is None else id(obj))

    def __set__(self, obj: Any, value: Any) -> None:
        self.set(id(obj), value)


def _class_level(slot: _PerThread) -> property:
    """On the metaclass, so `BaseRouter.current_event = x` lands in the thread's slot."""
    return property(lambda cls: slot.get(None), lambda cls, value: slot.set(None, value))


def install() -> bool:
    """Make Powertools' per-request state thread-local; False if its layout is not the known one."""
    global _installed
    with _lock:
        if _installed:
            return True
        try:
            from aws_lambda_powertools.event_handler import api_gateway
        except ImportError:
            return False
        base = getattr(api_gateway, "BaseRouter", None)
        resolver = getattr(api_gateway, "ApiGatewayResolver", None)
        if base is None or resolver is None or "context" in vars(resolver) or "context" in vars(base):
            return False
        event_slot, context_slot = _PerThread(None), _PerThread(None)
        # Instance reads and writes (`self.current_event`, `self.context = {}`) go through
        # descriptors in the class dicts; written while the metaclass is still the plain one.
        base.current_event = event_slot
        base.lambda_context = context_slot
        resolver.context = _PerThread(dict)
        resolver.processed_stack_frames = _PerThread(list)
        # Class-level writes (`BaseRouter.current_event = ...` in resolve()) go through the
        # metaclass, which must therefore carry the same slots as properties.
        meta = type(base)
        per_thread_meta = type(f"PerThread{meta.__name__}", (meta,), {
            "current_event": _class_level(event_slot),
            "lambda_context": _class_level(context_slot),
        })
        try:
            base.__class__ = per_thread_meta
        except TypeError:
            return False
        _installed = True
        return True
