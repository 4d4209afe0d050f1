"""Artifact stores: atomic local publish, signed URLs, S3 publish order and presigning (moto)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from moto import mock_aws

from shared.artifacts import build_store, files
from shared.artifacts.layout import build_manifest, describe_files, manifest_bytes
from shared.artifacts.local import LocalStore
from shared.artifacts.s3 import S3Store
from shared.errors import ConfigError, RenderError, StoreUnavailable, TransientRenderError
from shared.settings import Settings


def make_render_dir(path: Path, marker: str, video_bytes: int = 2000) -> Path:
    """A folder shaped like a render's output, with content that differs per `marker`."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "preview.mp4").write_bytes(marker.encode() * (video_bytes // len(marker)))
    (path / "poster.png").write_bytes(b"png-" + marker.encode())
    (path / "preview.json").write_text(json.dumps({"marker": marker}))
    manifest = build_manifest("proj-1", "job-1", describe_files(path))
    (path / "container.json").write_bytes(manifest_bytes(manifest))
    return path


def url_parts(url: str) -> tuple[str, str, str]:
    split = urlsplit(url)
    query = parse_qs(split.query)
    return split.path, query["expires"][0], query["sig"][0]


# --------------------------------------------------------------------------- local store


def test_local_publish_and_read(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data", "s3cret")
    src = make_render_dir(tmp_path / "render", "first")
    manifest = store.publish("proj-1", "job-1", src)
    assert manifest == json.loads((src / "container.json").read_text())
    assert store.read_manifest("proj-1", "job-1") == manifest
    published = tmp_path / "data" / "previews" / "proj-1" / "job-1"
    assert sorted(p.name for p in published.iterdir()) == sorted(p.name for p in src.iterdir())
    for entry in manifest["files"]:
        assert hashlib.sha256((published / entry["name"]).read_bytes()).hexdigest() == entry["sha256"]
    assert (published / "container.json").read_bytes() == (src / "container.json").read_bytes()
    assert store.read_manifest("proj-1", "other-job") is None
    assert store.read_manifest("other-proj", "job-1") is None


def test_local_publish_builds_manifest_when_missing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data", "s3cret")
    src = make_render_dir(tmp_path / "render", "x")
    (src / "container.json").unlink()
    manifest = store.publish("proj-1", "job-1", src)
    assert [f["name"] for f in manifest["files"]] == ["poster.png", "preview.json", "preview.mp4"]
    assert store.read_manifest("proj-1", "job-1") == manifest


@pytest.mark.parametrize("atomic_exchange", [True, False])
def test_local_republish_replaces_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          atomic_exchange: bool) -> None:
    if not atomic_exchange:  # platforms without renameat2: rename aside, rename in
        monkeypatch.setattr(files, "exchange", lambda a, b: False)
    store = LocalStore(tmp_path / "data", "s3cret")
    store.publish("proj-1", "job-1", make_render_dir(tmp_path / "a", "first"))
    second = make_render_dir(tmp_path / "b", "second")
    (second / "preview.mp4").rename(second / "preview.webm")
    manifest = build_manifest("proj-1", "job-1", describe_files(second))
    (second / "container.json").write_bytes(manifest_bytes(manifest))
    store.publish("proj-1", "job-1", second)
    project = tmp_path / "data" / "previews" / "proj-1"
    assert sorted(p.name for p in project.iterdir() if not p.name.startswith(".lock")) == ["job-1"]
    assert sorted(p.name for p in (project / "job-1").iterdir()) == [
        "container.json", "poster.png", "preview.json", "preview.webm"]  # nothing left of the old set
    assert json.loads((project / "job-1" / "preview.json").read_text()) == {"marker": "second"}


