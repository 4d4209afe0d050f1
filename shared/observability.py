"""Logger, metrics and their two exports: CloudWatch EMF through Powertools Metrics inside
Lambda, Prometheus everywhere else (emulator, long-running worker; see
`shared.prometheus_metrics`, which a Lambda function never imports). Metric names follow the
SPEC."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.formatter import RESERVED_LOG_ATTRS, LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from shared.keys import STATES
from shared.models import JobOutcome, QueueCounts
from shared.settings import Settings

if TYPE_CHECKING:
    from types import ModuleType

SERVICE = "preview-service"
NAMESPACE = "PreviewService"

class _CurrentStdout:
    """Writes to whatever sys.stdout is now (it may be swapped after import, e.g. by a test runner)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


logger = Logger(
    service=SERVICE,
    # INFO until `configure` applies LOG_LEVEL (shared.wiring does, with the settings).
    level="INFO",
    logger_handler=logging.StreamHandler(_CurrentStdout()),  # type: ignore[arg-type]
)

_emf_wanted = True


class _Stamp:
    """What the formatter's formatTime reads of a log record."""

    __slots__ = ("created", "msecs")

    def __init__(self, created: float) -> None:
        self.created = created
        self.msecs = (created - int(created)) * 1000


_std_logger = logging.getLogger(logger.name)  # the standard logger Powertools' wraps


class _Plan:
    """The keys of the formatter's log format, in order, for one state of it: the values that
    are the same on every line, and the record-attribute templates to fill in per line."""

    __slots__ = ("formatter", "items", "types", "static", "templated", "serializer", "serialize")

    def __init__(self, formatter: LambdaPowertoolsFormatter) -> None:
        self.formatter = formatter
        self.serializer = formatter.json_serializer
        self.serialize: Callable[[dict[str, Any]], str] = _serializer(formatter)
        self.items = list(formatter.log_format.items())
        self.types = tuple(type(value) for _, value in self.items)
        self.static: dict[str, Any] = {}
        self.templated: list[tuple[str, str]] = []
        for key, value in self.items:
            self.static[key] = value
            if value and key in RESERVED_LOG_ATTRS and isinstance(value, str):
                self.templated.append((key, value))

    def holds(self, formatter: LambdaPowertoolsFormatter) -> bool:
        log_format = formatter.log_format
        return (formatter is self.formatter and formatter.json_serializer is self.serializer
                and self.items == list(log_format.items())
                and self.types == tuple(map(type, log_format.values())))


# What json.dumps passes on to the JSONEncoder it builds (all but `cls`).
_ENCODER_OPTIONS = frozenset({"skipkeys", "ensure_ascii", "check_circular", "allow_nan", "indent", "separators",
                              "default", "sort_keys"})


def _serializer(formatter: LambdaPowertoolsFormatter) -> Callable[[dict[str, Any]], str]:
    """`formatter.serialize`; when that is Powertools' own `json.dumps` with options, the encoder
    `json.dumps` would build on every call, built once (the same text)."""
    dumps = formatter.json_serializer
    if (isinstance(dumps, functools.partial) and dumps.func is json.dumps and not dumps.args
            and set(dumps.keywords) <= _ENCODER_OPTIONS):
        return json.JSONEncoder(**dumps.keywords).encode
    return formatter.serialize  # type: ignore[return-value]


_plans = threading.local()
# (formatter, whole second, what strftime gives before and after the milliseconds)
_second: tuple[Any, int, str, str] | None = None


def _timestamp(formatter: LambdaPowertoolsFormatter, now: float) -> str:
    """`formatter.formatTime` for a record made at `now`: its default form (the date and time
    to the second change once a second, so strftime runs once a second), else its own."""
    global _second
    directive = formatter.custom_ms_time_directive
    default = formatter.default_time_format
    if (formatter.use_rfc3339_iso8601 or formatter.datefmt or default.count(directive) != 1
            or formatter.converter not in (time.localtime, time.gmtime)):
        return formatter.formatTime(_Stamp(now))  # type: ignore[arg-type]
    second = int(now)
    cached = _second
    if cached is None or cached[0] is not formatter or cached[1] != second:
        moment = formatter.converter(second)
        before, after = default.split(directive)
        cached = _second = (formatter, second, time.strftime(before, moment), time.strftime(after, moment))
    return f"{cached[2]}{int((now - second) * 1000):03d}{cached[3]}"  # formatTime's '%03d' of msecs


