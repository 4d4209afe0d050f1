"""After admission the enqueue handler nudges the render worker with an async invoke; the batch
route kicks its new jobs together, a few at once, each as the single route would."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.stub import Stubber

from shared import prometheus_metrics, wiring
from shared.kick import MAX_KICK_THREADS
from tests.conftest import load_event
from tests.handlers import body, invoke, invoke_fixture


@pytest.fixture
def worker_function(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("RENDER_WORKER_FUNCTION", "preview-RenderWorkerFunction-ABC")
    wiring.reset()
    yield "preview-RenderWorkerFunction-ABC"


def test_admission_sends_one_async_invoke(redis_url: str, worker_function: str) -> None:
    client = wiring.services().kick.lambda_client
    with Stubber(client) as stub:
        stub.add_response(
            "invoke", {"StatusCode": 202},
            {"FunctionName": worker_function, "InvocationType": "Event",
             "Payload": json.dumps({"source": "preview.enqueue", "detail-type": "job-admitted",
                                    "detail": {"jobId": "preview-job-0002"}}).encode()},
        )
        assert invoke_fixture("enqueue_job", "success")["statusCode"] == 202
        # A replay admits nothing, so it does not kick again (the stub would fail on a second call).
        assert invoke_fixture("enqueue_job", "duplicate")["statusCode"] == 200
        stub.assert_no_pending_responses()


def test_failed_kick_does_not_fail_the_request(redis_url: str, worker_function: str) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    def broken(function: str, event: dict[str, Any]) -> None:
        calls.append((function, event))
        raise ConnectionError("lambda endpoint unreachable")

    wiring.start(invoker=broken)
    assert invoke_fixture("enqueue_job", "success")["statusCode"] == 202
    assert calls == [(worker_function, {"source": "preview.enqueue", "detail-type": "job-admitted",
                                        "detail": {"jobId": "preview-job-0002"}})]


def test_no_kick_without_a_function_name(redis_url: str) -> None:
    calls: list[str] = []
    wiring.start(invoker=lambda function, event: calls.append(function))
    assert invoke_fixture("enqueue_job", "success")["statusCode"] == 202
    assert calls == []


# -- a batch's kicks, sent together ------------------------------------------------------------

def batch_event(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    event = copy.deepcopy(load_event("enqueue_jobs", "success"))
    event["body"] = json.dumps({"jobs": jobs})
    return event


def job(job_id: str) -> dict[str, Any]:
    return {"jobId": job_id, "projectId": "proj-kick", "requestId": f"req-{job_id}", "dryRun": True,
            "previewRequest": {"title": "Kick", "steps": [], "assets": [], "audio": {}}}


def admitted_event(job_id: str) -> dict[str, Any]:
    return {"source": "preview.enqueue", "detail-type": "job-admitted", "detail": {"jobId": job_id}}


def kick_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("worker-kick")]


def kick_failures() -> float:
    return prometheus_metrics.REGISTRY.get_sample_value("preview_failures_total", {"component": "kick"}) or 0


def test_a_batch_kicks_its_new_jobs_at_once(redis_url: str, worker_function: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREVIEW_QUEUE_MAX", "100")
    lock = threading.Lock()
    calls: list[tuple[str, dict[str, Any], int]] = []
    in_flight, peak = 0, 0
    # The first MAX_KICK_THREADS kicks wait for each other: they pass only if that many are in
    # flight together (kicks sent one after another break the barrier at its timeout instead).
    together = threading.Barrier(MAX_KICK_THREADS, timeout=10)

    def invoker(function: str, event: dict[str, Any]) -> None:
        nonlocal in_flight, peak
        with lock:
            calls.append((function, event, threading.get_ident()))
            first_round = len(calls) <= MAX_KICK_THREADS
            in_flight += 1
            peak = max(peak, in_flight)
        try:
            if first_round:
                together.wait()
        finally:
            with lock:
                in_flight -= 1

    wiring.start(invoker=invoker)
    new = [f"kick-{n:02d}" for n in range(30)]
    # Given 30 new jobs and 5 of them again (a jobId given twice in a batch is a replay)
    response = invoke("enqueue_jobs", batch_event([job(job_id) for job_id in new + new[:5]]))
    assert [item["status"] for item in body(response)["results"]] == [202] * 30 + [200] * 5
    # Then every new job was kicked exactly once with its event, the replays not at all
    assert sorted(event["detail"]["jobId"] for _, event, _ in calls) == new
    assert all(function == worker_function and event == admitted_event(event["detail"]["jobId"])
               for function, event, _ in calls)
    # with as many kicks in flight as the cap allows and never more, on threads of their own
    assert not together.broken and peak == MAX_KICK_THREADS
    assert threading.get_ident() not in {ident for _, _, ident in calls}
    # all sent before the handler answered, and no kick thread left behind
    assert kick_threads() == []


def test_failed_kicks_in_a_batch_are_each_counted_and_logged(redis_url: str, worker_function: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    new = [f"flaky-{n:02d}" for n in range(12)]
    failing = set(new[::3])
    kicked: list[str] = []

    def flaky(function: str, event: dict[str, Any]) -> None:
        job_id = event["detail"]["jobId"]
        kicked.append(job_id)
        if job_id in failing:
            raise ConnectionError("lambda endpoint unreachable")

    wiring.start(invoker=flaky)
    before = kick_failures()
    capsys.readouterr()
    event = batch_event([job(job_id) for job_id in new])
    response = invoke("enqueue_jobs", event)
    # The answers are those of a batch whose kicks all went out
    assert response["statusCode"] == 200
    assert [(item["status"], item["body"]["jobId"]) for item in body(response)["results"]] == [(202, j) for j in new]
    # Every job was still kicked, and each failure counted and logged with its jobId (and the
    # request's log keys, though logged on a kick thread)
    assert sorted(kicked) == new
    assert kick_failures() == before + len(failing)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    warnings = [line for line in lines if line.get("level") == "WARNING"]
    assert sorted(line["jobId"] for line in warnings) == sorted(failing)
    assert all(line["message"] == "worker kick failed; the schedule will pick the job up"
               and line.get("correlation_id") == event["requestContext"]["requestId"] for line in warnings)


def test_a_batch_of_one_kicks_on_the_calling_thread(redis_url: str, worker_function: str) -> None:
    threads: list[int] = []
    wiring.start(invoker=lambda function, event: threads.append(threading.get_ident()))
    response = invoke("enqueue_jobs", batch_event([job("alone")]))
    assert [item["status"] for item in body(response)["results"]] == [202]
    assert threads == [threading.get_ident()]


def test_no_batch_kicks_without_a_function_name(redis_url: str) -> None:
    calls: list[str] = []
    wiring.start(invoker=lambda function, event: calls.append(function))
    response = invoke("enqueue_jobs", batch_event([job("quiet-1"), job("quiet-2")]))
    assert [item["status"] for item in body(response)["results"]] == [202, 202]
    assert calls == []
