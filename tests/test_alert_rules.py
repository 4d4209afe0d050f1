"""Alert rules are written against metric names the service really exports.

Uses `promtool check rules` when it is installed; the name check runs everywhere."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from shared import observability, prometheus_metrics
from tests.conftest import ROOT

RULES = ROOT / "deploy" / "prometheus-alerts.yml"
PROMQL_WORDS = {
    "sum", "rate", "increase", "max", "min", "avg", "count", "by", "without", "and", "or", "unless", "on",
    "ignoring", "clamp_min", "clamp_max", "histogram_quantile", "le", "bool", "offset", "irate", "abs",
    "time", "absent",
}


def rules() -> list[dict]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    without_labels = re.sub(r"\{[^}]*\}", "", expr)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_labels)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_ranges))
    return {w for w in words if w not in PROMQL_WORDS and not re.fullmatch(r"e\d*", w)}


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


def test_rules_cover_failure_rate_backlog_and_heartbeat() -> None:
    alerts = {rule["alert"] for rule in rules()}
    assert {"PreviewJobFailureRateHigh", "PreviewBacklogGrowing", "PreviewNoWorkerHeartbeat"} <= alerts


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
