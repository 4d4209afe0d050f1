"""Admission lets no bad job in: the inputs a fuzz run of the HTTP API and hand-made requests
found, sent as raw bodies through the enqueue handler against a real Redis, then read back
and run by the worker. Each one is either refused with a 400 naming its JSON Pointer, or
normalised and then rendered; none reaches a 500."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from typing import Any

import pytest

from shared.contract import MAX_JOB_PIXELS
from tests.conftest import load_event
from tests.handlers import body, invoke, run_worker_until_idle

JOB = {
    "jobId": "adm-1", "projectId": "proj-adm", "requestId": "req-adm-1", "dryRun": True,
    "previewRequest": {"title": "Admission", "steps": [{"title": "One", "durationSec": 1}], "assets": [],
                       "audio": {}, "options": {"resolution": "320x240"}},
}


def enqueue_text(text: str, **headers: str) -> dict[str, Any]:
    """POST a raw JSON text (so 6.0 stays 6.0 and escapes stay escapes)."""
    event = load_event("enqueue_job", "success")
    event["body"] = text
    event["headers"] = {**event["headers"], **headers}
    return invoke("enqueue_job", event)


def enqueue(document: dict[str, Any], **headers: str) -> dict[str, Any]:
    return enqueue_text(json.dumps(document), **headers)


def job_text(**replace: str) -> str:
    """JOB as JSON text, with placeholder strings swapped for raw JSON fragments."""
    text = json.dumps(JOB)
    for placeholder, fragment in replace.items():
        text = text.replace(json.dumps(placeholder), fragment)
    return text


def status(job_id: str = "adm-1") -> dict[str, Any]:
    event = load_event("job_status", "success")
    event["pathParameters"] = {"jobId": job_id}
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/api/preview/job/{job_id}/status"
    response = invoke("job_status", event)
    assert response["statusCode"] == 200, response["body"]
    document: dict[str, Any] = body(response)
    return document


def refusal(response: dict[str, Any]) -> list[str]:
    assert response["statusCode"] == 400, response["body"]
    document = body(response)
    assert document["error"] in ("invalid_payload", "invalid_request") and document["message"]
    return [e["path"] for e in document.get("errors", [])]


@pytest.mark.parametrize(("literal", "stored"), [("6.0", 6), ("1e1", 10), ("6", 6)])
def test_whole_attempts_as_a_float_are_stored_as_an_integer(redis_url: str, literal: str, stored: int) -> None:
    text = json.dumps({**JOB, "attempts": "ATTEMPTS"}).replace('"ATTEMPTS"', literal)
    assert enqueue_text(text)["statusCode"] == 202
    assert status()["attemptsMax"] == stored
    assert enqueue_text(text)["statusCode"] == 200  # the same body replays
    assert run_worker_until_idle()["processed"] == 1
    assert status()["state"] == "completed"


def test_whole_fps_as_a_float_renders_at_that_rate(redis_url: str) -> None:
    document = json.loads(json.dumps(JOB))
    document["previewRequest"]["options"]["fps"] = "FPS"
    assert enqueue_text(json.dumps(document).replace('"FPS"', "30.0"))["statusCode"] == 202
    # the integer and the float are one job: either body replays the other
    document["previewRequest"]["options"]["fps"] = 30
    assert enqueue(document)["statusCode"] == 200
    assert run_worker_until_idle()["processed"] == 1
    assert status()["state"] == "completed"


@pytest.mark.parametrize("literal", ["6.5", "-1.0", "26.0", "1e400"])
def test_numbers_that_are_not_whole_or_in_range_are_refused(redis_url: str, literal: str) -> None:
    text = json.dumps({**JOB, "attempts": "ATTEMPTS"}).replace('"ATTEMPTS"', literal)
    paths = refusal(enqueue_text(text))
    assert paths in (["/attempts"], [])  # 1e400 is refused while reading the body


@pytest.mark.parametrize(("placeholder", "fragment", "path"), [
    ("Admission", '"\\ud800"', "/previewRequest/title"),
    ("One", '"a\\udfffb"', "/previewRequest/steps/0/title"),
    ("proj-adm", '"\\ud83d"', "/projectId"),
])
def test_lone_surrogates_are_a_400_naming_their_pointer(redis_url: str, placeholder: str, fragment: str,
                                                         path: str) -> None:
    response = enqueue_text(job_text(**{placeholder: fragment}))
    assert refusal(response) == [path]
    assert "surrogate" in response["body"]


def test_a_lone_surrogate_in_a_property_name_is_a_400(redis_url: str) -> None:
    text = json.dumps({**JOB, "previewRequest": {**JOB["previewRequest"], "metadata": {"KEY": 1}}})
    assert refusal(enqueue_text(text.replace('"KEY"', '"\\udc00"'))) == ["/previewRequest/metadata"]


def test_a_surrogate_pair_is_fine(redis_url: str) -> None:
    assert enqueue_text(job_text(Admission='"\\ud83c\\udfac take one"'))["statusCode"] == 202


def test_integer_literals_past_the_digit_limit_are_a_400(redis_url: str) -> None:
    text = json.dumps({**JOB, "previewRequest": {**JOB["previewRequest"], "metadata": {"n": "N"}}})
    response = enqueue_text(text.replace('"N"', "9" * 5000))
    refusal(response)
    assert "more than 4300 digits" in body(response)["message"]
    assert enqueue_text(text.replace('"N"', "9" * 4000))["statusCode"] == 202


def png_header(width: int, height: int) -> bytes:
    """A PNG that states its dimensions and carries almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def with_images(images: list[bytes], shown: int | None = None) -> dict[str, Any]:
    document = json.loads(json.dumps(JOB))
    request = document["previewRequest"]
    request["assets"] = [{"id": f"i{n}", "type": "image",
                          "uri": "data:image/png;base64," + base64.b64encode(data).decode()}
                         for n, data in enumerate(images)]
    request["steps"] = [{"durationSec": 1, "asset": f"i{n}"} for n in range(len(images) if shown is None else shown)]
    return document