def test_failed_publish_keeps_previous_set(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data", "s3cret")
    store.publish("proj-1", "job-1", make_render_dir(tmp_path / "a", "first"))
    broken = make_render_dir(tmp_path / "b", "second")
    (broken / "poster.png").write_bytes(b"a different size than the manifest says")
    with pytest.raises(RenderError, match="poster.png"):
        store.publish("proj-1", "job-1", broken)
    (broken / "poster.png").unlink()
    with pytest.raises(FileNotFoundError):
        store.publish("proj-1", "job-1", broken)
    project = tmp_path / "data" / "previews" / "proj-1"
    assert [p.name for p in project.iterdir() if p.name.startswith(".tmp")] == []
    assert json.loads((project / "job-1" / "preview.json").read_text()) == {"marker": "first"}


def test_reader_never_sees_a_partial_set(tmp_path: Path) -> None:
    """Republish repeatedly while another thread reads through the public path: whenever
    container.json is readable, every file it lists is there with the listed content, unless a
    newer set replaced the whole folder during that read (then the manifest changed too)."""
    store = LocalStore(tmp_path / "data", "s3cret")
    sources = [make_render_dir(tmp_path / f"src-{i}", f"version-{i}", 100_000 + i) for i in range(25)]
    store.publish("proj-1", "job-1", sources[0])
    folder = tmp_path / "data" / "previews" / "proj-1" / "job-1"
    stop = threading.Event()
    problems: list[str] = []
    consistent_reads = 0
    absent = 0

    def reader() -> None:
        nonlocal consistent_reads, absent
        while not stop.is_set():
            try:
                before = (folder / "container.json").read_bytes()
            except FileNotFoundError:
                absent += 1
                continue
            trouble = []
            for entry in json.loads(before)["files"]:
                try:
                    data = (folder / entry["name"]).read_bytes()
                except FileNotFoundError:
                    trouble.append(f"{entry['name']} missing")
                    continue
                if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                    trouble.append(f"{entry['name']} does not match")
            try:
                replaced = (folder / "container.json").read_bytes() != before
            except FileNotFoundError:
                replaced = True
            if not replaced:
                problems.extend(trouble)
                consistent_reads += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for src in sources[1:]:
            store.publish("proj-1", "job-1", src)
    finally:
        stop.set()
        thread.join()
    assert not problems, problems[:3]
    assert consistent_reads > 0
    (tmp_path / "probe-a").mkdir()
    (tmp_path / "probe-b").mkdir()
    if files.exchange(tmp_path / "probe-a", tmp_path / "probe-b"):
        assert absent == 0  # atomic exchange supported here: the folder never went missing


def test_concurrent_publishers_of_one_job(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data", "s3cret")
    sources = [make_render_dir(tmp_path / f"src-{i}", f"v{i}") for i in range(4)]
    errors: list[BaseException] = []

    def publish(src: Path) -> None:
        try:
            for _ in range(10):
                store.publish("proj-1", "job-1", src)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(src,)) for src in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    manifest = store.read_manifest("proj-1", "job-1")
    assert manifest is not None
    project = tmp_path / "data" / "previews" / "proj-1"
    assert sorted(p.name for p in project.iterdir()) == [".lock", "job-1"]


def test_signed_url_round_trip(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data", "s3cret")
    store.publish("proj-1", "job-1", make_render_dir(tmp_path / "render", "first"))
    url, expires_at = store.signed_url("proj-1", "job-1", "preview.mp4", 60, "http://localhost:3000/")
    assert url.startswith("http://localhost:3000/artifacts/previews/proj-1/job-1/preview.mp4?expires=")
    path, expires, sig = url_parts(url)
    assert int(expires) == int(expires_at.timestamp()) and expires_at.tzinfo is not None
    assert abs(int(expires) - (time.time() + 60)) < 5
    granted = store.verify(path, expires, sig)
    assert granted == (tmp_path / "data" / "previews" / "proj-1" / "job-1" / "preview.mp4").resolve()
    assert store.verify(path.removeprefix("/artifacts/"), expires, sig) == granted

    relative, _ = store.signed_url("proj-1", "job-1", "poster.png", 60, None)
    assert relative.startswith("/artifacts/previews/proj-1/job-1/poster.png?")
    assert store.verify(*url_parts(relative)) is not None


def test_signed_url_refusals(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data", "s3cret")
    store.publish("proj-1", "job-1", make_render_dir(tmp_path / "render", "first"))
    path, expires, sig = url_parts(store.signed_url("proj-1", "job-1", "preview.mp4", 60, None)[0])

    assert store.verify(path, expires, sig, now=int(expires) + 1) is None  # expired
    assert store.verify(path, str(int(expires) + 3600), sig) is None  # expiry extended
    assert store.verify(path, expires, sig[:-1] + ("0" if sig[-1] != "0" else "1")) is None  # tampered
    assert store.verify(path.replace("preview.mp4", "poster.png"), expires, sig) is None  # other file
    assert store.verify(path, expires, "") is None
    assert store.verify(path, "soon", sig) is None
    assert store.verify(path, expires, "\u00e9" * 64) is None
    assert LocalStore(tmp_path / "data", "another secret").verify(path, expires, sig) is None

    # traversal attempts never reach the file system, even with a valid-looking signature
    secret_file = tmp_path / "data" / ".url-secret"
    for evil in ("/artifacts/previews/proj-1/../../.url-secret", "/artifacts/previews/proj-1/job-1/../../../x",
                 "/artifacts/previews/%2e%2e/job-1/x", "/artifacts/../previews/proj-1/job-1/preview.mp4",
                 "/artifacts/previews/proj-1/job-1/preview.mp4/extra", "/artifacts/other/proj-1/job-1/a"):
        relative = evil.removeprefix("/artifacts/")
        forged = store.signer._signature(relative, int(expires))
        assert store.verify(evil, expires, forged) is None, evil
    assert not secret_file.exists()

    # a symlink planted in the previews folder does not lead outside it
    outside = tmp_path / "outside.txt"
    outside.write_text("private")
    link = tmp_path / "data" / "previews" / "proj-1" / "job-1" / "leak.txt"
    link.symlink_to(outside)
    leak_url, _ = store.signed_url("proj-1", "job-1", "leak.txt", 60, None)
    assert store.verify(*url_parts(leak_url)) is None

    missing_url, _ = store.signed_url("proj-1", "job-1", "nothing.png", 60, None)
    assert store.verify(*url_parts(missing_url)) is None
    with pytest.raises(ValueError):
        store.signed_url("proj-1", "job-1", "../x", 60, None)
    with pytest.raises(ValueError):
        store.signed_url("..", "job-1", "preview.mp4", 60, None)


def test_generated_secret_is_private_and_shared(tmp_path: Path) -> None:
    data = tmp_path / "data"
    results: list[bytes] = []

    def create() -> None:
        results.append(LocalStore(data).signer._key())

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results[0]) == 64
    mode = stat.S_IMODE((data / ".url-secret").stat().st_mode)
    assert mode == 0o600
    assert [p.name for p in data.iterdir()] == [".url-secret"]  # no temp files left behind

    first, _ = LocalStore(data).signed_url("p", "j", "a.png", 60, None)
    assert LocalStore(data).verify(*url_parts(first)) is None  # no such file, but...
    assert LocalStore(data).signer._signature("previews/p/j/a.png", 1) == LocalStore(data).signer._signature(
        "previews/p/j/a.png", 1)  # ...every instance signs alike


def test_local_delete(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data", "s3cret")
    store.publish("proj-1", "job-1", make_render_dir(tmp_path / "render", "first"))
    store.delete("proj-1", "job-1")
    assert store.read_manifest("proj-1", "job-1") is None
    assert [p.name for p in (tmp_path / "data" / "previews" / "proj-1").iterdir()] == [".lock"]
    store.delete("proj-1", "job-1")  # already gone: fine
    store.delete("never", "seen")


DAY = 86_400


def age(path: Path, seconds: float) -> None:
    """Make `path` look `seconds` old."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_local_store_prunes_previews_past_retention(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data", "s3cret", retention_seconds=7 * DAY)
    for project, job in (("proj-1", "old"), ("proj-1", "new"), ("proj-2", "old")):
        store.publish(project, job, make_render_dir(tmp_path / f"render-{project}-{job}", job))
    age(store.job_dir("proj-1", "old") / "container.json", 8 * DAY)
    age(store.job_dir("proj-2", "old") / "container.json", 8 * DAY)
    age(store.job_dir("proj-1", "new") / "container.json", 6 * DAY)
    # What a killed publisher or deleter leaves: swept after an hour, not before.
    stale = store.root / "proj-1" / ".tmp-job-x-stale"
    fresh = store.root / "proj-1" / ".tmp-job-y-fresh"
    for leftover in (stale, fresh):
        leftover.mkdir()
        (leftover / "preview.mp4").write_bytes(b"partial")
    age(stale, 2 * 3600)

    assert sorted(store.prune()) == ["proj-1/old", "proj-2/old"]
    assert store.read_manifest("proj-1", "old") is None and store.read_manifest("proj-2", "old") is None
    assert store.read_manifest("proj-1", "new") is not None
    assert not stale.exists() and fresh.exists()
    assert store.prune() == []


def test_a_rerender_restarts_the_clock(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data", "s3cret", retention_seconds=DAY)
    store.publish("proj-1", "job-1", make_render_dir(tmp_path / "render-1", "first"))
    age(store.job_dir("proj-1", "job-1") / "container.json", 2 * DAY)
    store.publish("proj-1", "job-1", make_render_dir(tmp_path / "render-2", "second"))
    assert store.prune() == []
    assert store.read_manifest("proj-1", "job-1") is not None


def test_publish_prunes_at_most_hourly_and_zero_keeps_everything(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data", "s3cret", retention_seconds=DAY)
    store.publish("proj-1", "old", make_render_dir(tmp_path / "render-old", "old"))
    age(store.job_dir("proj-1", "old") / "container.json", 2 * DAY)
    # A new store (a restarted worker) prunes on its first publish...
    store = LocalStore(tmp_path / "data", "s3cret", retention_seconds=DAY)
    store.publish("proj-1", "a", make_render_dir(tmp_path / "render-a", "a"))
    assert store.read_manifest("proj-1", "old") is None
    # ...then not again within the hour.
    age(store.job_dir("proj-1", "a") / "container.json", 2 * DAY)
    store.publish("proj-1", "b", make_render_dir(tmp_path / "render-b", "b"))
    assert store.read_manifest("proj-1", "a") is not None

    keep = LocalStore(tmp_path / "data", "s3cret", retention_seconds=0)
    keep.publish("proj-1", "c", make_render_dir(tmp_path / "render-c", "c"))
    assert keep.prune() == [] and keep.read_manifest("proj-1", "a") is not None


def test_retention_comes_from_settings(tmp_path: Path) -> None:
    store = build_store(Settings.from_env({"DATA_DIR": str(tmp_path), "PREVIEW_ARTIFACT_RETENTION_DAYS": "3"}))
    assert isinstance(store, LocalStore) and store.retention_seconds == 3 * DAY
    default = build_store(Settings.from_env({"DATA_DIR": str(tmp_path)}))
    assert isinstance(default, LocalStore) and default.retention_seconds == 7 * DAY
    with pytest.raises(ConfigError, match="PREVIEW_ARTIFACT_RETENTION_DAYS"):
        Settings.from_env({"PREVIEW_ARTIFACT_RETENTION_DAYS": "-1"})


def test_get_store_selection(tmp_path: Path) -> None:
    local = build_store(Settings.from_env({"DATA_DIR": str(tmp_path)}))
    assert isinstance(local, LocalStore) and local.root == tmp_path / "previews"
    remote = build_store(Settings.from_env({"DATA_DIR": str(tmp_path), "ARTIFACT_BUCKET": "previews-bucket"}))
    assert isinstance(remote, S3Store) and remote.bucket == "previews-bucket"


# --------------------------------------------------------------------------- S3 store


class Recording:
    """Forwards to a real (moto) client and records the keys written, in order."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.put_keys: list[str] = []

    def put_object(self, **kwargs: Any) -> Any:
        self.put_keys.append(kwargs["Key"])
        return self.client.put_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


@pytest.fixture
def s3_client(aws_env: None) -> Any:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="previews-bucket")
        yield client


def test_s3_publish_and_read(s3_client: Any, tmp_path: Path) -> None:
    recording = Recording(s3_client)
    store = S3Store("previews-bucket", client=recording)
    src = make_render_dir(tmp_path / "render", "first")
    manifest = store.publish("proj-1", "job-1", src)
    assert recording.put_keys[-1] == "previews/proj-1/job-1/container.json"
    assert sorted(recording.put_keys[:-1]) == [
        "previews/proj-1/job-1/poster.png", "previews/proj-1/job-1/preview.json", "previews/proj-1/job-1/preview.mp4"]
    assert store.read_manifest("proj-1", "job-1") == manifest
    head = s3_client.head_object(Bucket="previews-bucket", Key="previews/proj-1/job-1/preview.mp4")
    assert head["ContentType"] == "video/mp4" and head["ContentLength"] == 2000
    body = s3_client.get_object(Bucket="previews-bucket", Key="previews/proj-1/job-1/container.json")["Body"]
    assert body.read() == (src / "container.json").read_bytes()
    assert store.read_manifest("proj-1", "missing") is None


def test_s3_presigned_url(s3_client: Any) -> None:
    store = S3Store("previews-bucket", client=s3_client)
    url, expires_at = store.signed_url("proj-1", "job-1", "preview.mp4", 900, "http://ignored")
    assert "previews-bucket" in url and "previews/proj-1/job-1/preview.mp4" in url
    assert "X-Amz-Expires=900" in url or "Expires=" in url
    assert abs(expires_at.timestamp() - (time.time() + 900)) < 5


def test_s3_delete(s3_client: Any, tmp_path: Path) -> None:
    store = S3Store("previews-bucket", client=s3_client)
    store.publish("proj-1", "job-1", make_render_dir(tmp_path / "render", "first"))
    store.delete("proj-1", "job-1")
    assert store.read_manifest("proj-1", "job-1") is None
    listed = s3_client.list_objects_v2(Bucket="previews-bucket", Prefix="previews/")
    assert listed.get("KeyCount", 0) == 0


def test_s3_client_created_lazily_under_moto(aws_env: None, tmp_path: Path) -> None:
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="previews-bucket")
        store = build_store(Settings.from_env({"DATA_DIR": str(tmp_path), "ARTIFACT_BUCKET": "previews-bucket"}))
        manifest = store.publish("proj-1", "job-1", make_render_dir(tmp_path / "render", "first"))
        assert store.read_manifest("proj-1", "job-1") == manifest


class Broken:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def put_object(self, **_: Any) -> None:
        raise self.error

    def get_object(self, **_: Any) -> None:
        raise self.error

    def delete_object(self, **_: Any) -> None:
        raise self.error


def test_s3_errors(tmp_path: Path) -> None:
    src = make_render_dir(tmp_path / "render", "first")
    outage = Broken(EndpointConnectionError(endpoint_url="https://s3.amazonaws.com"))
    with pytest.raises(TransientRenderError):
        S3Store("b", client=outage).publish("proj-1", "job-1", src)
    with pytest.raises(StoreUnavailable):
        S3Store("b", client=outage).read_manifest("proj-1", "job-1")
    denied = Broken(ClientError({"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}},
                                "PutObject"))
    with pytest.raises(RenderError) as caught:
        S3Store("b", client=denied).publish("proj-1", "job-1", src)
    assert not isinstance(caught.value, TransientRenderError) and caught.value.retryable
    slow = Broken(ClientError({"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}},
                              "PutObject"))
    with pytest.raises(TransientRenderError):
        S3Store("b", client=slow).publish("proj-1", "job-1", src)
