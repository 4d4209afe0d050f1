"""Every handler through its fixtures against a real Redis, plus the faults a user meets:
Redis down or hung, a password in REDIS_URL, unexpected errors, bad configuration."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from local.redis_server import RedisServer, free_port
from shared import service, wiring
from tests.conftest import ROOT, load_event
from tests.handlers import EXPECTED, apply_given, body, invoke, invoke_fixture

HTTP_CASES = [k for k in EXPECTED if k.split("/")[0] not in {"render_worker", "health_probe"}]


@pytest.mark.parametrize("case", HTTP_CASES)
def test_fixture_gives_expected_status(case: str, redis_url: str) -> None:
    function, name = case.split("/")
    expected = EXPECTED[case]
    apply_given(expected.get("given", []))
    response = invoke_fixture(function, name)
    assert response["statusCode"] == expected["status"], response["body"]
    assert response["headers"]["Content-Type"] == "application/json"
    document = body(response)
    assert isinstance(document, dict)
    if response["statusCode"] >= 400 and function != "worker_health":
        assert document["error"] and document["message"]


def test_enqueue_response_shape(redis_url: str) -> None:
    response = invoke_fixture("enqueue_job", "success")
    document = body(response)
    assert document["jobId"] == "preview-job-0002" and document["status"] == "queued"
    origin = "https://abc123.execute-api.us-east-1.amazonaws.com"
    assert document["statusUrl"] == f"{origin}/api/preview/job/preview-job-0002/status"
    assert document["artifactUrl"] == f"{origin}/api/preview/job/preview-job-0002/artifact"
    assert response["headers"]["Location"] == document["statusUrl"]


def test_schema_errors_list_every_problem(redis_url: str) -> None:
    document = body(invoke_fixture("enqueue_job", "invalid-payload"))
    paths = {e["path"] for e in document["errors"]}
    assert {"/jobId", "/requestId", "/dryRun", "/priority", "/previewRequest/steps", "/previewRequest/audio"} <= paths
    bad_uris = body(invoke_fixture("enqueue_job", "bad-asset-uri"))
    assert [e["path"] for e in bad_uris["errors"]] == [f"/previewRequest/assets/{i}/uri" for i in range(3)]


def test_status_fields_follow_the_spec(redis_url: str) -> None:
    invoke_fixture("enqueue_job", "success")
    document = body(invoke_fixture("job_status", "success"))
    assert {"jobId", "state", "progress", "attemptsMade", "attemptsMax", "createdAt", "processedOn",
            "finishedOn", "failedReason"} <= set(document)
    assert document["state"] == "waiting" and document["attemptsMax"] == 5
    assert document["createdAt"].endswith("Z")


def test_conflict_and_not_completed_tell_the_state(redis_url: str) -> None:
    invoke_fixture("enqueue_job", "success")
    assert body(invoke_fixture("enqueue_job", "conflict"))["state"] == "waiting"
    assert body(invoke_fixture("job_artifact", "not-completed"))["state"] == "waiting"


def test_queue_full_says_when_to_retry(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREVIEW_QUEUE_MAX", "1")
    wiring.reset()
    assert invoke_fixture("enqueue_job", "minimal")["statusCode"] == 202
    response = invoke_fixture("enqueue_job", "success")
    assert response["statusCode"] == 429
    assert int(response["headers"]["Retry-After"]) >= 1
    assert body(response)["error"] == "queue_full"


def test_metrics_and_health_shapes(redis_url: str) -> None:
    invoke_fixture("enqueue_job", "success")
    metrics = body(invoke_fixture("queue_metrics", "success"))
    assert metrics == {"name": "preview-jobs", "waiting": 1, "active": 0, "completed": 0, "failed": 0,
                       "delayed": 0, "total": 1}
    wiring.services().queue.record_worker("w-1")
    health = invoke_fixture("worker_health", "healthy")
    document = body(health)
    assert health["statusCode"] == 200 and document["status"] == "healthy"
    assert document["redis"] == {"status": "connected", "url": redis_url}
    assert document["queue"]["waiting"] == 1 and document["timestamp"].endswith("Z")


def test_unexpected_error_is_a_500_without_internals(redis_url: str, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    def explode(queue: object, job_id: str) -> None:
        raise RuntimeError("db password is hunter2")

    monkeypatch.setattr(service, "job_status", explode)
    response = invoke_fixture("job_status", "success")
    assert response["statusCode"] == 500
    document = body(response)
    assert document["requestId"] == "Jm5nWhE0IAMEV1Q="
    assert "hunter2" not in response["body"] and "Traceback" not in response["body"]
    # The operator still gets the traceback, in the log.
    assert "hunter2" in capsys.readouterr().out


def test_garbage_event_is_a_500_not_a_crash(redis_url: str) -> None:
    response = invoke("job_status", {"unexpected": True})
    assert response["statusCode"] in (400, 404, 500)
    assert "Traceback" not in response["body"]


# -- Redis faults ------------------------------------------------------------------------


def use_redis(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("REDIS_URL", url)
    wiring.reset()


ALL_ENDPOINTS = [("enqueue_job", "success"), ("job_status", "success"), ("job_artifact", "success"),
                 ("queue_metrics", "success"), ("worker_health", "healthy")]


@pytest.mark.redis
@pytest.mark.parametrize(("function", "case"), ALL_ENDPOINTS)
def test_redis_down_is_a_fast_503(function: str, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    use_redis(monkeypatch, f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    response = invoke_fixture(function, case)
    assert time.monotonic() - started < 2
    assert response["statusCode"] == 503
    document = body(response)
    if function == "worker_health":
        assert document["status"] == "unhealthy" and document["redis"]["status"] == "disconnected"
    else:
        assert "Redis is unreachable" in document["message"]


@pytest.fixture
def hung_redis() -> Iterator[str]:
    """A TCP listener that accepts connections and never answers: a Redis that hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.parametrize(("function", "case"), ALL_ENDPOINTS)