def info_line(message: str, fields: dict[str, Any], **more: Any) -> None:
    """`logger.info(message, extra={**fields, **more})`, the same JSON line with the same keys
    in the same order, at under half the cost: the worker writes one per job and admission one
    per job, and the logging machinery (a LogRecord, the caller's frame walk, the formatter's
    pass over every record attribute) took a third of a no-op job's time. What the log format
    makes of every line is worked out once (again when the format changes), the time to the
    second once a second. Anything beyond the plain case (filters, a handler of another kind,
    a custom key naming a record attribute this does not fill in) goes through `logger.info`."""
    std = _std_logger
    if not std.isEnabledFor(logging.INFO):
        return
    handler = logger.registered_handler
    formatter = handler.formatter if handler is not None else None
    if (type(formatter) is not LambdaPowertoolsFormatter or type(handler) is not logging.StreamHandler
            or handler.filters or std.filters or handler.level > logging.INFO):
        logger.info(message, extra={**fields, **more}, stacklevel=2)
        return
    plan: _Plan | None = getattr(_plans, "plan", None)
    if plan is None or not plan.holds(formatter):
        plan = _plans.plan = _Plan(formatter)
    caller = sys._getframe(1)
    now = time.time()
    attrs = {"levelname": "INFO", "levelno": logging.INFO, "funcName": caller.f_code.co_name,
             "lineno": caller.f_lineno, "name": logger.name, "process": os.getpid(),
             "thread": threading.get_ident(), "threadName": threading.current_thread().name,
             "created": now}
    try:
        attrs["asctime"] = _timestamp(formatter, now)
        line = plan.static.copy()
        for key, template in plan.templated:
            line[key] = template % attrs
        for key, value in logger.thread_safe_get_current_keys().items():
            line[key] = value % attrs if value and key in RESERVED_LOG_ATTRS and isinstance(value, str) else value
    except (KeyError, TypeError, ValueError):
        logger.info(message, extra={**fields, **more}, stacklevel=2)
        return
    line.update(fields)
    line.update(more)
    line["message"] = message
    line["xray_trace_id"] = formatter._get_latest_trace_id()
    text = plan.serialize({k: v for k, v in line.items() if v is not None})
    handler.acquire()
    try:
        handler.stream.write(text + handler.terminator)
        handler.flush()
    finally:
        handler.release()


def debug_enabled() -> bool:
    """Whether a debug line would be written: a caller that logs one per job skips the call
    (and the building of its fields) at INFO."""
    return _std_logger.isEnabledFor(logging.DEBUG)


def configure(settings: Settings) -> None:
    """Apply the settings that govern logs and metrics: LOG_LEVEL and PREVIEW_METRICS_EMF."""
    global _emf_wanted
    logger.setLevel(settings.log_level)
    _emf_wanted = settings.metrics_emf


def in_lambda() -> bool:
    """Inside real Lambda (the emulator sets no AWS_EXECUTION_ENV); nobody scrapes it there."""
    return "AWS_LAMBDA_FUNCTION_NAME" in os.environ and "AWS_EXECUTION_ENV" in os.environ


def emf_enabled() -> bool:
    """EMF lines go to stdout only inside real Lambda, where CloudWatch turns them into metrics."""
    return _emf_wanted and in_lambda()


def prometheus() -> ModuleType | None:
    """The Prometheus collectors, or None inside Lambda (which then never loads the client)."""
    if in_lambda():
        return None
    from shared import prometheus_metrics

    return prometheus_metrics


def _emf(name: str, value: float, unit: MetricUnit, dimensions: dict[str, str]) -> None:
    with single_metric(name=name, unit=unit, value=value, namespace=NAMESPACE) as metric:
        metric.add_dimension(name="service", value=SERVICE)
        for key, dim in dimensions.items():
            metric.add_dimension(name=key, value=dim)