def test_the_decoded_pixel_budget_is_checked_at_admission(redis_url: str) -> None:
    # 22 distinct 6300x6300 pictures fit in a 245 KiB body: 873 megapixels to decode
    document = with_images([png_header(6300, 6300 + n) for n in range(22)])
    response = enqueue(document)
    assert refusal(response) == ["/previewRequest/assets"]
    assert f"budget of {MAX_JOB_PIXELS // 1_000_000} per job" in response["body"]
    # only the images the steps show count
    assert enqueue(with_images([png_header(6300, 6300 + n) for n in range(22)], shown=12))["statusCode"] == 202


def test_one_image_over_the_limit_or_not_an_image_is_refused_at_admission(redis_url: str) -> None:
    response = enqueue(with_images([png_header(64, 64), png_header(8000, 6000)]))
    assert refusal(response) == ["/previewRequest/assets/1/uri"]
    assert "8000x6000, more than 40 megapixels" in response["body"]
    not_a_picture = with_images([png_header(64, 64)])
    not_a_picture["previewRequest"]["assets"][0]["uri"] = "data:image/png;base64," + base64.b64encode(b"hello").decode()
    assert refusal(enqueue(not_a_picture)) == ["/previewRequest/assets/0/uri"]
    broken = with_images([png_header(64, 64)])
    broken["previewRequest"]["assets"][0]["uri"] = "data:image/png;base64,@@@@"
    assert refusal(enqueue(broken)) == ["/previewRequest/assets/0/uri"]


@pytest.mark.parametrize("host", ['evil.example"><script>', "evil.example", "attacker.test:443"])
def test_a_forged_host_never_reaches_the_urls(redis_url: str, host: str) -> None:
    response = enqueue(JOB, host=host)
    assert response["statusCode"] == 202
    document = body(response)
    origin = "https://abc123.execute-api.us-east-1.amazonaws.com"
    assert document["statusUrl"] == f"{origin}/api/preview/job/adm-1/status"
    assert document["artifactUrl"].startswith(origin) and "evil" not in response["body"]


def test_a_domain_name_that_is_no_host_gives_relative_urls(redis_url: str) -> None:
    event = load_event("enqueue_job", "success")
    event["body"] = json.dumps(JOB)
    event["requestContext"]["domainName"] = 'evil.example"><script>'
    document = body(invoke("enqueue_job", event))
    assert document["statusUrl"] == "/api/preview/job/adm-1/status"


def test_an_overlong_value_is_not_echoed_whole(redis_url: str) -> None:
    response = enqueue({**JOB, "previewRequest": {**JOB["previewRequest"], "title": "x" * 20_000}})
    assert refusal(response) == ["/previewRequest/title"]
    assert len(response["body"]) < 600 and "20000 characters, at most 200" in response["body"]
