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
from json.encoder import c_make_encoder as _make_encoder  # None without the C accelerator
from json.encoder import encode_basestring as _encode_text
from json.encoder import encode_basestring_ascii as _encode_ascii
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
    are the same on every line, the record-attribute templates to fill in per line, and, per
    call site, the text of the line but for its timestamp and the caller's fields."""

    __slots__ = ("formatter", "static", "templated", "serializer", "serialize", "keys", "ids", "taken", "sites",
                 "splice", "encode_text", "encoder", "markers", "separator", "trace", "stamp")

    def __init__(self, formatter: LambdaPowertoolsFormatter) -> None:
        self.formatter = formatter
        self.serializer = formatter.json_serializer
        self.serialize: Callable[[dict[str, Any]], str] = _serializer(formatter)
        log_format = formatter.log_format
        # What info_line compares to know the format unchanged: the keys in order and the very
        # values (kept alive by `static`)
        self.keys = tuple(log_format)
        self.ids = tuple(map(id, log_format.values()))
        self.static: dict[str, Any] = dict(log_format)
        self.templated: list[tuple[str, str]] = [
            (key, value) for key, value in self.static.items()
            if value and key in RESERVED_LOG_ATTRS and isinstance(value, str)]
        # Keys a caller's field, or a log context key, may not take for its line to be spliced:
        # the format's own (their place is in the fixed part), the templated ones, the trace id.
        self.taken = frozenset((*self.static, *RESERVED_LOG_ATTRS, _TRACE_KEY))
        self.sites: dict[tuple[int, int, str], tuple[Any, tuple[str, str | None] | None]] = {}
        # The trace id is read per line unless the format turns it off (Powertools' rule)
        self.trace = _TRACE_KEY not in self.static
        encoder = getattr(self.serialize, "__self__", None)
        self.splice = (type(encoder) is json.JSONEncoder and encoder.indent is None and not encoder.sort_keys
                       and _make_encoder is not None and "message" in self.static
                       and self.static.get(_TRACE_KEY, None) is None
                       and all(type(value) in _SCALARS for value in self.static.values()))
        self.encode_text: Callable[[str], str] = json.dumps
        self.encoder: Callable[[Any, int], Any] | None = None
        self.markers: dict[int, Any] | None = None
        self.separator = ","
        # (second, the formatter's time options, the timestamp's JSON text before and after its
        # milliseconds), or None after it for a form that is not the default one
        self.stamp: tuple[int, tuple[Any, ...], str, str | None] | None = None
        if self.splice and isinstance(encoder, json.JSONEncoder):
            # What `encoder.encode` builds on every call (`iterencode` defines a function and reads
            # nine options), built once: a plan is one thread's, and so is its circularity check.
            self.encode_text = _encode_ascii if encoder.ensure_ascii else _encode_text
            self.markers = {} if encoder.check_circular else None
            self.encoder = _make_encoder(self.markers, encoder.default, self.encode_text, None,
                                         encoder.key_separator, encoder.item_separator, False, encoder.skipkeys,
                                         encoder.allow_nan)
            self.separator = encoder.item_separator

    def site(self, function: str, lineno: int, message: str) -> tuple[str, str | None] | None:
        """The line of one call site as `info_line` would build it with no field: its text
        without the closing brace, cut where the timestamp goes (None after it when the format
        has no timestamp). None when the format fills in a record attribute that changes from
        line to line at that site (a thread, a process), or when the cut is not clean."""
        attrs = {"levelname": "INFO", "levelno": logging.INFO, "funcName": function, "lineno": lineno,
                 "name": logger.name}
        line = self.static.copy()
        try:
            for key, template in self.templated:
                line[key] = _TIME_MARK if template == "%(asctime)s" else template % attrs
        except (KeyError, TypeError, ValueError):
            return None
        line["message"] = message
        text = self.serialize({k: v for k, v in line.items() if v is not None})
        mark = self.encode_text(_TIME_MARK)
        if not (text.startswith("{") and text.endswith("}") and len(text) > 2) or text.count(mark) > 1:
            return None
        head, found, tail = text[:-1].partition(mark)
        return (head, tail) if found else (head, None)

    def timestamp(self, formatter: LambdaPowertoolsFormatter, now: float) -> str:
        """The timestamp of a line made at `now` as JSON text: `_timestamp`'s, with the text
        around the milliseconds encoded once a second."""
        second = int(now)
        options = (formatter.use_rfc3339_iso8601, formatter.datefmt, formatter.default_time_format,
                   formatter.custom_ms_time_directive, formatter.converter)
        stamp = self.stamp
        if stamp is None or stamp[0] != second or stamp[1] != options:
            stamp = self.stamp = (second, options, *self._stamp(formatter, second))
        if stamp[3] is None:
            return self.encode_text(_timestamp(formatter, now))
        millis = int((now - second) * 1000)
        return f"{stamp[2]}{_MILLIS[millis] if millis >= 0 else f'{millis:03d}'}{stamp[3]}"

    def _stamp(self, formatter: LambdaPowertoolsFormatter, second: int) -> tuple[str, str | None]:
        parts = _second_parts(formatter, second)
        if parts is None:
            return "", None
        # JSON escapes character by character: the parts encode as the whole would
        return self.encode_text(parts[0])[:-1], self.encode_text(parts[1])[1:]


