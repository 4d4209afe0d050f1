"""Logger, metrics and their two exports: CloudWatch EMF through Powertools Metrics inside
Lambda, Prometheus everywhere else (emulator, long-running worker; see
`shared.prometheus_metrics`, which a Lambda function never imports). Metric names follow the
SPEC."""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from shared.models import QueueCounts

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
    # A bad LOG_LEVEL is reported by the settings check with the other variables; until
    # then log at INFO rather than fail the import with a traceback.
    level=_level if (_level := os.environ.get("LOG_LEVEL", "INFO").upper()) in logging.getLevelNamesMapping()
    else "INFO",
    logger_handler=logging.StreamHandler(_CurrentStdout()),  # type: ignore[arg-type]
)

def in_lambda() -> bool:
    """Inside real Lambda (the emulator sets no AWS_EXECUTION_ENV); nobody scrapes it there."""
    return "AWS_LAMBDA_FUNCTION_NAME" in os.environ and "AWS_EXECUTION_ENV" in os.environ


def emf_enabled() -> bool:
    """EMF lines go to stdout only inside real Lambda, where CloudWatch turns them into metrics."""
    return in_lambda() and os.environ.get("PREVIEW_METRICS_EMF", "").lower() not in {"0", "false", "no"}


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


def record_job(outcome: str, seconds: float | None = None) -> None:
    if prom := prometheus():
        prom.JOB_OUTCOMES.labels(outcome=outcome).inc()
        if seconds is not None:
            prom.JOB_DURATION.observe(seconds)
    if emf_enabled():
        _emf("preview_worker_job_outcomes_total", 1, MetricUnit.Count, {"outcome": outcome})
        if seconds is not None:
            _emf("preview_worker_job_duration_seconds", seconds, MetricUnit.Seconds, {})


QUEUE_STATES = ("waiting", "active", "completed", "failed", "delayed")


def record_queue_counts(counts: QueueCounts) -> None:
    if prom := prometheus():
        for state in QUEUE_STATES:
            prom.QUEUE_JOBS.labels(queue=counts.name, state=state).set(getattr(counts, state))
    if emf_enabled():
        for state in QUEUE_STATES:
            _emf("preview_queue_jobs", getattr(counts, state), MetricUnit.Count,
                 {"queue": counts.name, "state": state})


def record_worker_heartbeat() -> None:
    # Inside Lambda the heartbeat lives in Redis only (health reads it from there).
    if prom := prometheus():
        prom.WORKER_HEARTBEAT.set_to_current_time()


_warm_functions: set[str] = set()
_warm_lock = threading.Lock()


@contextmanager
def invocation_context(context: Any, correlation_id: str | None = None, **keys: Any) -> Iterator[None]:
    """Log keys of one invocation (function, request id, cold start, correlation id).

    Kept per thread, unlike Powertools' `inject_lambda_context`, because the emulator and the
    long-running worker run several invocations at once in one process."""
    name = getattr(context, "function_name", "") or ""
    with _warm_lock:
        cold = name not in _warm_functions
        _warm_functions.add(name)
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

    @functools.wraps(function)
    def wrapper(event: dict[str, Any], context: Any) -> Any:
        correlation = event.get("id") if isinstance(event, dict) else None
        with invocation_context(context, correlation):
            return function(event, context)

    return wrapper
