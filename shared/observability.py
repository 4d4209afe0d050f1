"""Logger, metrics and their two exports: Prometheus (emulator, long-running worker) and
CloudWatch EMF through Powertools Metrics (Lambda). Metric names follow the SPEC."""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit, single_metric
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from shared.models import QueueCounts

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

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "preview_requests_total", "HTTP requests by route and status", ["route", "status"], registry=REGISTRY
)
FAILURES = Counter(
    "preview_failures_total", "Unexpected failures by component", ["component"], registry=REGISTRY
)
JOB_OUTCOMES = Counter(
    "preview_worker_job_outcomes_total",
    "Finished job attempts by outcome (completed, failed, retried, invalid, dryrun, stalled)",
    ["outcome"],
    registry=REGISTRY,
)
JOB_DURATION = Histogram(
    "preview_worker_job_duration_seconds",
    "Wall time of one job attempt in the worker",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
    registry=REGISTRY,
)
QUEUE_JOBS = Gauge("preview_queue_jobs", "Jobs per state", ["queue", "state"], registry=REGISTRY)
WORKER_HEARTBEAT = Gauge(
    "preview_worker_last_heartbeat_seconds", "Unix time of this worker's last heartbeat", registry=REGISTRY
)

OUTCOMES = ("completed", "failed", "retried", "invalid", "dryrun", "stalled")
for _outcome in OUTCOMES:
    # Present from the start at 0, so rate() over them is 0 rather than empty for an idle worker.
    JOB_OUTCOMES.labels(outcome=_outcome)
PROMETHEUS_CONTENT_TYPE = CONTENT_TYPE_LATEST


def emf_enabled() -> bool:
    """EMF lines go to stdout only inside real Lambda, where CloudWatch turns them into metrics."""
    if os.environ.get("PREVIEW_METRICS_EMF", "").lower() in {"0", "false", "no"}:
        return False
    return "AWS_LAMBDA_FUNCTION_NAME" in os.environ and "AWS_EXECUTION_ENV" in os.environ


def _emf(name: str, value: float, unit: MetricUnit, dimensions: dict[str, str]) -> None:
    with single_metric(name=name, unit=unit, value=value, namespace=NAMESPACE) as metric:
        metric.add_dimension(name="service", value=SERVICE)
        for key, dim in dimensions.items():
            metric.add_dimension(name=key, value=dim)


def record_request(route: str, status: int) -> None:
    REQUESTS.labels(route=route, status=str(status)).inc()
    if emf_enabled():
        _emf("preview_requests_total", 1, MetricUnit.Count, {"route": route, "status": str(status)})


def record_failure(component: str) -> None:
    FAILURES.labels(component=component).inc()
    if emf_enabled():
        _emf("preview_failures_total", 1, MetricUnit.Count, {"component": component})


def record_job(outcome: str, seconds: float | None = None) -> None:
    JOB_OUTCOMES.labels(outcome=outcome).inc()
    if seconds is not None:
        JOB_DURATION.observe(seconds)
    if emf_enabled():
        _emf("preview_worker_job_outcomes_total", 1, MetricUnit.Count, {"outcome": outcome})
        if seconds is not None:
            _emf("preview_worker_job_duration_seconds", seconds, MetricUnit.Seconds, {})


def record_queue_counts(counts: QueueCounts) -> None:
    for state in ("waiting", "active", "completed", "failed", "delayed"):
        QUEUE_JOBS.labels(queue=counts.name, state=state).set(getattr(counts, state))
    if emf_enabled():
        for state in ("waiting", "active", "completed", "failed", "delayed"):
            _emf("preview_queue_jobs", getattr(counts, state), MetricUnit.Count,
                 {"queue": counts.name, "state": state})


def record_worker_heartbeat() -> None:
    WORKER_HEARTBEAT.set_to_current_time()


def prometheus_text() -> bytes:
    return generate_latest(REGISTRY)


def exported_metric_names() -> Iterable[str]:
    """Every series name a scrape can show (counters add _total/_created, histograms _bucket...)."""
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            yield sample.name


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