_TRACE_KEY = "xray_trace_id"
_TRACE_ENV = "_X_AMZN_TRACE_ID"  # aws_lambda_powertools.shared.constants.XRAY_TRACE_ID_ENV
# os.environ's own store (`_data`, under `encodekey`'s form of a name): asking it whether a
# variable is set costs a fraction of os.environ.get, which raises and catches a KeyError when
# it is not. Only to see whether it is set; its value is read through os.environ.
_ENVIRON_TYPE = type(os.environ)
_TRACE_ENV_KEY: Any = os.environ.encodekey(_TRACE_ENV)  # type: ignore[attr-defined]
# Where a site's line takes its timestamp (a text no log format holds).
_TIME_MARK = "\x00asctime\x00"
# Values of the log format that can be cut into a site's text once: they never change in place.
_SCALARS = (str, int, float, bool, type(None))
# formatTime's '%03d' of the milliseconds of a second
_MILLIS = tuple(f"{ms:03d}" for ms in range(1000))
# Call sites whose text is kept, per plan (messages are fixed texts; a growing number is not).
_MAX_SITES = 256


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


def _second_parts(formatter: LambdaPowertoolsFormatter, second: int) -> tuple[str, str] | None:
    """What `formatter.formatTime` writes before and after the milliseconds in the `second`,
    for its default form (None for another: the formatter's own then)."""
    directive = formatter.custom_ms_time_directive
    default = formatter.default_time_format
    if (formatter.use_rfc3339_iso8601 or formatter.datefmt or default.count(directive) != 1
            or formatter.converter not in (time.localtime, time.gmtime)):
        return None
    moment = formatter.converter(second)
    before, after = default.split(directive)
    return time.strftime(before, moment), time.strftime(after, moment)


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
        parts = _second_parts(formatter, second)
        if parts is None:  # the formatter changed since the check above
            return formatter.formatTime(_Stamp(now))  # type: ignore[arg-type]
        cached = _second = (formatter, second, *parts)
    return f"{cached[2]}{int((now - second) * 1000):03d}{cached[3]}"  # formatTime's '%03d' of msecs


