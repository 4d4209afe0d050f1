"""The job contract in one place: what admission refuses (every rule with its path), the
limits the schema states, one reading of asset URIs, and the typed request the renderer gets."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from shared import contract
from shared.contract import JobRequest, UriRefused, classify_uri
from shared.errors import InvalidPayload
from shared.settings import Settings

pytestmark = pytest.mark.usefixtures("no_sockets")

SETTINGS = Settings.from_env({"PREVIEW_ASSET_BUCKETS": "asset-bucket"})


def job(steps: list[dict[str, Any]], assets: list[dict[str, Any]] | None = None,
        audio: dict[str, Any] | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"jobId": "job-1", "projectId": "proj-1", "requestId": "req-1", "dryRun": False,
            "previewRequest": {"steps": steps, "assets": assets or [], "audio": audio or {},
                               "options": {"resolution": "320x240", "fps": 10, **(options or {})}}}


def refusal(document: dict[str, Any]) -> str:
    """Every problem admission reports, one `path: message` per line."""
    with pytest.raises(InvalidPayload) as caught:
        contract.validate_payload(document, SETTINGS)
    return "\n".join(f"{e['path']}: {e['message']}" for e in caught.value.errors)


# -- what admission refuses (these rules were also checked, differently, by the planner) ----

@pytest.mark.parametrize(("steps", "assets", "audio", "message"), [
    ([{"asset": "nope"}], [], {}, "unknown asset id 'nope'"),
    ([{"asset": "snd"}], [{"id": "snd", "type": "audio", "uri": "x.wav"}], {}, "expected 'image'"),
    ([], [{"id": "pic", "type": "image", "uri": "x.png"}], {"narration": "pic"}, "expected 'audio'"),
    ([], [], {"music": "ghost"}, "unknown asset id 'ghost'"),
    ([], [{"id": "a", "type": "image", "uri": "x"}, {"id": "a", "type": "image", "uri": "y"}], {},
     "more than one asset"),
])
def test_bad_references(steps: list, assets: list, audio: dict, message: str) -> None:
    assert re.search(message, refusal(job(steps, assets, audio)))


@pytest.mark.parametrize(("resolution", "message"), [
    ("1281x720", "even"), ("1280x721", "even"), ("2560x1440", "maximum"), ("1920x1082", "maximum"),
    ("10x10", "minimum"), ("big", "look like"),
])
def test_bad_resolution(resolution: str, message: str) -> None:
    problems = refusal(job([], options={"resolution": resolution}))
    assert problems.startswith("/previewRequest/options/resolution: ") and re.search(message, problems)


def test_total_duration_limit() -> None:
    contract.validate_payload(job([{"durationSec": 30}] * 20), SETTINGS)
    assert re.search("exceeds 600 s", refusal(job([{"durationSec": 30}] * 20 + [{"durationSec": 0.5}])))


@pytest.mark.parametrize(("options", "message"), [
    ({"format": "avi"}, "format"), ({"fps": 0}, "fps"), ({"fps": 61}, "fps"), ({"fps": True}, "fps"),
    ({"includeCaptions": "yes"}, "includeCaptions"),
])
def test_bad_options(options: dict, message: str) -> None:
    assert re.search(message, refusal(job([], options=options)))


@pytest.mark.parametrize("duration", [0.2, 31, "3"])
def test_bad_step_duration(duration: object) -> None:
    assert re.search("durationSec", refusal(job([{"durationSec": duration}])))


# -- limits and URIs: one definition ------------------------------------------------------

def test_limits_are_the_schemas() -> None:
    schema = contract.SCHEMA
    step = schema["definitions"]["step"]["properties"]["durationSec"]
    options = schema["definitions"]["options"]["properties"]
    seconds = (contract.MIN_STEP_SECONDS, contract.MAX_STEP_SECONDS, contract.DEFAULT_STEP_SECONDS)
    assert seconds == (step["minimum"], step["maximum"], step["default"])
    assert schema["properties"]["previewRequest"]["properties"]["steps"]["maxItems"] == contract.MAX_STEPS
    assert (contract.MIN_FPS, contract.MAX_FPS, contract.DEFAULT_FPS) == (1, 60, 30)
    assert contract.FORMATS == tuple(options["format"]["enum"]) == ("mp4", "webm", "gif")
    # and a test that would notice the schema and the rules beyond it drifting apart
    too_many = job([{"durationSec": 1}] * (contract.MAX_STEPS + 1))
    assert "/previewRequest/steps" in refusal(too_many)
    width, height = (int(v) for v in contract.DEFAULT_RESOLUTION.split("x"))
    assert contract.resolution_problem(width, height) is None
    assert contract.resolution_problem(contract.MAX_WIDTH, contract.MAX_HEIGHT) is None


URIS = [
    "data:image/png;base64,iVBORw0KGgo=", "data:text/plain,hello", "s3://asset-bucket/img/a.png",
    "s3://other-bucket/a.png", "images/step-1.png", "shots/one shot.png", "a/./b.png",
    "http://169.254.169.254/latest", "https://example.com/a.png", "file:///etc/passwd", "/etc/passwd",
    "../secret.png", "a/../../b.png", "a/..", "ftp://host/x.png", "gopher://x", "C:/x.png", "1a:b/c.png",
    "s3://asset-bucket", "s3:///key", "\\\\host\\share",
]


@pytest.mark.parametrize("uri", URIS)
def test_the_schema_admits_no_uri_the_classifier_refuses(uri: str) -> None:
    pattern = contract.SCHEMA["definitions"]["asset"]["properties"]["uri"]["pattern"]
    schema_admits = re.search(pattern.replace("$", r"\Z"), uri) is not None
    try:
        classify_uri(uri)
        classifier_admits = True
    except UriRefused:
        classifier_admits = False
    assert classifier_admits or not schema_admits, uri


def test_uri_classification() -> None:
    assert classify_uri("s3://asset-bucket/img/a.png").bucket == "asset-bucket"
    assert classify_uri("s3://asset-bucket/img/a.png").key == "img/a.png"
    assert classify_uri("shots/one shot.png").parts == ("shots", "one shot.png")
    assert classify_uri("data:,x").kind == "data"
    for uri, reason in (("http://x/y", "'http' is not allowed"), ("/etc/passwd", "absolute path"),
                        ("a/../../b", "must stay inside"), ("s3://b", "s3://bucket/key")):
        with pytest.raises(UriRefused, match=reason):
            classify_uri(uri)


def test_the_worker_rechecks_only_the_configuration() -> None:
    document = job([], [{"id": "a", "type": "image", "uri": "s3://asset-bucket/a.png"}])
    assert contract.config_errors(document, SETTINGS) == []
    narrower = Settings.from_env({"PREVIEW_ASSET_BUCKETS": "other"})
    assert contract.config_errors(document, narrower) == [
        {"path": "/previewRequest/assets/0/uri", "message": "bucket 'asset-bucket' is not an allowed asset bucket"}]
    # a rule that configuration cannot change is admission's alone
    document["previewRequest"]["steps"] = [{"asset": "ghost"}]
    assert contract.config_errors(document, SETTINGS) == []


# -- the typed request --------------------------------------------------------------------

def test_request_applies_every_default() -> None:
    document = {"jobId": "j", "projectId": "p", "requestId": "r", "dryRun": True,
                "previewRequest": {"title": "  ", "steps": [{"text": "x"}], "assets": [], "audio": {}}}
    request = JobRequest.from_payload(contract.validate_payload(copy.deepcopy(document), SETTINGS))
    assert (request.width, request.height, request.fps, request.format) == (1280, 720, 30, "mp4")
    assert request.include_captions is True and request.music_volume == 0.3 and request.priority == "normal"
    assert request.title is None  # blank texts are no text
    assert [(s.duration_ms, s.text, s.asset) for s in request.steps] == [(3000, "x", None)]
    assert request.video_ms == 3000
    document["previewRequest"]["steps"] = []
    assert JobRequest.from_payload(document).video_ms == contract.TITLE_CARD_SECONDS * 1000


def unreadable(document: dict[str, Any]) -> str:
    """What the typed read of a stored payload refuses, one `path: message` per line."""
    with pytest.raises(InvalidPayload) as caught:
        JobRequest.from_payload(document)
    return "\n".join(f"{e['path']}: {e['message']}" for e in caught.value.errors)


@pytest.mark.parametrize(("steps", "assets", "audio", "options", "message"), [
    # what the planner refused before it only laid out timelines
    ([{"asset": "nope"}], [], {}, {}, "unknown asset id 'nope'"),
    ([{"asset": "snd"}], [{"id": "snd", "type": "audio", "uri": "x.wav"}], {}, {}, "expected 'image'"),
    ([], [{"id": "pic", "type": "image", "uri": "x.png"}], {"narration": "pic"}, {}, "expected 'audio'"),
    ([], [{"id": "a", "type": "image", "uri": "x"}, {"id": "a", "type": "image", "uri": "y"}], {}, {},
     "more than one asset"),
    ([], [], {}, {"resolution": "1281x720"}, "even"), ([], [], {}, {"resolution": "2560x1440"}, "maximum"),
    ([], [], {}, {"resolution": "10x10"}, "minimum"), ([], [], {}, {"resolution": "big"}, "look like"),
    ([{"durationSec": 30}] * 20 + [{"durationSec": 0.5}], [], {}, {}, "exceeds 600 s"),
    ([], [], {}, {"format": "avi"}, "format"), ([], [], {}, {"fps": 0}, "fps"), ([], [], {}, {"fps": 61}, "fps"),
    ([], [], {}, {"fps": True}, "fps"), ([], [], {}, {"fps": 30.0}, "fps"),
    ([], [], {}, {"includeCaptions": "false"}, "includeCaptions"),
    ([{"durationSec": 0.2}], [], {}, {}, "durationSec"), ([{"durationSec": "3"}], [], {}, {}, "durationSec"),
    ([{"title": 123}], [], {}, {}, "/previewRequest/steps/0/title"),
    ([], [], {"musicVolume": 7}, {}, "musicVolume"),
    ([], [{"id": "v", "type": "video", "uri": "x"}], {}, {}, "/previewRequest/assets/0/type"),
    ([], [{"id": "v", "type": "image", "uri": "/etc/passwd"}], {}, {}, "absolute path"),
    ([{}] * 101, [], {}, {}, "maximum of 100"),
])
def test_a_stored_payload_must_read_as_a_valid_request(steps: list, assets: list, audio: dict, options: dict,
                                                      message: str) -> None:
    # A job that reached the queue some other way than admission fails for a reason, in the
    # worker as at admission, instead of rendering wrongly or crashing on every attempt.
    assert re.search(message, unreadable(job(steps, assets, audio, options)))


def test_a_stored_payload_with_an_unsafe_id_is_refused() -> None:
    assert unreadable({**job([]), "projectId": "../x"}).startswith("/projectId: ")
    assert "/projectId: " in unreadable({"jobId": "j"})
    assert unreadable([]).startswith("/: ")
