"""The emulator's pure parts without a server: template reading, environment layering,
schedule expressions."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from local.environment import EnvFile, function_environment, shared_environment, worker_function
from local.errors import TemplateError
from local.schedules import Cron, Rate, ScheduleError, parse_expression
from local.template import load_template
from tests.conftest import ROOT

pytestmark = pytest.mark.usefixtures("no_sockets")

TEMPLATE = ROOT / "template.yaml"


def test_real_template_functions_routes_and_schedules() -> None:
    template = load_template(TEMPLATE)
    assert {r.route_key: r.function for r in template.routes()} == {
        "POST /api/preview/job": "EnqueueJobFunction",
        "POST /api/preview/jobs": "EnqueueJobsFunction",
        "GET /api/preview/job/{jobId}/status": "JobStatusFunction",
        "GET /api/preview/job/{jobId}/artifact": "JobArtifactFunction",
        "GET /api/preview/queue/metrics": "QueueMetricsFunction",
        "GET /api/preview/worker/health": "WorkerHealthFunction",
        "GET /api/preview/jobs": "ListJobsFunction",
        "GET /api/preview/job/{jobId}": "JobDetailFunction",
        "POST /api/preview/job/{jobId}/retry": "RetryJobFunction",
        "POST /api/preview/job/{jobId}/cancel": "CancelJobFunction",
    }
    assert {s.key: s.expression for s in template.schedules()} == {
        "RenderWorkerFunction.Every1Minute": "rate(1 minute)",
        "HealthProbeFunction.Every5Minutes": "rate(5 minutes)",
    }
    worker = template.find("render_worker")
    assert worker is not None and worker.logical_id == "RenderWorkerFunction"
    assert (worker.handler, worker.timeout, worker.memory) == ("functions.render_worker.app.handler", 900, 2048)
    enqueue = template.functions["EnqueueJobFunction"]
    assert (enqueue.timeout, enqueue.memory) == (10, 512)  # from Globals
    assert enqueue.source_file == ROOT / "functions" / "enqueue_job" / "app.py"


def test_real_template_environment() -> None:
    template = load_template(TEMPLATE)
    shell = {"DATA_DIR": "/srv/preview"}
    env = function_environment(template, template.functions["EnqueueJobFunction"], EnvFile({}, {}), shell)
    assert env["RENDER_WORKER_FUNCTION"] == "RenderWorkerFunction"  # !Ref of a function: its name
    assert env["ARTIFACT_BUCKET"] == ""  # !Ref of a bucket: the local store
    assert env["REDIS_URL"] == ""  # a parameter without default: not configured
    assert env["DATA_DIR"] == "/srv/preview"  # the Lambda /tmp path maps to the local data folder
    assert env["PREVIEW_QUEUE_NAME"] == "preview-jobs" and env["AWS_REGION"] == "us-east-1"
    shared = shared_environment(template, EnvFile({}, {}), {})
    assert shared.warnings == ()  # every function agrees; one process can serve them all
    assert shared.values["DATA_DIR"] == str(Path("./data").resolve())
    worker = worker_function(template, shared.by_function)
    assert worker is not None and worker.logical_id == "RenderWorkerFunction"


def test_env_file_function_section_that_disagrees_is_reported() -> None:
    template = load_template(TEMPLATE)
    files = EnvFile({"LOG_LEVEL": "DEBUG"}, {"JobStatusFunction": {"PREVIEW_QUEUE_MAX": "5"}})
    shared = shared_environment(template, files, {})
    assert shared.values["LOG_LEVEL"] == "DEBUG" and shared.values["PREVIEW_QUEUE_MAX"] == "5"
    (warning,) = shared.warnings
    assert warning.startswith("PREVIEW_QUEUE_MAX differs between functions") and "shared.settings" in warning


def test_parameter_overrides_are_checked() -> None:
    template = load_template(TEMPLATE, parameter_overrides={"QueueMax": "7", "LogLevel": "DEBUG"})
    assert template.functions["JobStatusFunction"].environment["PREVIEW_QUEUE_MAX"] == "7"
    with pytest.raises(TemplateError, match="QueueMax='0' must be at least 1"):
        load_template(TEMPLATE, parameter_overrides={"QueueMax": "0"})
    with pytest.raises(TemplateError, match="LogLevel='LOUD' must be one of DEBUG, INFO, WARNING, ERROR"):
        load_template(TEMPLATE, parameter_overrides={"LogLevel": "LOUD"})
    with pytest.raises(TemplateError, match="unknown parameter Nope"):
        load_template(TEMPLATE, parameter_overrides={"Nope": "1"})


def test_globals_merge_the_sam_way(tmp_path: Path) -> None:
    path = tmp_path / "template.yaml"
    path.write_text(f"""