def test_hung_redis_is_a_503_within_2_seconds(function: str, case: str, hung_redis: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    use_redis(monkeypatch, hung_redis)
    started = time.monotonic()
    response = invoke_fixture(function, case)
    assert time.monotonic() - started < 2
    assert response["statusCode"] == 503


@pytest.mark.redis
def test_service_recovers_when_redis_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a service whose Redis goes away and comes back on the same address
    server = RedisServer(tmp_path / "redis").start()
    try:
        use_redis(monkeypatch, server.url)
        assert invoke_fixture("enqueue_job", "minimal")["statusCode"] == 202
        server.kill()
        assert invoke_fixture("enqueue_job", "success")["statusCode"] == 503
        assert invoke_fixture("worker_health", "healthy")["statusCode"] == 503
        server.start()
        # Then the same process serves again without a restart
        assert invoke_fixture("enqueue_job", "success")["statusCode"] == 202
        assert invoke_fixture("queue_metrics", "success")["statusCode"] == 200
    finally:
        server.stop()


@pytest.mark.redis
def test_password_never_appears_in_responses_or_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    secret = "s3cr3t-Pa55word"
    server = RedisServer(tmp_path / "redis", password=secret).start()
    try:
        use_redis(monkeypatch, server.url)
        outputs = [invoke_fixture(f, c) for f, c in ALL_ENDPOINTS]
        outputs.append(invoke_fixture("worker_health", "healthy"))
        health = body(outputs[-1])
        assert health["redis"]["url"] == f"redis://***@127.0.0.1:{server.port}/0"
        # Wrong password and Redis down: the error paths too
        use_redis(monkeypatch, server.url.replace(secret, secret + "-wrong"))
        outputs += [invoke_fixture(f, c) for f, c in ALL_ENDPOINTS]
        server.kill()
        use_redis(monkeypatch, server.url)
        outputs += [invoke_fixture(f, c) for f, c in ALL_ENDPOINTS]
        assert all(o["statusCode"] in (200, 202, 404, 409, 503) for o in outputs), [o["statusCode"] for o in outputs]
        captured = capsys.readouterr()
        assert secret not in json.dumps(outputs)
        assert secret not in captured.out and secret not in captured.err
    finally:
        server.stop()


# -- configuration -----------------------------------------------------------------------


@pytest.mark.process
def test_bad_configuration_stops_start_up_naming_the_variable() -> None:
    env = {"PATH": "/usr/bin:/bin", "PREVIEW_QUEUE_MAX": "abc"}
    result = subprocess.run([sys.executable, "-m", "shared.settings"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "PREVIEW_QUEUE_MAX" in lines[0] and "'abc'" in lines[0]
    # A function's cold start fails the same way.
    probe = "import functions.enqueue_job.app"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert "ConfigError: invalid configuration: PREVIEW_QUEUE_MAX='abc'" in result.stderr


@pytest.mark.process
def test_secret_values_are_not_echoed_in_config_errors() -> None:
    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": "http://user:topsecret@host"}
    result = subprocess.run([sys.executable, "-m", "shared.settings"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "REDIS_URL" in result.stderr and "topsecret" not in result.stderr


@pytest.mark.process
def test_bad_log_level_is_one_config_message_not_a_traceback() -> None:
    env = {"PATH": "/usr/bin:/bin", "LOG_LEVEL": "LOUD"}
    result = subprocess.run([sys.executable, "-m", "functions.render_worker"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "invalid configuration: LOG_LEVEL='LOUD': Value error, must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"]


def test_fixture_loader_resolves_from_any_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_event("enqueue_job", "success")["routeKey"] == "POST /api/preview/job"
