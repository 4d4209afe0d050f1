"""The payload contract, without Redis or sockets."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from shared.api import parse_body
from shared.contract import validate_payload
from shared.errors import InvalidPayload, InvalidRequest, PayloadTooLarge
from shared.settings import Settings

pytestmark = pytest.mark.usefixtures("no_sockets")

SPEC_MINIMAL = {"jobId": "preview-job-0001", "projectId": "proj-mobius-123", "requestId": "req-0001",
                "previewRequest": {"steps": [], "assets": [], "audio": {}}, "dryRun": True}
SPEC_FULL = {
    "jobId": "preview-job-0002", "projectId": "proj-mobius-123", "requestId": "req-0002",
    "previewRequest": {
        "title": "How to build a Mobius demo",
        "description": "Auto-generated preview for the 'Intro' tutorial",
        "steps": [], "assets": [], "audio": {},
        "options": {"resolution": "1280x720", "format": "webm", "includeCaptions": False},
        "metadata": {"author": "automation", "tags": ["preview", "auto"]},
    },
    "dryRun": True, "priority": "normal", "attempts": 0,
    "createdAt": "2025-10-08T12:05:00.000Z", "updatedAt": "2025-10-08T12:05:00.000Z",
}
SETTINGS = Settings.from_env({"PREVIEW_ASSET_BUCKETS": "assets-bucket"})


def errors_of(document: Any) -> list[dict[str, str]]:
    with pytest.raises(InvalidPayload) as caught:
        validate_payload(document, SETTINGS)
    return caught.value.errors


def with_request(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(SPEC_MINIMAL)
    doc["previewRequest"].update(changes)
    return doc


@pytest.mark.parametrize("document", [SPEC_MINIMAL, SPEC_FULL])
def test_spec_documents_validate_unchanged(document: dict[str, Any]) -> None:
    original = copy.deepcopy(document)
    assert validate_payload(document, SETTINGS) == original


def test_every_error_is_reported_with_a_json_pointer() -> None:
    # Given a payload with several independent problems
    bad = {"jobId": 42, "projectId": "p", "previewRequest": {"steps": "none", "assets": []},
           "dryRun": "yes", "priority": "urgent", "surprise": 1}
    # When it is validated
    errors = errors_of(bad)
    # Then each problem is listed with its own path
    paths = {e["path"] for e in errors}
    assert {"/jobId", "/requestId", "/dryRun", "/priority", "/surprise", "/previewRequest/steps",
            "/previewRequest/audio"} <= paths
    assert all(e["message"] for e in errors)


@pytest.mark.parametrize("job_id", ["../x", "a/b", ".hidden", "", "x" * 129, "a b", "{tag}", "a\nb", "job-1\n"])
def test_ids_that_could_escape_a_path_or_key_are_refused(job_id: str) -> None:
    errors = errors_of({**SPEC_MINIMAL, "jobId": job_id})
    assert {e["path"] for e in errors} == {"/jobId"}


@pytest.mark.parametrize("job_id", ["a", "A-1_b.c", "x" * 128, "0", "_x"])
def test_ids_in_the_allowed_alphabet_pass(job_id: str) -> None:
    validate_payload({**SPEC_MINIMAL, "jobId": job_id}, SETTINGS)


@pytest.mark.parametrize(
    "uri",
    ["http://169.254.169.254/latest", "https://example.com/a.png", "file:///etc/passwd", "/etc/passwd",
     "../secret.png", "a/../../b.png", "ftp://host/x.png", "s3://other-bucket/a.png", "gopher://x"],
)
def test_disallowed_asset_uris_are_refused(uri: str) -> None:
    doc = with_request(assets=[{"id": "a1", "type": "image", "uri": uri}])
    errors = errors_of(doc)
    assert [e["path"] for e in errors] == ["/previewRequest/assets/0/uri"]


ONE_PIXEL_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"


@pytest.mark.parametrize(
    "uri", [f"data:image/png;base64,{ONE_PIXEL_PNG}", "s3://assets-bucket/img/a.png", "images/step-1.png"]
)
def test_allowed_asset_uris_pass(uri: str) -> None:
    validate_payload(with_request(assets=[{"id": "a1", "type": "image", "uri": uri}]), SETTINGS)


def test_references_limits_and_resolution_are_checked() -> None:
    doc = with_request(
        steps=[{"durationSec": 30, "asset": "missing"}] * 21,
        assets=[{"id": "voice", "type": "audio", "uri": "data:audio/wav;base64,AAAA"}],
        audio={"narration": "nope", "music": "voice"},
        options={"resolution": "1281x720"},
    )
    doc["previewRequest"]["steps"][0] = {"asset": "voice"}
    errors = errors_of(doc)
    messages = {e["path"]: e["message"] for e in errors}
    assert "unknown asset id 'missing'" in messages["/previewRequest/steps/1/asset"]
    assert "expected 'image'" in messages["/previewRequest/steps/0/asset"]
    assert "exceeds 600 s" in messages["/previewRequest/steps"]
    assert "/previewRequest/audio/narration" in messages
    assert "/previewRequest/options/resolution" in messages


@pytest.mark.parametrize(
    ("field", "value"),
    [("steps", [{"durationSec": 0.1}]), ("steps", [{"durationSec": 31}]), ("steps", [{}] * 101),
     ("options", {"format": "avi"}), ("options", {"fps": 0}), ("options", {"resolution": "4k"}),
     ("audio", {"musicVolume": 2}), ("audio", {"unknown": "x"})],
)
def test_out_of_range_values_are_refused(field: str, value: Any) -> None:
    assert errors_of(with_request(**{field: value}))


def test_bad_timestamps_are_refused() -> None:
    errors = errors_of({**SPEC_MINIMAL, "createdAt": "yesterday"})
    assert errors[0]["path"] == "/createdAt"


def test_body_parsing() -> None:
    body = json.dumps(SPEC_MINIMAL)
    assert parse_body(body, False, 262_144) == SPEC_MINIMAL
    assert parse_body(base64.b64encode(body.encode()).decode(), True, 262_144) == SPEC_MINIMAL
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        parse_body("{nope", False, 262_144)
    with pytest.raises(InvalidRequest, match="empty"):
        parse_body("", False, 262_144)
    with pytest.raises(InvalidRequest, match="base64"):
        parse_body("***", True, 262_144)
    with pytest.raises(InvalidPayload):
        parse_body("[1, 2]", False, 262_144)
    with pytest.raises(PayloadTooLarge):
        parse_body("x" * 262_145, False, 262_144)
    with pytest.raises(PayloadTooLarge):
        parse_body(base64.b64encode(b"x" * 262_145).decode(), True, 262_144)
    with pytest.raises(InvalidRequest):
        parse_body(b"\xff\xfe{", False, 262_144)


@pytest.mark.parametrize("body", [
    '{"jobId": "a", "x": NaN}', '{"x": Infinity}', '{"x": -Infinity}',
    "[" * 100_000, '{"a":' * 50_000,
])
def test_non_json_numbers_and_runaway_nesting_are_a_400(body: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_body(body, False, 10_000_000)
