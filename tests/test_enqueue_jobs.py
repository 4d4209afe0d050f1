"""POST /api/preview/jobs through its handler, as Lambda calls it, on a real Redis: each job of a
batch answered exactly as POST /api/preview/job answers it alone (status and body), the
envelope refused whole before anything is admitted, the body limit, kicks and log lines as
the single route gives them, a batch sent again answered with replays, and the backlog limit
holding exactly when batches race."""

from __future__ import annotations

import copy
import json
import threading
from typing import Any

import pytest
import redis

from local.openapi import build_openapi, response_problems
from local.template import load_template
from shared import service, wiring
from shared.queue import JobQueue
from shared.settings import Settings
from tests.conftest import ROOT, load_event
from tests.handlers import EXPECTED, apply_given, body, invoke, invoke_fixture

BATCH_CASES = [case for case in EXPECTED if case.startswith("enqueue_jobs/")]


def job(job_id: str, title: str = "Fold") -> dict[str, Any]:
    return {"jobId": job_id, "projectId": "proj-batch", "requestId": f"req-{job_id}", "dryRun": True,
            "previewRequest": {"title": title, "steps": [], "assets": [], "audio": {}}}


def single_event(document: Any) -> dict[str, Any]:
    event = copy.deepcopy(load_event("enqueue_job", "success"))
    event["body"] = json.dumps(document)
    return event


def batch_event(jobs: Any, **extra: Any) -> dict[str, Any]:
    event = copy.deepcopy(load_event("enqueue_jobs", "success"))
    event["body"] = json.dumps({"jobs": jobs, **extra}) if not isinstance(jobs, str) else jobs
    return event


def answer(response: dict[str, Any]) -> tuple[int, Any]:
    return response["statusCode"], body(response)


def waiting() -> int:
    """The jobs waiting, as GET /api/preview/queue/metrics counts them."""
    return int(body(invoke_fixture("queue_metrics", "success"))["waiting"])


# -- the fixtures ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", BATCH_CASES)
def test_each_fixture_answers_its_items_as_expected(case: str, redis_url: str) -> None:
    expected = EXPECTED[case]
    apply_given(expected.get("given", []))
    status, document = answer(invoke_fixture("enqueue_jobs", case.split("/")[1]))
    assert status == expected["status"], document
    if "results" not in expected:
        assert status == 400 and document["error"] == "invalid_request" and document["message"]
        return
    assert [item["status"] for item in document["results"]] == expected["results"]
    # Each item's body is what the single route documents for that status (its headers are
    # in the body: a 202's Location is its statusUrl, a 429's Retry-After its retryAfter).
    openapi = build_openapi(load_template(ROOT / "template.yaml"))
    for item in document["results"]:
        problems = response_problems(openapi, "POST", "/api/preview/job", item["status"], item["body"],
                                     headers=lambda name: "1")
        assert problems == [], item
        if item["status"] == 429:
            assert item["body"]["retryAfter"] >= 1


def test_the_limit_is_the_documented_one() -> None:
    responses = json.loads((ROOT / "schemas" / "responses.schema.json").read_text())
    jobs = responses["$defs"]["JobBatch"]["properties"]["jobs"]
    assert (jobs["minItems"], jobs["maxItems"]) == (1, service.MAX_BATCH)
    assert responses["$defs"]["BatchResults"]["properties"]["results"]["maxItems"] == service.MAX_BATCH
    too_many = json.loads(load_event("enqueue_jobs", "too-many")["body"])["jobs"]
    assert len(too_many) == service.MAX_BATCH + 1


# -- each job as if alone ------------------------------------------------------------------------


def mixed_documents() -> list[Any]:
    invalid = job("bad-1")
    del invalid["previewRequest"]["steps"]
    return [
        job("a"),
        invalid,
        job("b"),
        job("a"),                      # an identical replay of the first
        job("b", title="Other"),       # the same jobId, another payload: a conflict
        "not an object",
        ["nor", "this"],
        {**job("c"), "unknown": 1},    # a key the contract does not have
        job("c"),
        job("d"),                      # past PREVIEW_QUEUE_MAX=3: 429
        job("c"),                      # a replay still answers, the queue full or not
    ]