def record_request(route: str, status: int) -> None:
    if prom := prometheus():
        prom.REQUESTS.labels(route=route, status=str(status)).inc()
    if emf_enabled():
        _emf("preview_requests_total", 1, MetricUnit.Count, {"route": route, "status": str(status)})


def record_failure(component: str) -> None:
    if prom := prometheus():
        prom.FAILURES.labels(component=component).inc()
    if emf_enabled():
        _emf("preview_failures_total", 1, MetricUnit.Count, {"component": component})


def record_job(outcome: JobOutcome, seconds: float | None = None) -> None:
    if prom := prometheus():
        prom.JOB_OUTCOMES.labels(outcome=outcome).inc()
        if seconds is not None:
            prom.JOB_DURATION.observe(seconds)
    if emf_enabled():
        _emf("preview_worker_job_outcomes_total", 1, MetricUnit.Count, {"outcome": outcome})
        if seconds is not None:
            _emf("preview_worker_job_duration_seconds", seconds, MetricUnit.Seconds, {})


def record_queue_counts(counts: QueueCounts) -> None:
    if prom := prometheus():
        for state in STATES:
            prom.QUEUE_JOBS.labels(queue=counts.name, state=state).set(getattr(counts, state))
    if emf_enabled():
        for state in STATES:
            _emf("preview_queue_jobs", getattr(counts, state), MetricUnit.Count,
                 {"queue": counts.name, "state": state})


def record_health(queue: str, oldest_waiting_seconds: float | None, workers_recent: int) -> None:
    """What the health check found, as CloudWatch metrics for the template's alarms (the
    long-running worker's Prometheus rules read its own gauges instead)."""
    if emf_enabled():
        _emf("preview_queue_oldest_waiting_seconds", oldest_waiting_seconds or 0.0, MetricUnit.Seconds,
             {"queue": queue})
        _emf("preview_workers_recent", workers_recent, MetricUnit.Count, {"queue": queue})


def record_worker_heartbeat() -> None:
    # Inside Lambda the heartbeat lives in Redis only (health reads it from there).
    if prom := prometheus():
        prom.WORKER_HEARTBEAT.set_to_current_time()


class ColdStart:
    """True on the first invocation only. Each handler holds one: in Lambda a module is loaded
    once per execution environment, and in the emulator each function has its own handler."""

    def __init__(self) -> None:
        self._warm = False
        self._lock = threading.Lock()

    def __call__(self) -> bool:
        with self._lock:
            cold, self._warm = not self._warm, True
        return cold


@contextmanager
def invocation_context(context: Any, correlation_id: str | None = None, *, cold: bool = False,
                       **keys: Any) -> Iterator[None]:
    """Log keys of one invocation (function, request id, cold start, correlation id).

    Kept per thread, unlike Powertools' `inject_lambda_context`, because the emulator and the
    long-running worker run several invocations at once in one process."""
    name = getattr(context, "function_name", "") or ""
    fields: dict[str, Any] = {"cold_start": cold}
    if context is not None:
        fields.update(
            function_name=name,
            function_memory_size=getattr(context, "memory_limit_in_mb", None),
            function_arn=getattr(context, "invoked_function_arn", None),
            function_request_id=getattr(context, "aws_request_id", None),
        )
    if correlation_id:
        fields["correlation_id"] = correlation_id
    logger.thread_safe_append_keys(**fields, **keys)
    try:
        yield
    finally:
        logger.thread_safe_clear_keys()


def lambda_handler(function: Callable[[dict[str, Any], Any], Any]) -> Callable[[dict[str, Any], Any], Any]:
    """Decorator for the non-HTTP functions: invocation log keys, correlation id = event id."""

    cold_start = ColdStart()

    @functools.wraps(function)
    def wrapper(event: dict[str, Any], context: Any) -> Any:
        correlation = event.get("id") if isinstance(event, dict) else None
        with invocation_context(context, correlation, cold=cold_start()):
            return function(event, context)

    return wrapper
