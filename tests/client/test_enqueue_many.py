"""`PreviewClient.enqueue_many` and `preview enqueue FILE...` over the batch route.

Against a real emulator (processes): each body answered as `enqueue` of it alone answers it
(the same Admission, or an error of the same type, status and message), in batches, with a
full queue waited out for the refused jobs only, a 503 retried with the same body until Redis
is back, and several files followed with --wait. Against a scripted transport (no socket): the
requests it makes when the service splits, refuses or lacks the route."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from local.redis_server import RedisServer
from preview_client import client as client_module
from preview_client.client import Admission, PreviewClient, RetryNotice, RetryPolicy
from preview_client.errors import ClientError, InvalidPayload, Unavailable
from tests.client.conftest import (
    API_KEY,
    Running,
    assert_exit,
    client_env,
    job_body,
    job_file,
    keyed_args,
    preview,
    start_emulator,
)
from tests.emulator.conftest import Emulator

IDLE = ["--api-key", API_KEY, "--no-worker", "--no-schedules"]
NO_KICK = {"RENDER_WORKER_FUNCTION": ""}


def job(job_id: str, title: str = "Fold") -> dict[str, Any]:
    return {**json.loads(job_body("minimal")), "jobId": job_id, "requestId": f"req-{job_id}",
            "previewRequest": {"title": title, "steps": [], "assets": [], "audio": {}}}


def bodies(prefix: str) -> list[bytes]:
    """Bodies as files hold them: valid, invalid, a conflict, replays, not JSON, a BOM, not an object."""
    invalid = job(f"{prefix}bad")
    del invalid["previewRequest"]["steps"]
    return [
        json.dumps(job(f"{prefix}a")).encode(),
        json.dumps(invalid).encode(),
        json.dumps(job(f"{prefix}b")).encode(),
        json.dumps(job(f"{prefix}a")).encode(),
        json.dumps(job(f"{prefix}b", title="Other")).encode(),
        b'{"jobId": "' + prefix.encode() + b'broken",',
        b"\xef\xbb\xbf" + json.dumps(job(f"{prefix}bom")).encode(),
        b"[1, 2]",
        json.dumps({**job(f"{prefix}nan"), "x": float("nan")}).encode(),  # NaN: not JSON to the service
        json.dumps(job(f"{prefix}c")).encode(),
    ]


def outcome(result: Admission | ClientError, prefix: str) -> tuple[Any, ...]:
    if isinstance(result, Admission):
        return "admission", result.status, json.dumps(result.body).replace(prefix, "*")
    return (type(result).__name__, getattr(result, "status", None), result.message.replace(prefix, "*"),
            json.dumps(getattr(result, "body", None)).replace(prefix, "*"))


@pytest.mark.process
def test_each_body_is_answered_as_enqueue_answers_it_alone(tmp_path: Path) -> None:
    emulator = start_emulator(tmp_path, IDLE, **NO_KICK)
    try:
        with PreviewClient(emulator.url, api_key=API_KEY, retry=RetryPolicy(busy_wait=0.1)) as client:
            alone: list[Admission | ClientError] = []
            for body in bodies("one-"):
                try:
                    alone.append(client.enqueue(body))
                except ClientError as exc:
                    alone.append(exc)
            many = client.enqueue_many(bodies("two-"))
        assert [outcome(r, "one-") for r in alone] == [outcome(r, "two-") for r in many]
        assert [r.status if isinstance(r, Admission) else type(r).__name__ for r in many] == [
            202, "InvalidPayload", 202, 200, "ApiError", "InvalidPayload", 202, "InvalidPayload", "InvalidPayload", 202]
    finally:
        emulator.stop()
    # One batch request for the bodies that can go in one; the others alone (as the access log shows)
    assert emulator.stderr.count('"POST /api/preview/jobs HTTP/1.1" 200') == 1


@pytest.mark.process
@pytest.mark.slow
def test_a_full_queue_is_waited_out_for_the_refused_jobs_only(tmp_path: Path) -> None:
    emulator = start_emulator(tmp_path, IDLE, PREVIEW_QUEUE_MAX="2", PREVIEW_BACKOFF_MS="2000", **NO_KICK)
    try:
        env = client_env(tmp_path)
        files = [str(job_file(tmp_path, "minimal", jobId=f"full-{n}")) for n in range(3)]
        # Given a queue with room for two: with a budget of 1 s the third is refused, said at once
        gave_up = preview(keyed_args(emulator, "--queue-full-wait", "1", "enqueue", *files), env)
        assert_exit(gave_up, 4)
        assert [line.split(" (")[0] for line in gave_up.stdout.splitlines()] == ["admitted full-0", "admitted full-1"]
        assert f"preview: {files[2]}: error: POST /api/preview/job: 429 " in gave_up.stderr
        assert "it asks to retry after 2 s" in gave_up.stderr
        # When the budget allows: the replays answer at once, the refused job waits and gets in
        running = Running(keyed_args(emulator, "enqueue", *files), env)
        running.wait_for("429")
        assert "retrying in 2.0 s" in running.stderr and "(1 of the batch)" in running.stderr
        fired = httpx.post(f"{emulator.url}/_emulator/schedules/RenderWorkerFunction/fire",
                           headers={"x-api-key": API_KEY}, timeout=30)
        assert fired.status_code < 300, fired.text
        code, out, _ = running.finish()
        assert code == 0, running.stderr
        assert [line.split(" (")[0] for line in out.splitlines()] == [
            "already admitted full-0", "already admitted full-1", "admitted full-2"]
        # The retry sent only the refused job: its batch had one job
        assert emulator.stderr.count('"POST /api/preview/jobs HTTP/1.1" 200') >= 3
    finally:
        emulator.stop()


@pytest.mark.process
@pytest.mark.slow
def test_a_503_is_retried_with_the_same_batch_until_redis_is_back(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    emulator = start_emulator(tmp_path, IDLE, REDIS_URL=redis.url, **NO_KICK)
    try:
        env = client_env(tmp_path)
        files = [str(job_file(tmp_path, "minimal", jobId=f"back-{n}")) for n in range(4)]
        redis.stop()  # Given Redis gone from under the emulator
        running = Running(keyed_args(emulator, "enqueue", *files), env)
        running.wait_for("POST /api/preview/jobs: 503")
        redis = RedisServer(tmp_path / "redis", port=redis.port).start()  # When it comes back
        code, out, _ = running.finish()
        # Then the same batch, retried, is admitted, each job once
        assert code == 0, running.stderr
        assert [line.split(" (")[0] for line in out.splitlines()] == [f"admitted back-{n}" for n in range(4)]
        counts = httpx.get(f"{emulator.url}/api/preview/queue/metrics", headers={"x-api-key": API_KEY}).json()
        assert counts["waiting"] == 4
    finally:
        emulator.stop()
        redis.stop()


@pytest.mark.process
@pytest.mark.slow
def test_several_files_are_followed_to_their_end(keyed: Emulator, tmp_path: Path) -> None:
    files = [str(job_file(tmp_path, "minimal", jobId=f"follow-{n}")) for n in range(3)]
    result = preview(keyed_args(keyed, "enqueue", "--wait", "--download", str(tmp_path / "out"), *files),
                     client_env(tmp_path))
    assert_exit(result, 0)
    # Each file's lines together, in the order given: its admission, its end, its files
    reports = result.stdout.split("admitted ")[1:]
    assert [report.split(" ")[0] for report in reports] == [f"follow-{n}" for n in range(3)], result.stdout
    for n, report in enumerate(reports):
        assert f"\ncompleted follow-{n} in " in report, report
        # each job's files in a folder of its own (every preview has the same file names)
        assert f"\ndownloaded {tmp_path / 'out' / f'follow-{n}'}/" in report, report
        assert (tmp_path / "out" / f"follow-{n}" / "preview.json").is_file()
    documents = json.loads(preview(keyed_args(keyed, "--json", "enqueue", "--wait", *files),
                                   client_env(tmp_path)).stdout)
    assert [d["status"]["state"] for d in documents] == ["completed"] * 3
    assert [d["admission"]["jobId"] for d in documents] == [f"follow-{n}" for n in range(3)]


# -- the requests it makes (a scripted service) -------------------------------------------------


Script = Callable[[httpx.Request], httpx.Response]


def scripted(answer: Script, **policy: Any) -> tuple[PreviewClient, list[tuple[str, Any]], list[float]]:
    sent: list[tuple[str, Any]] = []
    slept: list[float] = []

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        sent.append((request.url.path, body))
        return answer(request)

    client = PreviewClient("http://service.test", api_key="k", retry=RetryPolicy(**policy), sleep=slept.append)
    client._http.close()
    client._http = httpx.Client(base_url="http://service.test", transport=httpx.MockTransport(handle))
    return client, sent, slept


def admitted(job_id: str, status: int = 202) -> dict[str, Any]:
    return {"status": status, "body": {"jobId": job_id, "status": "queued", "state": "waiting",
                                       "statusUrl": f"http://service.test/api/preview/job/{job_id}/status",
                                       "artifactUrl": f"http://service.test/api/preview/job/{job_id}/artifact"}}


def each_admitted(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/api/preview/jobs":
        jobs = json.loads(request.content)["jobs"]
        return httpx.Response(200, json={"results": [admitted(j["jobId"]) for j in jobs]})
    return httpx.Response(202, json=admitted(json.loads(request.content)["jobId"])["body"])


def ids(n: int) -> list[dict[str, Any]]:
    return [{"jobId": f"j-{i}"} for i in range(n)]


def test_batches_hold_at_most_max_batch_jobs_in_order() -> None:
    client, sent, _ = scripted(each_admitted)
    results = client.enqueue_many(ids(250))
    assert [len(body["jobs"]) for _, body in sent] == [100, 100, 50]
    assert [r.job_id for r in results if isinstance(r, Admission)] == [f"j-{i}" for i in range(250)]


def test_a_413_splits_the_batch_and_a_job_alone_goes_to_the_single_route() -> None:
    def limited(request: httpx.Request) -> httpx.Response:
        if len(request.content) > 60:
            return httpx.Response(413, json={"error": "payload_too_large", "message": "too large", "limit": 60})
        return each_admitted(request)

    client, sent, _ = scripted(limited)
    results = client.enqueue_many([{"jobId": "a"}, {"jobId": "b"}, {"jobId": "c"}, {"jobId": "d" * 80}])
    assert [r.job_id if isinstance(r, Admission) else type(r).__name__ for r in results] == [
        "a", "b", "c", "InvalidPayload"]
    assert sent[-1][0] == "/api/preview/job"  # the one over the limit alone, as `enqueue` sends it
    assert isinstance(results[3], InvalidPayload) and results[3].status == 413


def test_a_batch_refused_whole_is_sent_job_by_job() -> None:
    def picky(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/preview/jobs":
            return httpx.Response(400, json={"error": "invalid_request", "message": "a number it cannot take"})
        return each_admitted(request)

    client, sent, _ = scripted(picky)
    results = client.enqueue_many(ids(3))
    assert [r.job_id for r in results if isinstance(r, Admission)] == ["j-0", "j-1", "j-2"]
    assert [path for path, _ in sent].count("/api/preview/job") == 3


def test_a_service_without_the_route_gets_one_request_per_job() -> None:
    def old(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/preview/jobs":
            return httpx.Response(404, json={"message": "Not Found"})
        return each_admitted(request)

    client, sent, _ = scripted(old)
    results = client.enqueue_many(ids(150))
    assert [r.job_id for r in results if isinstance(r, Admission)] == [f"j-{i}" for i in range(150)]
    assert [path for path, _ in sent].count("/api/preview/jobs") == 1  # asked once, then one by one


def test_only_the_refused_jobs_are_sent_again_after_their_retry_after() -> None:
    room = {"left": 1}

    def full(request: httpx.Request) -> httpx.Response:
        items = []
        for j in json.loads(request.content)["jobs"]:
            if room["left"] > 0:
                room["left"] -= 1
                items.append(admitted(j["jobId"]))
            else:
                items.append({"status": 429, "body": {"error": "queue_full", "message": "the queue is full",
                                                      "retryAfter": 3, "limit": 1}})
        room["left"] = 1  # a worker makes room for one job before each retry
        return httpx.Response(200, json={"results": items})

    notices: list[RetryNotice] = []
    client, sent, slept = scripted(full, busy_wait=7)
    client.on_retry = notices.append
    results = client.enqueue_many(ids(4))
    assert [[j["jobId"] for j in body["jobs"]] for _, body in sent] == [
        ["j-0", "j-1", "j-2", "j-3"], ["j-1", "j-2", "j-3"], ["j-2", "j-3"]]
    assert slept == [3, 3]  # the budget of 7 s holds two waits of 3 s, not a third
    assert [type(r).__name__ for r in results] == ["Admission", "Admission", "Admission", "Unavailable"]
    last = results[3]
    assert isinstance(last, Unavailable) and last.status == 429
    assert last.message.startswith("POST /api/preview/job: 429 the queue is full (still full after the retries")
    assert [n.reason for n in notices] == ["429 the queue is full (3 of the batch)",
                                           "429 the queue is full (2 of the batch)"]


def test_a_503_is_retried_with_the_same_bytes() -> None:
    failures = [503, 503]

    def flaky(request: httpx.Request) -> httpx.Response:
        if failures:
            return httpx.Response(failures.pop(), json={"error": "store_unavailable",
                                                        "message": "Redis is unreachable"})
        return each_admitted(request)

    client, sent, slept = scripted(flaky)
    results = client.enqueue_many(ids(3))
    assert len(sent) == 3 and sent[0] == sent[1] == sent[2] and len(slept) == 2
    assert all(isinstance(r, Admission) for r in results)
    # The tries run out: each job gets the error its own request would have
    client, sent, _ = scripted(lambda request: httpx.Response(503, json={"error": "store_unavailable",
                                                                          "message": "Redis is unreachable"}),
                               attempts=2)
    results = client.enqueue_many(ids(2))
    assert len(sent) == 2 and all(isinstance(r, Unavailable) and r.status == 503 for r in results)


def test_the_limit_is_the_services() -> None:
    from shared import service, settings

    assert client_module.MAX_BATCH == service.MAX_BATCH
    assert settings.Settings.from_env({}).max_body_bytes == client_module.BATCH_BYTES