def test_each_job_is_answered_as_the_single_route_answers_it(redis_url: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREVIEW_QUEUE_MAX", "3")
    wiring.reset()
    # Given what the single route answers for each document, one request each
    alone = [answer(invoke("enqueue_job", single_event(document))) for document in mixed_documents()]
    assert [status for status, _ in alone] == [202, 400, 202, 200, 409, 400, 400, 400, 202, 429, 200]
    redis.Redis.from_url(redis_url).flushall()
    # When the same documents come in one batch
    status, document = answer(invoke("enqueue_jobs", batch_event(mixed_documents())))
    # Then each is answered in its place with the same status and body
    assert status == 200
    assert [(item["status"], item["body"]) for item in document["results"]] == alone


def test_kicks_and_log_lines_are_the_single_routes(redis_url: str, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RENDER_WORKER_FUNCTION", "preview-RenderWorkerFunction-ABC")
    wiring.reset()
    kicked: list[str] = []
    wiring.start(invoker=lambda function, event: kicked.append(event["detail"]["jobId"]))
    capsys.readouterr()
    status, document = answer(invoke("enqueue_jobs", batch_event([job("k-1"), job("k-2"), job("k-1"),
                                                                   job("k-2", title="Other")])))
    assert status == 200 and [item["status"] for item in document["results"]] == [202, 202, 200, 409]
    # A kick for each job admitted, none for a replay or a refusal (as the single route); the
    # kicks go out together, so in no set order
    assert sorted(kicked) == ["k-1", "k-2"]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    admitted = [(line["message"], line.get("jobId")) for line in lines if line.get("message", "").startswith("job ")]
    assert admitted == [("job admitted", "k-1"), ("job admitted", "k-2"), ("job replayed", "k-1")]


# -- the envelope ------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "said"), [
    ("", "request body is empty"),
    ("[]", "must be a JSON object"),
    ('"jobs"', "must be a JSON object"),
    ("{}", '"jobs" is missing'),
    ('{"jobs": {"jobId": "x"}}', '"jobs" is not an array'),
    ('{"jobs": []}', "1 to 100 jobs; this one has 0"),
    ('{"jobs": [{}], "mode": "all"}', "unknown key 'mode'"),
    ('{"jobs": [{"jobId": "n", "x": NaN}]}', "not valid JSON"),
    ('{"jobs": [{"jobId": "n", "x": 1e400}]}', "a number this service cannot take"),
])
def test_a_malformed_envelope_is_one_400_that_admits_nothing(raw: str, said: str, redis_url: str) -> None:
    event = batch_event(raw)
    status, document = answer(invoke("enqueue_jobs", event))
    assert status == 400 and document["error"] == "invalid_request", document
    assert said in document["message"]
    # nothing of the batch was admitted, not even its valid jobs
    assert answer(invoke("enqueue_jobs", batch_event([job("after")])))[1]["results"][0]["status"] == 202


def test_too_many_jobs_admits_none(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREVIEW_QUEUE_MAX", "200")
    wiring.reset()
    status, document = answer(invoke_fixture("enqueue_jobs", "too-many"))
    assert (status, document["errors"]) == (400, [{"path": "/jobs", "message": "must hold 1 to 100 jobs"}])
    assert waiting() == 0
    status, document = answer(invoke("enqueue_jobs", batch_event([job(f"m-{n}") for n in range(100)])))
    assert status == 200 and {item["status"] for item in document["results"]} == {202}


def test_the_body_limit_is_the_whole_bodys(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREVIEW_MAX_BODY_BYTES", "2048")
    wiring.reset()
    jobs = [job(f"big-{n}", title="x" * 100) for n in range(12)]
    assert all(len(json.dumps(j)) < 2048 for j in jobs)  # each alone would fit
    status, document = answer(invoke("enqueue_jobs", batch_event(jobs)))
    assert (status, document["error"], document["limit"]) == (413, "payload_too_large", 2048)
    assert waiting() == 0
    # base64 bodies are held to the same limit, decoded
    event = load_event("enqueue_jobs", "base64-body")
    assert answer(invoke("enqueue_jobs", event))[0] == 200


def test_the_same_body_again_answers_replays(redis_url: str) -> None:
    """What a client does after a 503 or a lost answer: what was admitted answers 200."""
    jobs = [job("r-1"), job("r-2")]
    first = answer(invoke("enqueue_jobs", batch_event(jobs)))[1]["results"]
    again = answer(invoke("enqueue_jobs", batch_event([*jobs, job("r-3")])))[1]["results"]
    assert [item["status"] for item in first] == [202, 202]
    assert [item["status"] for item in again] == [200, 200, 202]
    assert [item["body"]["jobId"] for item in again] == ["r-1", "r-2", "r-3"]


# -- racing batches ------------------------------------------------------------------------------


def race(redis_url: str, settings: Settings, batches: list[dict[str, Any]]) -> list[Any]:
    """Each batch sent at the same instant from its own thread with its own connection."""
    answers: dict[int, list[Any]] = {}
    start = threading.Barrier(len(batches))

    def send(side: int) -> None:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        queue = JobQueue(client, settings)
        try:
            start.wait()
            answers[side] = service.enqueue_batch(batches[side], settings=settings, queue=queue,
                                                  kick=lambda _id: None)
        finally:
            queue.close()
            client.close()

    threads = [threading.Thread(target=send, args=(side,)) for side in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return [result for side in range(len(batches)) for result in answers[side]]


def test_racing_batches_admit_exactly_the_backlog_limit(redis_url: str) -> None:
    settings = Settings.from_env({"REDIS_URL": redis_url, "PREVIEW_QUEUE_MAX": "20"})
    for round_ in range(5):
        redis.Redis.from_url(redis_url).flushall()
        results = race(redis_url, settings, [{"jobs": [job(f"race-{round_}-{side}-{n}") for n in range(15)]}
                                             for side in (0, 1)])
        refused = [r for r in results if isinstance(r, Exception)]
        assert len(results) - len(refused) == 20 and len(refused) == 10, round_
        assert {type(r).__name__ for r in refused} == {"QueueFull"}
        assert waiting() == 20
