"""The real template.yaml behind the emulator, its app driven in this process with a private
Redis: the preview story end to end over HTTP (enqueue, the worker renders in the app's
thread, status, signed artifact download), the API key, metrics, OpenAPI, the schedule fire
endpoint, and concurrent requests that each keep their own event. A clean stop of the real
process is in test_startup.py."""

from __future__ import annotations

import io
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import av
import httpx
import pytest
import redis
from starlette.applications import Starlette

from local.redis_server import RedisServer
from local.startup import Prepared, ServeArgs
from shared.prometheus_metrics import PROMETHEUS_CONTENT_TYPE
from tests.conftest import load_event
from tests.emulator.in_process import URL, client_for, function_stdout, prepared_for, running, start_app

KEY = "test-key-0123"
AUTH = {"x-api-key": KEY}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve") / "data"


@pytest.fixture(scope="module")
def args(data_dir: Path) -> ServeArgs:
    return ServeArgs(api_key=KEY, data_dir=data_dir)


@pytest.fixture(scope="module")
def prepared(args: ServeArgs, private_redis: RedisServer) -> Prepared:
    redis.Redis.from_url(private_redis.url).flushall()
    return prepared_for(args, private_redis.url, PREVIEW_QUEUE_MAX="200")


@pytest.fixture
def app(args: ServeArgs, prepared: Prepared, private_redis: RedisServer,
        monkeypatch: pytest.MonkeyPatch) -> Starlette:
    return start_app(args, prepared, monkeypatch, redis_description=private_redis.url)


@pytest.fixture
def stdout() -> Iterator[io.StringIO]:
    """What a real emulator would print on its stdout: the functions' log lines."""
    with function_stdout() as lines:
        yield lines


@pytest.fixture
def client(app: Starlette, stdout: io.StringIO) -> Iterator[httpx.Client]:
    """With the API key, on the app started (its worker's first heartbeat in), stopped after."""
    with running(app, headers=AUTH) as client:
        wait_for_heartbeat(client)
        yield client


@pytest.fixture
def anonymous(app: Starlette, client: httpx.Client) -> Iterator[httpx.Client]:
    """Without a key, on the app `client` has started (not entered: one start-up is enough)."""
    anonymous = client_for(app)
    yield anonymous
    anonymous.close()


def wait_for_heartbeat(client: httpx.Client, timeout: float = 10) -> None:
    """The long-running worker starts with the app, in a thread of its own; its first
    heartbeat follows within moments."""
    deadline = time.monotonic() + timeout
    while client.get("/api/preview/worker/health").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.02)


def payload(job_id: str) -> dict[str, Any]:
    body = json.loads(load_event("enqueue_job", "minimal")["body"])
    return {**body, "jobId": job_id, "requestId": f"req-{job_id}"}


