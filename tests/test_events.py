"""Fixtures are data, validated: every event parses as the API type the template wires,
and request bodies meant to be valid pass the payload schema."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from aws_lambda_powertools.utilities.parser.models import APIGatewayProxyEventV2Model
from jsonschema import Draft7Validator

from shared.contract import SCHEMA
from tests.conftest import EVENTS

pytestmark = pytest.mark.usefixtures("no_sockets")

EXPECTED = {k: v for k, v in json.loads((EVENTS / "expected.json").read_text()).items() if not k.startswith("_")}
FIXTURES = sorted(p for p in EVENTS.glob("*/*.json"))
HTTP_FUNCTIONS = {"enqueue_job", "enqueue_jobs", "job_status", "job_artifact", "queue_metrics", "worker_health",
                  "list_jobs", "job_detail", "retry_job", "cancel_job"}


def fixture_id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def test_every_function_has_fixtures_and_every_fixture_an_expectation() -> None:
    functions = {p.name for p in (EVENTS.parent / "functions").iterdir() if (p / "app.py").exists()}
    assert functions <= {p.name for p in EVENTS.iterdir() if p.is_dir()}
    assert {fixture_id(p) for p in FIXTURES} == set(EXPECTED)


@pytest.mark.parametrize("path", [p for p in FIXTURES if p.parent.name in HTTP_FUNCTIONS], ids=fixture_id)
def test_http_fixture_is_a_valid_payload_v2_event(path: Path) -> None:
    event = APIGatewayProxyEventV2Model.model_validate_json(path.read_text())
    assert event.version == "2.0"
    method, route = event.routeKey.split(" ", 1)
    assert event.requestContext.http.method == method
    assert all(name == name.lower() for name in event.headers or {})
    if "{jobId}" in route:
        assert event.pathParameters and "jobId" in event.pathParameters


@pytest.mark.parametrize("path", [p for p in FIXTURES if p.parent.name == "enqueue_job"], ids=fixture_id)
def test_enqueue_bodies_match_the_schema_as_declared(path: Path) -> None:
    event = json.loads(path.read_text())
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    try:
        document = json.loads(body)
    except json.JSONDecodeError:
        document = None
    valid = document is not None and Draft7Validator(SCHEMA).is_valid(document)
    assert valid == EXPECTED[fixture_id(path)]["schemaValid"]