def info_line(message: str, fields: dict[str, Any], **more: Any) -> None:
    """`logger.info(message, extra={**fields, **more})`, the same JSON line with the same keys
    in the same order, at a fraction of the cost: the worker writes one per job and admission
    one per job, and the logging machinery (a LogRecord, the caller's frame walk, the
    formatter's pass over every record attribute) took a third of a no-op job's time. What the
    log format makes of every line is worked out once (again when the format changes), the
    text of each call site's line once (but for its timestamp and fields), the time to the
    second once a second. Anything beyond the plain case (filters, a handler of another kind,
    a custom key naming a record attribute this does not fill in) goes through `logger.info`."""
    std = _std_logger
    if not std.isEnabledFor(logging.INFO):
        return
    # What `registered_handler` answers first (a property and a method call fewer)
    handler = getattr(logger, "logger_handler", None) or logger.registered_handler
    formatter = handler.formatter if handler is not None else None
    if (type(formatter) is not LambdaPowertoolsFormatter or type(handler) is not logging.StreamHandler
            or handler.filters or std.filters or handler.level > logging.INFO or handler.lock is None):
        logger.info(message, extra={**fields, **more}, stacklevel=2)
        return
    plan: _Plan | None = getattr(_plans, "plan", None)
    log_format = formatter.log_format
    if (plan is None or plan.formatter is not formatter or plan.serializer is not formatter.json_serializer
            or plan.keys != tuple(log_format) or plan.ids != tuple(map(id, log_format.values()))):
        plan = _plans.plan = _Plan(formatter)
    caller = sys._getframe(1)
    now = time.time()
    text = None
    if plan.splice:
        # The call site by its code's identity and the caller's instruction: hashing a code
        # object, or working out a line number, costs more than the rest of the line.
        code = caller.f_code
        key = (id(code), caller.f_lasti, message)
        known = plan.sites.get(key)
        if known is None or known[0] is not code:
            if len(plan.sites) >= _MAX_SITES:
                plan.sites.clear()
            known = plan.sites[key] = (code, plan.site(code.co_name, caller.f_lineno, message))
        site = known[1]
        body: dict[str, Any] | None = None
        if site is not None:
            taken = plan.taken
            current = formatter.thread_safe_get_current_keys()
            trace = None
            environ = os.environ
            if plan.trace and (type(environ) is not _ENVIRON_TYPE or _TRACE_ENV_KEY in environ._data):  # type: ignore[attr-defined]
                trace = environ.get(_TRACE_ENV)
            # The body stays None (the general build) when a field or a context key takes a
            # key of the format
            if current or trace or type(fields) is not dict:
                if taken.isdisjoint(current) and taken.isdisjoint(fields) and taken.isdisjoint(more):
                    body = {**current, **fields, **more}
                    if trace:  # Powertools' reading of the variable
                        body[_TRACE_KEY] = trace.split(";")[0].replace("Root=", "")
            elif not more:
                body = fields if taken.isdisjoint(fields) else None
            elif taken.isdisjoint(fields) and taken.isdisjoint(more):
                body = {**fields, **more}
            if body is not None and None in body.values():  # None is left out, as Powertools does
                body = {k: v for k, v in body.items() if v is not None}
        if body is not None:
            head, tail = site  # type: ignore[misc]
            rest = "}"
            if body:
                try:
                    rest = plan.separator + "".join(plan.encoder(body, 0))[1:]  # type: ignore[misc]
                except BaseException:
                    if plan.markers:  # what an encoding cut short left behind
                        plan.markers.clear()
                    raise
            text = head + rest if tail is None else f"{head}{plan.timestamp(formatter, now)}{tail}{rest}"
    if text is None:
        text = _general_line(plan, formatter, caller, now, message, fields, more)
        if text is None:
            logger.info(message, extra={**fields, **more}, stacklevel=2)
            return
    stream = handler.stream
    if type(stream) is _CurrentStdout:  # what its write and flush do, one call fewer each
        stream = sys.stdout
    with handler.lock:  # what StreamHandler.emit and flush do, holding the lock once
        stream.write(text + handler.terminator)
        if stream and hasattr(stream, "flush"):
            stream.flush()


def _general_line(plan: _Plan, formatter: LambdaPowertoolsFormatter, caller: Any, now: float, message: str,
                  fields: dict[str, Any], more: dict[str, Any]) -> str | None:
    """The line built key by key as the formatter would (None: a template it cannot fill in)."""
    attrs = {"levelname": "INFO", "levelno": logging.INFO, "funcName": caller.f_code.co_name,
             "lineno": caller.f_lineno, "name": logger.name, "process": os.getpid(),
             "thread": threading.get_ident(), "threadName": threading.current_thread().name,
             "created": now}
    try:
        attrs["asctime"] = _timestamp(formatter, now)
        line = plan.static.copy()
        for key, template in plan.templated:
            line[key] = template % attrs
        for key, value in formatter.thread_safe_get_current_keys().items():
            line[key] = value % attrs if value and key in RESERVED_LOG_ATTRS and isinstance(value, str) else value
    except (KeyError, TypeError, ValueError):
        return None
    line.update(fields)
    line.update(more)
    line["message"] = message
    line[_TRACE_KEY] = formatter._get_latest_trace_id()
    return plan.serialize({k: v for k, v in line.items() if v is not None})


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
