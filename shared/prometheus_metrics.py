"""The Prometheus side of the metrics: one registry with every SPEC metric, scraped from the
emulator's `/metrics` and the long-running worker's metrics port. Record through
`shared.observability`, which loads this module only outside Lambda."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from shared.models import COUNTED_OUTCOMES

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "preview_requests_total", "HTTP requests by route and status", ["route", "status"], registry=REGISTRY
)
FAILURES = Counter(
    "preview_failures_total", "Unexpected failures by component", ["component"], registry=REGISTRY
)
JOB_OUTCOMES = Counter(
    "preview_worker_job_outcomes_total",
    f"Finished job attempts by outcome ({', '.join(COUNTED_OUTCOMES)})",
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

for _outcome in COUNTED_OUTCOMES:
    # Present from the start at 0, so rate() over them is 0 rather than empty for an idle worker.
    JOB_OUTCOMES.labels(outcome=_outcome)
PROMETHEUS_CONTENT_TYPE = CONTENT_TYPE_LATEST


def prometheus_text() -> bytes:
    return generate_latest(REGISTRY)


def exported_metric_names() -> Iterable[str]:
    """Every series name a scrape can show (counters add _total/_created, histograms _bucket...)."""
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            yield sample.name