def wait_for_state(client: httpx.Client, job_id: str, state: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = client.get(f"/api/preview/job/{job_id}/status").json()
        if status["state"] == state or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def test_preview_end_to_end(client: httpx.Client, anonymous: httpx.Client, data_dir: Path,
                            stdout: io.StringIO) -> None:
    # Given the sample job of the fixtures
    body = load_event("enqueue_job", "render")["body"]
    # When it is enqueued
    response = client.post("/api/preview/job", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 202, response.text
    admitted = response.json()
    job_id = admitted["jobId"]
    assert admitted["statusUrl"] == f"{URL}/api/preview/job/{job_id}/status"
    assert response.headers["location"] == admitted["statusUrl"]
    # Then the long-running worker renders it
    status = wait_for_state(client, job_id, "completed")
    assert status["state"] == "completed" and status["progress"] == 100, status
    # And the artifact URL serves a playable video, with no API key (the signature is the key)
    artifact = client.get(f"/api/preview/job/{job_id}/artifact")
    assert artifact.status_code == 200, artifact.text
    document = artifact.json()
    video = anonymous.get(document["url"])
    assert video.status_code == 200
    assert video.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(video.content), mode="r") as container:
        kinds = {stream.type for stream in container.streams}
        frames = len(list(container.decode(video=0)))
    assert kinds == {"video", "audio"} and frames >= 3
    files = {f["name"]: f for f in document["files"]}
    poster = anonymous.get(files["poster.png"]["url"])
    assert poster.headers["content-type"] == "image/png"
    assert len(poster.content) == files["poster.png"]["bytes"]
    # Files say what they are and are not sniffed; conditional and range requests behave
    assert video.headers["content-disposition"] == 'inline; filename="preview.mp4"'
    assert video.headers["x-content-type-options"] == "nosniff"
    etag = video.headers["etag"]
    cached = anonymous.get(document["url"], headers={"if-none-match": etag})
    assert (cached.status_code, cached.content, cached.headers["etag"]) == (304, b"", etag)
    assert anonymous.get(document["url"], headers={"if-none-match": '"other"'}).status_code == 200
    part = anonymous.get(document["url"], headers={"range": "bytes=0-9"})
    assert (part.status_code, part.content) == (206, video.content[:10])
    for ignored in ("items=0-5", "bytes=abc", "bytes=9-2"):
        whole = anonymous.get(document["url"], headers={"range": ignored})
        assert (whole.status_code, len(whole.content)) == (200, len(video.content)), ignored
    # An expired link says so; a tampered one does not say why
    from shared import wiring
    from shared.artifacts.local import LocalStore

    store = wiring.services().store
    assert isinstance(store, LocalStore)
    expired, _ = store.signer.url(urlsplit(document["url"]).path.removeprefix("/artifacts/"), -5, URL)
    answer = anonymous.get(expired)
    assert (answer.status_code, answer.json()) == (403, {"message": "link expired"})
    # A tampered or missing signature grants nothing
    url = urlsplit(document["url"])
    tampered = anonymous.get(f"{URL}{url.path}?{url.query[:-4]}0000")
    assert (tampered.status_code, tampered.json()) == (403, {"message": "Forbidden"})
    assert anonymous.get(f"{URL}{url.path}").status_code == 403
    # A genuine link to a file that is gone: 404
    captions = urlsplit(files["captions.vtt"]["url"])
    (data_dir / captions.path.removeprefix("/artifacts/")).unlink()
    assert anonymous.get(files["captions.vtt"]["url"]).status_code == 404
    # The enqueue kick reached the render worker function as an async invoke
    assert '"trigger":"preview.enqueue"' in stdout.getvalue()


def test_banner_names_routes_schedules_and_the_worker(capsys: pytest.CaptureFixture[str], client: httpx.Client,
                                                     private_redis: RedisServer) -> None:
    assert capsys.readouterr().err.splitlines() == [
        f"Preview service emulator on {URL} (docs: /docs, dashboard: /dashboard, metrics: /metrics, "
        f"Redis: {private_redis.url})",
        "  POST /api/preview/job                         -> EnqueueJobFunction  [api key]",
        "  POST /api/preview/jobs                        -> EnqueueJobsFunction  [api key]",
        "  GET /api/preview/job/{jobId}/status           -> JobStatusFunction  [api key]",
        "  GET /api/preview/job/{jobId}/artifact         -> JobArtifactFunction  [api key]",
        "  GET /api/preview/queue/metrics                -> QueueMetricsFunction  [api key]",
        "  GET /api/preview/worker/health                -> WorkerHealthFunction",
        "  GET /api/preview/jobs                         -> ListJobsFunction  [api key]",
        "  GET /api/preview/job/{jobId}                  -> JobDetailFunction  [api key]",
        "  POST /api/preview/job/{jobId}/retry           -> RetryJobFunction  [api key]",
        "  POST /api/preview/job/{jobId}/cancel          -> CancelJobFunction  [api key]",
        "  rate(1 minute)                                -> RenderWorkerFunction",
        "  rate(5 minutes)                               -> HealthProbeFunction",
        "  long-running worker (2 job loops) -> RenderWorkerFunction",
    ]


def test_api_key_guards_every_route_but_health(anonymous: httpx.Client) -> None:
    for method, path in (("GET", "/api/preview/queue/metrics"), ("POST", "/api/preview/job"),
                         ("GET", "/api/preview/job/x/status"), ("GET", "/metrics")):
        response = anonymous.request(method, path)
        assert (response.status_code, response.json()) == (401, {"message": "Unauthorized"}), path
    assert anonymous.get("/api/preview/queue/metrics", headers={"x-api-key": "wrong"}).status_code == 401
    assert anonymous.get("/api/preview/worker/health").status_code in (200, 503)
    assert anonymous.get("/openapi.json").status_code == 200
    assert anonymous.get("/api/preview/queue/metrics", headers=AUTH).status_code == 200
    bearer = {"authorization": f"Bearer {KEY}"}
    assert anonymous.get("/api/preview/queue/metrics", headers=bearer).status_code == 200


def test_metrics_are_prometheus_text(client: httpx.Client) -> None:
    client.get("/api/preview/queue/metrics")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == PROMETHEUS_CONTENT_TYPE
    text = response.text
    assert 'preview_requests_total{route="GET /api/preview/queue/metrics",status="200"}' in text
    assert 'preview_queue_jobs{queue="preview-jobs",state="waiting"}' in text


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_openapi_and_docs(client: httpx.Client, anonymous: httpx.Client) -> None:
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert {path: sorted(ops) for path, ops in document["paths"].items()} == {
        "/api/preview/job": ["post"],
        "/api/preview/job/{jobId}/status": ["get"],
        "/api/preview/job/{jobId}/artifact": ["get"],
        "/api/preview/queue/metrics": ["get"],
        "/api/preview/worker/health": ["get"],
        "/api/preview/jobs": ["get", "post"],
        "/api/preview/job/{jobId}": ["get"],
        "/api/preview/job/{jobId}/retry": ["post"],
        "/api/preview/job/{jobId}/cancel": ["post"],
    }
    assert "requestBody" not in document["paths"]["/api/preview/job/{jobId}/retry"]["post"]  # it takes none
    enqueue = document["paths"]["/api/preview/job"]["post"]
    media = enqueue["requestBody"]["content"]["application/json"]
    assert media["schema"] == {"$ref": "#/components/schemas/PreviewJob"}
    assert "minimal" in media["examples"]
    # The batch route's body is its own schema (schemas/responses.schema.json `requests`), and
    # its examples the fixtures that schema accepts
    batch = document["paths"]["/api/preview/jobs"]["post"]["requestBody"]["content"]["application/json"]
    assert batch["schema"] == {"$ref": "#/components/schemas/JobBatch"}
    assert set(batch["examples"]) == {"success", "queue-full"}
    assert "requestBody" not in document["paths"]["/api/preview/jobs"]["get"]
    status = document["paths"]["/api/preview/job/{jobId}/status"]["get"]
    assert status["parameters"][0]["name"] == "jobId"
    # Status codes and bodies from schemas/responses.schema.json, and what the fixtures produce.
    assert {"200", "202", "400", "409", "413", "429", "500", "503"} <= set(enqueue["responses"])
    assert "conflict" in enqueue["responses"]["409"]["description"]
    assert enqueue["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/BadRequest"}
    assert enqueue["responses"]["202"]["headers"]["Location"]
    assert {"200", "400", "404", "500", "503"} <= set(status["responses"])
    assert status["responses"]["401"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/GatewayMessage"}
    assert document["paths"]["/api/preview/worker/health"]["get"]["security"] == []
    assert status["security"]
    # every reference resolves inside the document (draft-07 definitions moved to components)
    schemas = document["components"]["schemas"]
    for ref in _refs(document):
        assert ref.startswith("#/components/schemas/") and ref.split("/")[-1] in schemas, ref
    docs = client.get("/docs")
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in docs.text and "openapi.json" in docs.text
    # The page's scripts come from this server (works offline), without the API key.
    assets = re.findall(r'(?:src|href)="(/docs/assets/[^"]+)"', docs.text)
    assert len(assets) == 2 and "cdn." not in docs.text
    for asset in assets:
        response = anonymous.get(asset)
        assert response.status_code == 200 and len(response.content) > 1000, asset
    assert anonymous.get("/docs/assets/%2e%2e/%2e%2e/template.yaml").status_code == 404


def test_fire_endpoint_runs_the_health_probe(client: httpx.Client) -> None:
    response = client.post("/_emulator/schedules/HealthProbeFunction/fire")
    assert response.status_code == 200, response.text
    fired = response.json()
    assert fired["result"]["status"] == "healthy", fired["result"]  # the worker's heartbeat counts
    event = fired["event"]
    assert event["source"] == "aws.events" and event["detail-type"] == "Scheduled Event"
    assert event["resources"] == ["arn:aws:events:us-east-1:123456789012:rule/local-HealthProbeFunctionEvery5Minutes"]
    # the folder name works as well
    assert client.post("/_emulator/schedules/health_probe/fire").status_code == 200


def test_concurrent_requests_each_keep_their_own_event(client: httpx.Client) -> None:
    # Powertools keeps the current event in one class-wide slot; the emulator must not let
    # concurrent requests read each other's.
    answers: dict[str, tuple[int, dict[str, Any]]] = {}

    def status(job_id: str) -> None:
        response = client.get(f"/api/preview/job/{job_id}/status")
        answers[job_id] = (response.status_code, response.json())

    def enqueue(job_id: str) -> None:
        response = client.post("/api/preview/job", json=payload(job_id))
        answers[job_id] = (response.status_code, response.json())

    threads = [threading.Thread(target=status, args=(f"unknown-{i}",)) for i in range(24)]
    threads += [threading.Thread(target=enqueue, args=(f"concurrent-{i}",)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for job_id, (code, body) in answers.items():
        if job_id.startswith("unknown"):
            assert code == 404 and body["jobId"] == job_id, (job_id, body)
        else:
            assert code == 202 and body["jobId"] == job_id, (job_id, body)
