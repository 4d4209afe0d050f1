"""POST /api/preview/jobs over HTTP on a real emulator process (`python -m local serve` with the
real template, IAM authorization checked against its local credentials): served from the
template with no code of its own in the emulator, signed like every route, documented in the
OpenAPI document it serves (request body, examples, responses) with its answers as documented,
and the backlog limit held exactly when batches race over real connections."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from local.openapi import response_problems
from tests.client.conftest import KEY, REGION, SECRET, start_emulator
from tests.conftest import load_event
from tests.emulator.conftest import Emulator
from tests.sigv4 import SigV4

pytestmark = pytest.mark.process

LIMIT = 20


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """Signed routes; no worker, no schedules and no kick, so admitted jobs stay waiting."""
    emulator = start_emulator(tmp_path_factory.mktemp("batch"), ["--no-worker", "--no-schedules"],
                              AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET, AWS_REGION=REGION,
                              PREVIEW_QUEUE_MAX=str(LIMIT), RENDER_WORKER_FUNCTION="")
    yield emulator
    emulator.stop()


@pytest.fixture
def client(emulator: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.url, timeout=30, auth=SigV4(KEY, SECRET, region=REGION)) as client:
        yield client


def clear(client: httpx.Client) -> None:
    """Cancel every waiting job (the operator route), so each test starts with an empty backlog."""
    while jobs := client.get("/api/preview/jobs", params={"limit": "100"}).json()["jobs"]:
        for job in jobs:
            assert client.post(f"/api/preview/job/{job['jobId']}/cancel").status_code == 200


def job(job_id: str, title: str = "Fold") -> dict[str, Any]:
    return {"jobId": job_id, "projectId": "proj-http", "requestId": f"req-{job_id}", "dryRun": True,
            "previewRequest": {"title": title, "steps": [], "assets": [], "audio": {}}}


def test_the_route_is_served_from_the_template_and_signed(emulator: Emulator, client: httpx.Client) -> None:
    assert "POST /api/preview/jobs" in emulator.stderr and "EnqueueJobsFunction" in emulator.stderr
    body = {"jobs": [job("http-unsigned")]}
    unsigned = httpx.post(f"{emulator.url}/api/preview/jobs", json=body, timeout=30)
    assert unsigned.status_code == 403
    wrong = httpx.post(f"{emulator.url}/api/preview/jobs", json=body, timeout=30,
                       auth=SigV4(KEY, "not-the-secret", region=REGION))
    assert wrong.status_code == 403
    # The GET on the same path is still the listing
    assert client.get("/api/preview/jobs").json()["state"] == "waiting"


def test_a_mixed_batch_is_answered_item_by_item_as_the_served_document_says(client: httpx.Client,
                                                                           emulator: Emulator) -> None:
    clear(client)
    document = client.get("/openapi.json").json()
    operation = document["paths"]["/api/preview/jobs"]["post"]
    media = operation["requestBody"]["content"]["application/json"]
    assert media["schema"] == {"$ref": "#/components/schemas/JobBatch"}
    assert "success" in media["examples"]
    assert {"200", "400", "413", "500", "503"} <= set(operation["responses"])
    # Given the success job admitted alone
    single = json.loads(load_event("enqueue_job", "success")["body"])
    assert client.post("/api/preview/job", json=single).status_code == 202
    # When the mixed fixture's batch is sent (new, invalid, conflicting, replayed, repeated)
    raw = load_event("enqueue_jobs", "mixed")["body"]
    response = client.post("/api/preview/jobs", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert response_problems(document, "POST", "/api/preview/jobs", 200, response.json()) == []
    results = response.json()["results"]
    assert [item["status"] for item in results] == [202, 400, 409, 200, 200]
    # Each item's body is the single route's for its status, its URLs on the emulator's origin
    for item in results:
        assert response_problems(document, "POST", "/api/preview/job", item["status"], item["body"],
                                 headers=lambda name: "1") == [], item
    assert results[0]["body"]["statusUrl"] == f"{emulator.url}/api/preview/job/batch-job-0001/status"
    assert client.get(results[0]["body"]["statusUrl"]).json()["state"] == "waiting"
    # A malformed envelope is one 400
    refused = client.post("/api/preview/jobs", json={"jobs": []})
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_request"
    assert response_problems(document, "POST", "/api/preview/jobs", 400, refused.json()) == []


def test_racing_batches_over_http_admit_exactly_the_backlog_limit(client: httpx.Client, emulator: Emulator) -> None:
    for round_ in range(3):
        clear(client)
        start = threading.Barrier(2)
        answers: dict[int, list[int]] = {}

        def send(side: int, round_: int = round_, start: threading.Barrier = start,
                 answers: dict[int, list[int]] = answers) -> None:
            with httpx.Client(base_url=emulator.url, timeout=30, auth=SigV4(KEY, SECRET, region=REGION)) as own:
                body = {"jobs": [job(f"race-{round_}-{side}-{n}") for n in range(15)]}
                start.wait()
                response = own.post("/api/preview/jobs", json=body)
                assert response.status_code == 200, response.text
                answers[side] = [item["status"] for item in response.json()["results"]]

        threads = [threading.Thread(target=send, args=(side,)) for side in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        statuses = answers[0] + answers[1]
        assert (statuses.count(202), statuses.count(429)) == (LIMIT, 30 - LIMIT), answers
        assert client.get("/api/preview/queue/metrics").json()["waiting"] == LIMIT
    clear(client)


def test_the_body_limit_applies_to_the_whole_batch(tmp_path: Path) -> None:
    emulator = start_emulator(tmp_path, ["--no-worker", "--no-schedules"], AWS_ACCESS_KEY_ID=KEY,
                              AWS_SECRET_ACCESS_KEY=SECRET, AWS_REGION=REGION, PREVIEW_MAX_BODY_BYTES="4096",
                              RENDER_WORKER_FUNCTION="")
    try:
        with httpx.Client(base_url=emulator.url, timeout=30, auth=SigV4(KEY, SECRET, region=REGION)) as client:
            jobs = [job(f"limit-{n}", title="x" * 200) for n in range(20)]
            response = client.post("/api/preview/jobs", json={"jobs": jobs})
            assert (response.status_code, response.json()["limit"]) == (413, 4096)
            assert client.get("/api/preview/queue/metrics").json()["waiting"] == 0
    finally:
        emulator.stop()
