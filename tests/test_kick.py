"""After admission the enqueue handler nudges the render worker with an async invoke."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.stub import Stubber

from shared import wiring
from tests.handlers import invoke_fixture


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
