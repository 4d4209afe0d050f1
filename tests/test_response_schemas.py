"""The response schemas (schemas/responses.schema.json) against the code: a well-formed schema
whose every route is the template's, whose bodies have the fields of the response models, and
which the handlers' real answers meet: every fixture under events/ (its documented status, its
body, its headers), Redis down (503) and an unexpected error (500) on every route."""

from __future__ import annotations

import json
import typing
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import pytest
from jsonschema import Draft7Validator, Draft202012Validator
from referencing import Registry, Resource

from local.openapi import RESPONSES_FILE, build_openapi, response_problems
from local.redis_server import free_port
from local.template import load_template
from shared import contract, errors, models, service, wiring
from tests.conftest import ROOT, load_event
from tests.handlers import EXPECTED, apply_given, body, invoke, invoke_fixture

SCHEMAS = ROOT / "schemas"
RESPONSES: dict[str, Any] = json.loads((SCHEMAS / RESPONSES_FILE).read_text())
DEFS: dict[str, Any] = RESPONSES["$defs"]
HTTP_CASES = [k for k in EXPECTED if k.split("/")[0] not in {"render_worker", "health_probe"}]


@cache
def document() -> dict[str, Any]:
    return build_openapi(load_template(ROOT / "template.yaml"))


@cache
def routes() -> dict[str, tuple[str, str]]:
    """Route key -> (method, OpenAPI path), and function folder -> route key."""
    template = load_template(ROOT / "template.yaml")
    found: dict[str, tuple[str, str]] = {}
    for route in template.routes():
        assert route.path is not None
        found[route.route_key] = (route.method, route.path)
        found[template.functions[route.function].folder] = (route.method, route.path)
    return found


def problems_of(function: str, response: dict[str, Any]) -> list[str]:
    """Where a handler's Lambda response departs from what the OpenAPI document says."""
    method, path = routes()[function]
    headers = {name.lower(): value for name, value in (response.get("headers") or {}).items()}
    return response_problems(document(), method, path, response["statusCode"], json.loads(response["body"]),
                             headers=lambda name: headers.get(name.lower()))


# -- the file itself ----------------------------------------------------------------------


def test_the_file_is_a_draft_2020_12_schema_whose_references_all_resolve() -> None:
    Draft202012Validator.check_schema(RESPONSES)
    for schema in DEFS.values():
        Draft202012Validator.check_schema(schema)
    # Standalone (as a client reads it), beside the payload schema it refers to.
    payload = Resource.from_contents(contract.SCHEMA)
    registry = Registry().with_resources([(contract.SCHEMA["$id"], payload),
                                          (RESPONSES["$id"], Resource.from_contents(RESPONSES))])
    resolver = registry.resolver(base_uri=RESPONSES["$id"])

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield from ([value] if key == "$ref" else refs(value))
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    for ref in refs(RESPONSES):
        resolver.lookup(ref)  # raises when it names nothing


def test_every_route_of_the_template_and_only_those_is_documented() -> None:
    keys = {key for key in routes() if " " in key}
    assert set(RESPONSES["routes"]) == keys
    for key, statuses in RESPONSES["routes"].items():
        assert {"500", "503"} <= set(statuses), key  # every handler can fail, every one needs Redis
        for status, entry in statuses.items():
            assert 100 <= int(status) < 600 and entry["description"] and "$ref" in entry["schema"], (key, status)


def test_every_status_a_fixture_produces_is_documented_for_its_route() -> None:
    for case in HTTP_CASES:
        event = load_event(*case.split("/"))
        assert str(EXPECTED[case]["status"]) in RESPONSES["routes"][event["routeKey"]], case