Globals:
  Function:
    Runtime: python3.12
    CodeUri: {ROOT}
    Timeout: 7
    Environment:
      Variables: {{A: global, B: global}}
Resources:
  One:
    Type: AWS::Serverless::Function
    Properties:
      Handler: tests.emulator.apps.echo
      Timeout: 9
      Environment:
        Variables: {{B: own, C: !Sub "${{AWS::StackName}}-${{AWS::AccountId}}"}}
""")
    one = load_template(path).functions["One"]
    assert one.timeout == 9
    assert dict(one.environment) == {"A": "global", "B": "own", "C": "local-123456789012"}


@pytest.mark.parametrize(("expression", "seconds"), [
    ("rate(1 minute)", 60), ("rate(5 minutes)", 300), ("rate(2 hours)", 7200), ("rate(1 day)", 86_400),
])
def test_rates(expression: str, seconds: int) -> None:
    assert parse_expression(expression) == Rate(seconds)


def _next(expression: str, after: str) -> str | None:
    cron = parse_expression(expression)
    assert isinstance(cron, Cron)
    found = cron.next_after(datetime.fromisoformat(after).replace(tzinfo=UTC))
    return found.strftime("%Y-%m-%d %H:%M %a") if found else None


@pytest.mark.parametrize(("expression", "after", "expected"), [
    ("cron(0 12 * * ? *)", "2026-11-28 11:59", "2026-11-28 12:00 Sat"),
    ("cron(0 12 * * ? *)", "2026-11-28 12:00", "2026-11-29 12:00 Sun"),
    ("cron(0/15 * ? * MON-FRI *)", "2026-11-28 10:00", "2026-11-30 00:00 Mon"),
    ("cron(10,40 8-9 ? * 2 *)", "2026-11-30 08:41", "2026-11-30 09:10 Mon"),
    ("cron(30 8 1 JAN,JUL ? 2027)", "2026-11-28 00:00", "2027-01-01 08:30 Fri"),
    ("cron(0 0 29 2 ? *)", "2026-03-01 00:00", "2028-02-29 00:00 Tue"),
    ("cron(0 0 1 1 ? 1999)", "2026-01-01 00:00", None),
])
def test_cron_next_fire(expression: str, after: str, expected: str | None) -> None:
    assert _next(expression, after) == expected


@pytest.mark.parametrize(("expression", "message"), [
    ("rate(1 minutes)", "use '1 minute'"),
    ("rate(5 minute)", "use '5 minutes'"),
    ("rate(0 minutes)", "must be positive"),
    ("rate(1 week)", "neither rate"),
    ("cron(0 12 * * *)", "6 fields"),
    ("cron(0 12 * * * *)", "exactly one of day-of-month and day-of-week"),
    ("cron(0 12 ? * ? *)", "exactly one of day-of-month and day-of-week"),
    ("cron(0 12 L * ? *)", "'L' is valid in EventBridge but not supported"),
    ("cron(0 12 15W * ? *)", "'W' is valid in EventBridge but not supported"),
    ("cron(0 12 ? * 6#3 *)", "'#' is valid in EventBridge but not supported"),
    ("cron(61 12 * * ? *)", "61 is outside 0-59"),
    ("cron(0 12 10-2 * ? *)", "runs backwards"),
])
def test_refused_expressions(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse_expression(expression)


def test_template_reader_needs_no_linter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`pip install '.[local]'` has no cfn-lint: the emulator reads the template with PyYAML, the
    short intrinsic tags in their long form."""
    import sys

    from local.template import read_document

    monkeypatch.setitem(sys.modules, "cfnlint", None)  # any import of it now fails
    path = tmp_path / "t.yaml"
    path.write_text(
        "Resources:\n"
        "  F:\n"
        "    Properties:\n"
        "      A: !Ref P\n"
        "      B: !GetAtt Bucket.Arn\n"
        "      C: !Sub ['${X}-1', {X: !Ref AWS::Region}]\n"
        "      D: !If [Cond, !Join [',', [a, b]], !Ref AWS::NoValue]\n"
        "      E: !Condition Cond\n",
        encoding="utf-8")
    assert read_document(path)["Resources"]["F"]["Properties"] == {
        "A": {"Ref": "P"},
        "B": {"Fn::GetAtt": ["Bucket", "Arn"]},
        "C": {"Fn::Sub": ["${X}-1", {"X": {"Ref": "AWS::Region"}}]},
        "D": {"Fn::If": ["Cond", {"Fn::Join": [",", ["a", "b"]]}, {"Ref": "AWS::NoValue"}]},
        "E": {"Condition": "Cond"},
    }
    assert load_template(TEMPLATE).functions  # the real template too


