"""Metrics by their SPEC names, in Prometheus and as CloudWatch EMF inside Lambda."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared import observability, prometheus_metrics, wiring
from shared.errors import ConfigError
from tests.handlers import invoke_fixture
from tests.test_template import load as load_template

ROOT = Path(__file__).resolve().parents[1]


def sample(name: str, **labels: str) -> float:
    value = prometheus_metrics.REGISTRY.get_sample_value(name, labels)
    return value or 0.0


def test_every_request_is_counted_by_route_and_status(redis_url: str) -> None:
    before_ok = sample("preview_requests_total", route="POST /api/preview/job", status="202")
    before_bad = sample("preview_requests_total", route="POST /api/preview/job", status="400")
    invoke_fixture("enqueue_job", "minimal")
    invoke_fixture("enqueue_job", "not-json")
    assert sample("preview_requests_total", route="POST /api/preview/job", status="202") == before_ok + 1
    assert sample("preview_requests_total", route="POST /api/preview/job", status="400") == before_bad + 1


def test_spec_metric_names_are_exported() -> None:
    observability.record_job("completed", 1.5)
    observability.record_failure("render")
    text = prometheus_metrics.prometheus_text().decode()
    for name in ("preview_requests_total", "preview_failures_total", "preview_worker_job_outcomes_total",
                 "preview_worker_job_duration_seconds_bucket", "preview_queue_jobs"):
        assert name in text


def test_emf_lines_inside_lambda(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "enqueue")
    monkeypatch.setenv("AWS_EXECUTION_ENV", "AWS_Lambda_python3.12")
    observability.record_request("POST /api/preview/job", 202)
    observability.record_job("failed", 2.0)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    emf = [line for line in lines if "_aws" in line]
    names = {m["Name"] for line in emf for d in line["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    assert {"preview_requests_total", "preview_worker_job_outcomes_total",
            "preview_worker_job_duration_seconds"} <= names
    request = next(line for line in emf if "preview_requests_total" in line)
    assert request["route"] == "POST /api/preview/job" and request["status"] == "202"
    assert request["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "PreviewService"


@pytest.mark.parametrize(("value", "emf"), [("", True), ("true", True), ("1", True), ("false", False),
                                           ("0", False), ("no", False), ("off", False)])
def test_emf_can_be_turned_off_in_lambda(value: str, emf: bool, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "enqueue")
    monkeypatch.setenv("AWS_EXECUTION_ENV", "AWS_Lambda_python3.12")
    monkeypatch.setenv("PREVIEW_METRICS_EMF", value)
    wiring.services()  # applies the settings, as a function's cold start does
    observability.record_request("GET /x", 200)
    assert ("_aws" in capsys.readouterr().out) is emf


def test_a_bad_emf_switch_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREVIEW_METRICS_EMF", "maybe")
    with pytest.raises(ConfigError, match="PREVIEW_METRICS_EMF='maybe'"):
        wiring.services()


def test_no_emf_outside_lambda(capsys: pytest.CaptureFixture[str]) -> None:
    observability.record_request("GET /x", 200)
    assert "_aws" not in capsys.readouterr().out


def test_logs_carry_request_and_job_ids(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    invoke_fixture("enqueue_job", "success")
    logs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    admitted = next(line for line in logs if line.get("message") == "job admitted")
    assert admitted["jobId"] == "preview-job-0002"
    assert admitted["correlation_id"] == "Jm5nWhE0IAMEV1Q="
    assert admitted["function_name"] == "enqueue_job"


def test_concurrent_invocations_keep_their_own_log_context(redis_url: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    # Given many enqueues at once in one process, as in the emulator (which keeps Powertools'
    # per-request state per thread)
    from concurrent.futures import ThreadPoolExecutor

    from local.isolation import install
    from tests.conftest import load_event
    from tests.handlers import invoke

    assert install()

    def send(n: int) -> None:
        event = load_event("enqueue_job", "minimal")
        event["requestContext"]["requestId"] = f"rid-{n}"
        event["body"] = event["body"].replace("preview-job-0001", f"job-{n}")
        invoke("enqueue_job", event)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, range(16)))
    logs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    admitted = [line for line in logs if line.get("message") == "job admitted"]
    # Then every log line carries the request id of its own request
    assert len(admitted) == 16
    assert all(line["correlation_id"] == "rid-" + line["jobId"].split("-")[1] for line in admitted)


def test_lambda_metrics_leave_as_emf_only(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "enqueue")
    monkeypatch.setenv("AWS_EXECUTION_ENV", "AWS_Lambda_python3.12")
    before = sample("preview_requests_total", route="GET /lambda-only", status="200")
    observability.record_request("GET /lambda-only", 200)
    assert sample("preview_requests_total", route="GET /lambda-only", status="200") == before
    assert "preview_requests_total" in capsys.readouterr().out


@pytest.mark.process
def test_a_lambda_cold_start_never_loads_the_prometheus_client() -> None:
    # In a fresh interpreter with the variables the Lambda runtime sets: import every handler
    # and handle one request each way a metric is recorded, then look at what got loaded.
    code = (
        "import sys\n"
        "from functions.enqueue_job import app as enqueue\n"
        "from functions.job_status import app as status\n"
        "from functions.queue_metrics import app\n"
        "from functions.worker_health import app\n"
        "from functions.job_artifact import app\n"
        "from functions.health_probe import app\n"
        "from functions.render_worker import app\n"
        "from shared import observability\n"
        "observability.record_request('GET /x', 200)\n"
        "observability.record_job('completed', 1.0)\n"
        "observability.record_worker_heartbeat()\n"
        "print(sorted(m for m in sys.modules if m.startswith(('prometheus', 'shared.prometheus'))))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "PREVIEW_"))}
    env.update(AWS_LAMBDA_FUNCTION_NAME="enqueue", AWS_EXECUTION_ENV="AWS_Lambda_python3.12")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"


def _alarm_metrics(template: dict) -> list[tuple[str, str, dict[str, str]]]:
    """(alarm, metric, dimensions) of every alarm on the service's own namespace, parameters
    at their defaults."""
    defaults = {name: spec.get("Default") for name, spec in template["Parameters"].items()}

    def value(v: Any) -> str:
        return str(defaults[v["Ref"]]) if isinstance(v, dict) else str(v)

    found = []
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::CloudWatch::Alarm":
            continue
        props = resource["Properties"]
        stats = [m["MetricStat"]["Metric"] for m in props.get("Metrics", []) if "MetricStat" in m]
        for metric in stats or [props]:
            if metric["Namespace"] == "PreviewService":
                found.append((name, metric["MetricName"], {d["Name"]: value(d["Value"]) for d in metric["Dimensions"]}))
    return found


def test_alarms_watch_metrics_the_functions_emit(redis_url: str, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Each alarm's metric name and dimensions are those of an EMF line the code writes in Lambda
    (a typo or a missing dimension would leave an alarm that never fires)."""
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "preview-probe")
    monkeypatch.setenv("AWS_EXECUTION_ENV", "AWS_Lambda_python3.12")
    wiring.reset()
    capsys.readouterr()
    invoke_fixture("health_probe", "scheduled")
    for outcome in ("completed", "dryrun", "failed", "invalid"):
        observability.record_job(outcome, 1.0)
    emitted = set()
    for line in capsys.readouterr().out.splitlines():
        if not line.startswith("{") or "_aws" not in line:
            continue
        document = json.loads(line)
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for dimensions in directive["Dimensions"]:
                for metric in directive["Metrics"]:
                    emitted.add((directive["Namespace"], metric["Name"],
                                 frozenset((d, document[d]) for d in dimensions)))
    alarms = _alarm_metrics(load_template())
    assert {name for name, *_ in alarms} >= {"JobFailureRateAlarm", "BacklogAlarm", "OldestWaitingJobAlarm",
                                             "NoWorkerHeartbeatAlarm"}
    for name, metric, dimensions in alarms:
        assert ("PreviewService", metric, frozenset(dimensions.items())) in emitted, (name, metric, dimensions)