def test_the_openapi_document_carries_a_schema_for_every_status() -> None:
    for path, operations in document()["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                schema = response["content"]["application/json"]["schema"]
                assert schema["$ref"].startswith("#/components/schemas/"), (method, path, status)
                assert schema["$ref"].rsplit("/", 1)[1] in document()["components"]["schemas"]


# -- the bodies are the models' ------------------------------------------------------------

MODEL_BODIES: list[tuple[str, type[models.ApiModel], bool]] = [
    # (definition, model, whether every field is always present: exclude_none drops the others)
    ("Enqueued", models.EnqueueResponse, True),
    ("Replayed", models.EnqueueResponse, True),
    ("JobStatus", models.JobStatus, True),
    ("HistoryEntry", models.HistoryEntry, True),
    ("JobSummary", models.JobSummary, True),
    ("JobDetail", models.JobDetail, True),
    ("RequestSummary", models.RequestSummary, True),
    ("JobPage", models.JobPage, True),
    ("ArtifactFile", models.ArtifactFile, True),
    ("Artifact", models.ArtifactResponse, True),
    ("QueueCounts", models.QueueCounts, True),
    ("RedisHealth", models.RedisHealth, False),
    ("WorkerHealth", models.WorkerHealth, False),
    ("HealthReport", models.HealthReport, False),
]


@pytest.mark.parametrize(("name", "model", "complete"), MODEL_BODIES, ids=[m[0] for m in MODEL_BODIES])
def test_a_body_has_exactly_the_fields_of_its_model(name: str, model: type[models.ApiModel], complete: bool) -> None:
    schema = DEFS[name]
    assert schema["additionalProperties"] is False
    fields = set(model.field_names())
    assert set(schema["properties"]) == fields
    # exclude_none drops a None: only a required field that cannot be None is always there
    hints = typing.get_type_hints(model)
    required = {field for field in model.required_fields() if type(None) not in typing.get_args(hints[field])}
    if complete:
        assert set(schema["required"]) == fields
    else:
        assert required <= set(schema["required"]) <= fields


def test_enumerations_are_the_codes() -> None:
    assert DEFS["JobState"]["enum"] == list(typing.get_args(models.JobState))
    assert tuple(DEFS["Priority"]["enum"]) == contract.PRIORITIES
    codes = {cls.code for cls in vars(errors).values()
             if isinstance(cls, type) and issubclass(cls, errors.PreviewError)}
    for name, schema in DEFS.items():
        error = schema.get("properties", {}).get("error")
        if error is not None and "const" in error:
            assert error["const"] in codes, name


def test_the_id_is_the_payloads() -> None:
    assert DEFS["JobId"] == {"$ref": "preview-job.schema.json#/definitions/id"}
    assert Draft7Validator(contract.SCHEMA["definitions"]["id"]).is_valid("preview-job-0001")


# -- the handlers' real answers --------------------------------------------------------------


@pytest.mark.parametrize("case", HTTP_CASES)
def test_every_fixture_is_answered_as_documented(case: str, redis_url: str) -> None:
    function, name = case.split("/")
    apply_given(EXPECTED[case].get("given", []))
    response = invoke_fixture(function, name)
    assert response["statusCode"] == EXPECTED[case]["status"], response["body"]
    assert problems_of(function, response) == []


def test_a_replay_of_a_finished_job_and_a_job_not_completed_are_as_documented(redis_url: str) -> None:
    from tests.handlers import run_worker_until_idle

    assert invoke_fixture("enqueue_job", "success")["statusCode"] == 202
    running = invoke_fixture("job_artifact", "not-completed")
    assert running["statusCode"] == 409 and problems_of("job_artifact", running) == []
    run_worker_until_idle()
    replay = invoke_fixture("enqueue_job", "duplicate")
    assert (replay["statusCode"], body(replay)["state"]) == (200, "completed")
    assert problems_of("enqueue_job", replay) == []
    for function in ("job_status", "job_artifact", "queue_metrics"):
        response = invoke_fixture(function, "success")
        assert response["statusCode"] == 200 and problems_of(function, response) == [], response["body"]


ALL_ENDPOINTS = [("enqueue_job", "success"), ("enqueue_jobs", "success"), ("job_status", "success"),
                 ("job_artifact", "success"), ("queue_metrics", "success"), ("worker_health", "healthy"),
                 ("list_jobs", "waiting"), ("job_detail", "success"), ("retry_job", "success"),
                 ("cancel_job", "success")]


@pytest.mark.redis
@pytest.mark.parametrize(("function", "case"), ALL_ENDPOINTS)
def test_redis_down_is_the_documented_503(function: str, case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    wiring.reset()
    response = invoke_fixture(function, case)
    assert response["statusCode"] == 503
    assert problems_of(function, response) == []


USE_CASES: dict[str, str] = {"enqueue_job": "enqueue", "enqueue_jobs": "enqueue_batch", "job_status": "job_status",
                             "job_artifact": "job_artifact", "queue_metrics": "queue_metrics",
                             "worker_health": "health", "list_jobs": "list_jobs", "job_detail": "job_detail",
                             "retry_job": "retry_job", "cancel_job": "cancel_job"}


@pytest.mark.parametrize(("function", "case"), ALL_ENDPOINTS)
def test_an_unexpected_error_is_the_documented_500(function: str, case: str, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(service, USE_CASES[function], explode)
    event = load_event(function, case)
    response = invoke(function, event)
    assert response["statusCode"] == 500
    assert problems_of(function, response) == []
    assert body(response)["requestId"] == event["requestContext"]["requestId"]
    capsys.readouterr()  # the traceback went to the log


def test_a_problem_is_reported_for_an_undocumented_status_a_wrong_body_and_a_missing_header() -> None:
    check: Callable[..., list[str]] = response_problems
    assert check(document(), "GET", "/api/preview/queue/metrics", 418, {}) == [
        "GET /api/preview/queue/metrics does not document status 418"]
    assert check(document(), "GET", "/api/preview/queue/metrics", 200, {"name": "q"})
    enqueued = {"jobId": "j", "status": "queued", "state": "waiting",
                "statusUrl": "https://h.example/api/preview/job/j/status",
                "artifactUrl": "https://h.example/api/preview/job/j/artifact"}
    assert check(document(), "POST", "/api/preview/job", 202, enqueued, headers=lambda name: "x") == []
    assert check(document(), "POST", "/api/preview/job", 202, enqueued) == ["202 without its Location header"]
    # A URL is held to its form: a host that is no host name, a newline at the end
    for bad in ("https://a b/api/preview/job/j/status", "https://h.example/api/preview/job/j/status\n",
                "https://" + "a" * 64 + "/api/preview/job/j/status", "/api/preview/job/j/status"):
        assert check(document(), "POST", "/api/preview/job", 202, {**enqueued, "statusUrl": bad},
                     headers=lambda name: "x"), bad
