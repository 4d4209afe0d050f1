"""Running the template's functions in this process: handler import, invocation with a
Lambda context, synchronous (HTTP, with a deadline) and asynchronous (kicks, schedules)."""

from __future__ import annotations

import asyncio
import importlib
import logging
import queue
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from local.errors import StartupError
from local.events import LambdaContext, scheduled_event
from local.template import FunctionSpec, ScheduleSpec, Template

log = logging.getLogger("local.runtime")

Handler = Callable[[Any, Any], Any]


class DaemonPool:
    """A small thread pool of daemon threads. A handler still running past its timeout keeps
    its thread (Python cannot kill it); daemon threads never hold up the emulator's exit."""

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = \
            queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("pool is shut down")
            if self._idle == 0 and len(self._threads) < self._size:
                thread = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
            else:
                self._idle -= 1  # an idle thread will take this one
        self._jobs.put((future, fn, args))
        return future

    def _work(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            future, fn, args = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as exc:
                    future.set_exception(exc)
            del item, future, fn, args
            with self._lock:
                self._idle += 1

    def shutdown(self, wait: float = 0.0) -> None:
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(None)
        for thread in threads:
            thread.join(wait)


class HandlerFailed(Exception):
    """The handler raised: API Gateway answers 502, an async invoke logs it."""


class FunctionRuntime:
    def __init__(self, template: Template, *, http_concurrency: int = 64, async_concurrency: int = 8,
                 config_errors: tuple[type[Exception], ...] = ()) -> None:
        self.template = template
        # What a handler's import raises for a bad configuration: reported as its message alone.
        self.config_errors = config_errors
        self.handlers: dict[str, Handler] = {}
        self.http_pool = DaemonPool(http_concurrency, "invoke")
        self.async_pool = DaemonPool(async_concurrency, "async-invoke")
        # Without per-thread Powertools state, requests must take turns (see local/isolation.py).
        self.serial: threading.Lock | None = None

    # -- loading

    def load(self) -> None:
        """Import every handler now, so a broken one stops start-up with a clear message."""
        for spec in self.template.functions.values():
            self.handlers[spec.logical_id] = load_handler(spec, config_errors=self.config_errors)

    # -- invocation

    def call(self, spec: FunctionSpec, event: Any, context: LambdaContext) -> Any:
        handler = self.handlers[spec.logical_id]
        if self.serial is None:
            return _run(handler, spec, event, context)
        with self.serial:
            return _run(handler, spec, event, context)

    async def invoke_http(self, spec: FunctionSpec, event: dict[str, Any], timeout_s: float) -> Any:
        """The handler's result; TimeoutError past the deadline; HandlerFailed if it raised."""
        context = LambdaContext(self.template, spec, timeout_s)
        future = self.http_pool.submit(self.call, spec, event, context)
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)

    def invoke_async(self, name: str, event: Any) -> None:
        """Lambda's InvocationType=Event: queued, never blocking the caller. The invoker the
        functions' own code is given for invoking another function."""
        spec = self.template.find(name)
        if spec is None:
            raise LookupError(f"no function {name!r} in the template")
        self.async_pool.submit(self._run_async, spec, event)

    def _run_async(self, spec: FunctionSpec, event: Any) -> Any:
        try:
            return self.call(spec, event, LambdaContext(self.template, spec))
        except HandlerFailed:
            return None  # already logged with its traceback

    def fire(self, schedule: ScheduleSpec, *, wait: bool = False) -> tuple[Any, Any]:
        """Deliver a schedule's event; with `wait`, run it here and return the result."""
        spec = self.template.functions[schedule.function]
        event = scheduled_event(self.template, schedule)
        if not wait:
            self.async_pool.submit(self._run_async, spec, event)
            return event, None
        return event, self.call(spec, event, LambdaContext(self.template, spec))

    def shutdown(self) -> None:
        self.http_pool.shutdown()
        self.async_pool.shutdown()


def _run(handler: Handler, spec: FunctionSpec, event: Any, context: LambdaContext) -> Any:
    try:
        return handler(event, context)
    except Exception as exc:
        log.error("%s raised (request %s)", spec.logical_id, context.aws_request_id, exc_info=True)
        raise HandlerFailed(f"{type(exc).__name__}: {exc}") from exc


def load_handler(spec: FunctionSpec, *, config_errors: tuple[type[Exception], ...] = ()) -> Handler:
    """Import the handler the way the Lambda runtime does: code root first on the path.
    `config_errors`: what the import raises for a bad configuration (its message is the report)."""
    root = str(spec.code_root)
    if root not in sys.path:
        sys.path.insert(0, root)
    where = f"{spec.logical_id} ({spec.handler}, {_relative(spec)})"
    try:
        module = importlib.import_module(spec.module)
    except config_errors as exc:
        raise StartupError(str(exc)) from None
    except Exception as exc:
        raise StartupError(f"cannot import handler of {where}: {type(exc).__name__}: {exc}") from None
    handler = getattr(module, spec.attribute, None)
    if not callable(handler):
        raise StartupError(f"handler of {where}: module has no function {spec.attribute!r}")
    return handler  # type: ignore[no-any-return]


def _relative(spec: FunctionSpec) -> str:
    try:
        return str(spec.source_file.relative_to(Path.cwd()))
    except ValueError:
        return str(spec.source_file)
