"""`python -m local invoke` on every fixture under events/: the status (or summary) that
events/expected.json promises, with its `given` steps replayed through invoke as well."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest

from local import invoke
from local.errors import StartupError
from local.template import load_template
from tests.conftest import EVENTS, ROOT, load_event
from tests.emulator.conftest import child_env, run_local, write_template
from tests.handlers import EXPECTED, dead_letter, fill_queue

TEMPLATE = ROOT / "template.yaml"


def call(function: str, event: Any, tmp_path: Path) -> tuple[int, Any]:
    """Invoke in this process (the CLI's own code path), the event passed through a file."""
    event_file = tmp_path / f"event-{function}.json"
    event_file.write_text(json.dumps(event))
    out = io.StringIO()
    code = invoke.run(invoke.InvokeArgs(function=function, event=str(event_file), template=TEMPLATE), stdout=out)
    return code, json.loads(out.getvalue())


def status_event(job_id: str) -> dict[str, Any]:
    event = copy.deepcopy(load_event("job_status", "success"))
    event["pathParameters"] = {"jobId": job_id}
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/api/preview/job/{job_id}/status"
    return event


def given(steps: list[str], tmp_path: Path, redis_url: str) -> None:
    for step in steps:
        kind, _, arg = step.partition(":")
        if kind == "enqueue":
            code, result = call("enqueue_job", load_event("enqueue_job", arg), tmp_path)
            assert (code, result["statusCode"]) == (0, 202), result
        elif kind == "fill-queue":
            # Up to the limit the template gives the function.
            limit = load_template(TEMPLATE).find("enqueue_job").environment["PREVIEW_QUEUE_MAX"]  # type: ignore[union-attr]
            fill_queue(redis_url, int(limit))
        elif kind in ("worker-heartbeat", "render"):
            # One scheduled run of the render worker records its heartbeat and drains the queue.
            code, result = call("RenderWorkerFunction", load_event("render_worker", "scheduled"), tmp_path)
            assert code == 0, result
            if kind == "render":
                code, status = call("JobStatusFunction", status_event(arg), tmp_path)
                assert json.loads(status["body"])["state"] == "completed", status
        elif kind == "dead-letter":
            dead_letter(arg)  # claimed and failed for good on the same Redis, as a worker would
        else:
            raise AssertionError(f"unknown given step {step!r}")


CASES = sorted(str(p.relative_to(EVENTS).with_suffix("")) for p in EVENTS.glob("*/*.json"))


def test_every_fixture_has_an_expectation() -> None:
    assert set(CASES) == set(EXPECTED)


@pytest.mark.parametrize("case", CASES)
def test_fixture_gives_expected_result(case: str, redis_url: str, tmp_path: Path) -> None:
    folder, name = case.split("/")
    expected = EXPECTED[case]
    given(expected.get("given", []), tmp_path, redis_url)
    # Both names of a function work: the logical id, or the folder
    spec = load_template(TEMPLATE).find(folder)
    assert spec is not None
    function = spec.logical_id if len(name) % 2 else folder
    code, result = call(function, load_event(folder, name), tmp_path)
    assert code == 0, result
    if "status" in expected:
        assert result["statusCode"] == expected["status"], result
    for key, value in expected.get("expect", {}).items():
        assert result[key] == value, result


def test_invoke_leaves_the_environment_as_it_was(redis_url: str, tmp_path: Path) -> None:
    import os

    before = dict(os.environ)
    call("queue_metrics", load_event("queue_metrics", "success"), tmp_path)
    assert dict(os.environ) == before


def test_unknown_function_is_a_startup_error(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="no function 'nope'.*EnqueueJobFunction \\(enqueue_job\\)"):
        call("nope", {}, tmp_path)


@pytest.mark.slow
@pytest.mark.process
def test_cli_reads_stdin_prints_only_json_and_logs_to_stderr(tmp_path: Path) -> None:
    # No REDIS_URL: invoke starts the data folder's embedded Redis for the call
    body = load_event("enqueue_job", "minimal")
    result = run_local(["invoke", "enqueue_job", "--event", "-", "--data-dir", str(tmp_path / "data")],
                       child_env(), stdin=json.dumps(body))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["statusCode"] == 202
    assert "job admitted" in result.stderr  # the function's log line went to stderr
    # A second invoke on the same data folder sees the job: the embedded Redis persisted it
    again = run_local(["invoke", "EnqueueJobFunction", "--event", "-", "--data-dir", str(tmp_path / "data")],
                      child_env(), stdin=json.dumps(body))
    assert json.loads(again.stdout)["statusCode"] == 200, again.stderr


@pytest.mark.slow
@pytest.mark.process
def test_cli_exits_1_with_lambda_error_when_the_handler_raises(tmp_path: Path) -> None:
    template = write_template(tmp_path, """\
Resources:
  BoomFunction:
    Type: AWS::Serverless::Function
    Properties:
      Handler: tests.emulator.apps.boom
      Runtime: python3.12
      CodeUri: @ROOT@
""")
    result = run_local(["invoke", "BoomFunction", "--template", str(template), "--data-dir", str(tmp_path / "d")],
                       child_env(REDIS_URL="redis://127.0.0.1:1/0"))
    assert result.returncode == 1
    error = json.loads(result.stdout)
    assert error["errorType"] == "RuntimeError" and "secret internal detail" in error["errorMessage"]
    assert "Traceback" in result.stderr
