"""Alert rules are written against metric names the service really exports.

Every expression is parsed by `promql-parser` (a port of Prometheus' own PromQL parser), and
the metric names are read from its syntax tree. `promtool check rules` runs too when it is
installed."""

from __future__ import annotations

import shutil
import subprocess

import promql_parser
import pytest
import yaml

from shared import observability, prometheus_metrics
from tests.conftest import ROOT

RULES = ROOT / "deploy" / "prometheus-alerts.yml"
def rules() -> list[dict]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects; raises ValueError when it is not valid PromQL."""
    names: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), pre_visit=visit)
    return names


def exported() -> set[str]:
    observability.record_job("completed", 1.0)
    observability.record_request("GET /x", 200)
    observability.record_failure("test")
    prometheus_metrics.QUEUE_JOBS.labels(queue="q", state="waiting").set(0)
    observability.record_worker_heartbeat()
    return set(prometheus_metrics.exported_metric_names())


def test_every_rule_names_only_exported_metrics() -> None:
    names = exported()
    for rule in rules():
        used = metric_names(rule["expr"])
        assert used, rule["alert"]
        assert used <= names, (rule["alert"], used - names)
        assert rule["annotations"]["summary"]


def test_the_parser_refuses_broken_promql() -> None:
    for broken in ("sum(rate(preview_requests_total[5m])", "preview_queue_jobs >", "rate(x[5q])"):
        with pytest.raises(ValueError):
            metric_names(broken)
    assert metric_names('max(preview_queue_jobs{state="waiting"}) > 0') == {"preview_queue_jobs"}


def test_rules_cover_failure_rate_backlog_and_heartbeat() -> None:
    alerts = {rule["alert"] for rule in rules()}
    assert {"PreviewJobFailureRateHigh", "PreviewBacklogGrowing", "PreviewNoWorkerHeartbeat"} <= alerts


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