def test_template_reader_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("Resources:\n  F: {Type: A}\n  F: {Type: B}\n", encoding="utf-8")
    with pytest.raises(TemplateError, match=r"t.yaml:3: invalid template: duplicate key 'F'"):
        load_template(path)
    path.write_text("Resources:\n  F: [\n", encoding="utf-8")
    with pytest.raises(TemplateError, match=r"t.yaml:\d+: invalid template: "):
        load_template(path)


def test_access_lines_show_an_artifact_links_path_not_its_signature() -> None:
    import io
    import logging.config

    from local.launch import log_config

    config = log_config(access_log=True)
    stream = io.StringIO()
    config["handlers"]["access"]["stream"] = stream  # type: ignore[index]
    names = ("uvicorn", "uvicorn.error", "uvicorn.access")
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).level,
                    logging.getLogger(name).propagate) for name in names}
    logging.config.dictConfig(config)
    try:
        access = logging.getLogger("uvicorn.access")
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET",
                    "/artifacts/previews/j/preview.mp4?expires=99&sig=abcdef", "1.1", 200)
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", "/api/preview/queue/metrics?x=1", "1.1", 200)
    finally:
        for name, (handlers, level, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate
    text = stream.getvalue()
    assert "GET /artifacts/previews/j/preview.mp4 HTTP/1.1" in text and "sig=" not in text and "expires" not in text
    assert "/api/preview/queue/metrics?x=1" in text


@pytest.mark.parametrize("given", [
    ["QueueMax=5", "LogLevel=DEBUG"],
    ["QueueMax=5 LogLevel=DEBUG"],
    ["ParameterKey=QueueMax,ParameterValue=5", "ParameterKey=LogLevel,ParameterValue=DEBUG"],
    ["ParameterKey=QueueMax,ParameterValue=5 LogLevel=DEBUG"],
])
def test_parameter_overrides_in_sams_forms(given: list[str]) -> None:
    from local.samconfig import parse_overrides

    assert parse_overrides(given) == {"QueueMax": "5", "LogLevel": "DEBUG"}


def test_parameter_override_values_keep_quotes_commas_and_equals() -> None:
    from local.samconfig import parse_overrides

    assert parse_overrides(['AssetBuckets=a,b Title="two words" Url=redis://h:1/0?x=y']) == {
        "AssetBuckets": "a,b", "Title": "two words", "Url": "redis://h:1/0?x=y"}
    from local.errors import StartupError

    with pytest.raises(StartupError, match="expected Name=Value"):
        parse_overrides(["QueueMax"])


def test_samconfig_parameters_and_env_vars(tmp_path: Path) -> None:
    from local.samconfig import settings

    template = tmp_path / "template.yaml"
    (tmp_path / "samconfig.toml").write_text(
        'version = 0.1\n'
        '[default.global.parameters]\nparameter_overrides = "QueueMax=7 LogLevel=DEBUG"\n'
        '[default.local_start_api.parameters]\nenv_vars = "env.json"\nparameter_overrides = ["QueueMax=9"]\n'
        '[dev.local_start_api.parameters]\nparameter_overrides = "QueueMax=3"\n', encoding="utf-8")
    overrides, env_vars = settings(template, "local_start_api", "default", ["LogLevel=ERROR"], None)
    assert overrides == {"QueueMax": "9", "LogLevel": "ERROR"}  # the command's table, then the command line
    assert env_vars == tmp_path / "env.json"
    assert settings(template, "local_invoke", "default", None, None) == ({"QueueMax": "7", "LogLevel": "DEBUG"},
                                                                       None)
    assert settings(template, "local_start_api", "dev", None, Path("mine.json"))[0] == {"QueueMax": "3"}
    assert settings(tmp_path / "elsewhere" / "t.yaml", "local_start_api", "default", None, None) == ({}, None)
