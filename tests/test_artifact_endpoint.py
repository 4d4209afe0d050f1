"""A rendered job's artifacts through the job_artifact handler: local signed URLs and
presigned S3 URLs (moto), each listing every file of container.json."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from moto import mock_aws

from shared import wiring
from shared.artifacts.local import LocalStore
from tests.conftest import load_event
from tests.handlers import apply_given, body, invoke, invoke_fixture

# container.json lists every other file (it cannot hold its own digest); it has its own URL.
EXPECTED_FILES = ["captions.vtt", "poster.png", "preview.json", "preview.mp4"]


def test_local_store_urls_are_signed_and_expire(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREVIEW_URL_TTL_SECONDS", "120")
    wiring.reset()
    apply_given(["enqueue:render", "render:preview-job-0003"])
    # The success fixture asks for preview-job-0002; ask for the rendered one instead.
    event = load_event("job_artifact", "success")
    event["pathParameters"] = {"jobId": "preview-job-0003"}
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/api/preview/job/preview-job-0003/artifact"
    response = invoke("job_artifact", event)
    assert response["statusCode"] == 200, response["body"]
    document = body(response)
    assert sorted(f["name"] for f in document["files"]) == EXPECTED_FILES
    main = urlsplit(document["url"])
    assert main.path == "/artifacts/previews/proj-mobius-123/preview-job-0003/preview.mp4"
    assert main.netloc == "abc123.execute-api.us-east-1.amazonaws.com"
    query = parse_qs(main.query)
    store = LocalStore(wiring.services().settings.data_dir)
    granted = store.verify(main.path, query["expires"][0], query["sig"][0])
    assert granted is not None and granted.read_bytes()[4:8] == b"ftyp"
    # The listed size and digest are the file's
    entry = next(f for f in document["files"] if f["name"] == "preview.mp4")
    assert entry["bytes"] == granted.stat().st_size and entry["contentType"] == "video/mp4"
    # A tampered signature or an expired link grants nothing
    assert store.verify(main.path, query["expires"][0], "0" * 64) is None
    assert store.verify(main.path, query["expires"][0], query["sig"][0], now=int(query["expires"][0]) + 1) is None
    assert document["expiresAt"].endswith("Z")
    manifest_url = urlsplit(document["manifestUrl"])
    manifest = store.verify(manifest_url.path, *(parse_qs(manifest_url.query)[k][0] for k in ("expires", "sig")))
    assert manifest is not None
    assert sorted(f["name"] for f in json.loads(manifest.read_text())["files"]) == EXPECTED_FILES


@pytest.fixture
def s3_bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="preview-artifacts-test")
        monkeypatch.setenv("ARTIFACT_BUCKET", "preview-artifacts-test")
        wiring.reset()
        yield "preview-artifacts-test"


def test_s3_store_gives_presigned_urls(redis_url: str, s3_bucket: str, tmp_path: Path) -> None:
    apply_given(["enqueue:success", "render:preview-job-0002"])
    response = invoke_fixture("job_artifact", "success")
    assert response["statusCode"] == 200, response["body"]
    document = body(response)
    # A dry run publishes only the plan and the manifest
    assert [f["name"] for f in document["files"]] == ["preview.json"]
    url = urlsplit(document["url"])
    assert s3_bucket in url.netloc + url.path
    assert url.path.endswith("/previews/proj-mobius-123/preview-job-0002/preview.json")
    assert "X-Amz-Signature" in url.query or "Signature" in url.query
    client = boto3.client("s3", region_name="us-east-1")
    key = "previews/proj-mobius-123/preview-job-0002/container.json"
    manifest = json.loads(client.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
    assert [f["name"] for f in manifest["files"]] == ["preview.json"]
    assert document["manifestUrl"].split("?")[0].endswith(key)
    # Nothing was written to the local folder
    assert not (wiring.services().settings.data_dir / "previews").exists()


def test_missing_artifacts_are_a_404_not_a_500(redis_url: str, s3_bucket: str) -> None:
    apply_given(["enqueue:success", "render:preview-job-0002"])
    boto3.client("s3", region_name="us-east-1").delete_object(
        Bucket=s3_bucket, Key="previews/proj-mobius-123/preview-job-0002/container.json")
    response = invoke_fixture("job_artifact", "success")
    assert response["statusCode"] == 404
    assert "no longer available" in body(response)["message"]
