"""Artifact stores: where finished previews live and how clients get a URL for them.

Layout (both stores): `previews/{projectId}/{jobId}/<files>`, with `container.json` listing
every other file. container.json is the commit marker: it exists only once the whole set is
in place, so a reader that finds it can trust every file it names.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from shared.errors import RenderError, StoreUnavailable, TransientRenderError
from shared.observability import logger
from shared.settings import Settings

MANIFEST = "container.json"
PREFIX = "previews"
# same rule as the payload ids: no '/', no leading '.', so no path or key injection
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")
CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".gif": "image/gif",
    ".png": "image/png",
    ".vtt": "text/vtt",
    ".json": "application/json",
}
# render outputs, used to clean up an S3 job folder whose manifest is gone
_KNOWN_NAMES = ("preview.mp4", "preview.webm", "preview.gif", "poster.png", "captions.vtt", "preview.json")


class ArtifactStore(Protocol):
    def publish(self, project_id: str, job_id: str, src_dir: Path) -> dict[str, Any]: ...

    def read_manifest(self, project_id: str, job_id: str) -> dict[str, Any] | None: ...

    def signed_url(self, project_id: str, job_id: str, name: str, ttl_seconds: int,
                   base_url: str | None) -> tuple[str, datetime]: ...

    def delete(self, project_id: str, job_id: str) -> None: ...


def content_type(name: str) -> str:
    return CONTENT_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe_files(directory: Path, names: list[str] | None = None) -> list[dict[str, Any]]:
    """name, bytes, contentType, sha256 of each file (default: every regular file except the
    manifest), sorted by name."""
    if names is None:
        names = [p.name for p in directory.iterdir() if p.is_file() and p.name != MANIFEST]
    entries = []
    for name in sorted(names):
        path = directory / name
        entries.append({
            "name": name,
            "bytes": path.stat().st_size,
            "contentType": content_type(name),
            "sha256": sha256_file(path),
        })
    return entries


def build_manifest(project_id: str, job_id: str, files: list[dict[str, Any]]) -> dict[str, Any]:
    return {"jobId": job_id, "projectId": project_id, "files": files}


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _SAFE_NAME.match(value):
        raise ValueError(f"invalid {what}: {value!r}")
    return value


def _source_manifest(project_id: str, job_id: str, src_dir: Path) -> tuple[dict[str, Any], bytes]:
    """The manifest to publish: src_dir's container.json as is, or one built from its files."""
    path = src_dir / MANIFEST
    if path.is_file():
        raw = path.read_bytes()
        manifest = json.loads(raw)
    else:
        manifest = build_manifest(project_id, job_id, describe_files(src_dir))
        raw = manifest_bytes(manifest)
    for entry in manifest["files"]:
        name = _check_name(entry["name"], "artifact name")
        size = (src_dir / name).stat().st_size
        if size != entry["bytes"]:
            raise RenderError(f"{name} is {size} bytes but the manifest says {entry['bytes']}")
    return manifest, raw


# --------------------------------------------------------------------------- local folder


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_synced(src: Path, dst: Path) -> None:
    with src.open("rb") as reader, dst.open("wb") as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)
        writer.flush()
        os.fsync(writer.fileno())


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as writer:
        writer.write(data)
        writer.flush()
        os.fsync(writer.fileno())


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@functools.cache
def _renameat2() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one atomic step (Linux renameat2 RENAME_EXCHANGE), so the
    published path always names a complete set. False where unsupported; the caller then falls
    back to two renames, which leaves the path briefly absent (still never half-written)."""
    function = _renameat2()
    if function is None:
        return False
    if function(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(code, os.strerror(code), str(b))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock: two workers publishing the same job (at-least-once delivery)
    take turns at the rename step instead of tripping over each other's directories."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class LocalStore:
    """Artifacts under `DATA_DIR/previews`, served by the emulator through signed URLs."""

    # Pruning runs from publish, at most this often per store.
    PRUNE_INTERVAL_SECONDS = 3600
    # Staging and removal folders a killed process left behind are swept after this long.
    LEFTOVER_SECONDS = 3600

    def __init__(self, data_dir: Path, url_secret: str = "", retention_seconds: int = 0) -> None:
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / PREFIX
        self._secret = url_secret.encode("utf-8") if url_secret else None
        self.retention_seconds = retention_seconds
        self._next_prune = 0.0
        self._prune_lock = threading.Lock()

    def job_dir(self, project_id: str, job_id: str) -> Path:
        return self.root / _check_name(project_id, "projectId") / _check_name(job_id, "jobId")

    def publish(self, project_id: str, job_id: str, src_dir: Path) -> dict[str, Any]:
        final = self.job_dir(project_id, job_id)
        manifest, raw = _source_manifest(project_id, job_id, Path(src_dir))
        project_dir = final.parent
        project_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{job_id}-", dir=project_dir))
        try:
            for entry in manifest["files"]:
                _copy_synced(Path(src_dir) / entry["name"], staging / entry["name"])
            _write_synced(staging / MANIFEST, raw)
            os.chmod(staging, 0o755)  # mkdtemp makes it 0700; the set should read like any folder
            _fsync_dir(staging)
            old: Path | None = None
            with _locked(project_dir / ".lock"):
                if final.exists():
                    if _exchange(staging, final):
                        old = staging  # now holds the previous set; the path never went missing
                    else:
                        old = project_dir / f".old-{job_id}-{uuid.uuid4().hex}"
                        os.rename(final, old)
                        os.rename(staging, final)
                else:
                    os.rename(staging, final)
                _fsync_dir(project_dir)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._maybe_prune()
        return manifest

    def _maybe_prune(self) -> None:
        if not self.retention_seconds or time.monotonic() < self._next_prune:
            return
        if not self._prune_lock.acquire(blocking=False):
            return  # another thread of this process is at it
        try:
            self._next_prune = time.monotonic() + self.PRUNE_INTERVAL_SECONDS
            self.prune()
        except OSError as exc:  # a full or read-only disk must not fail the job that published
            logger.warning("pruning old previews failed", extra={"error": str(exc)})
        finally:
            self._prune_lock.release()

    def prune(self, now: float | None = None) -> list[str]:
        """Delete previews published more than `retention_seconds` ago (like the S3 lifecycle
        rule) and staging folders a killed process left. Returns `project/job` of each preview
        deleted. Age is the manifest's: a re-render of the same job starts it again."""
        now = time.time() if now is None else now
        removed: list[str] = []
        if not self.root.is_dir():
            return removed
        for project_dir in self.root.iterdir():
            if not project_dir.is_dir() or not _SAFE_NAME.match(project_dir.name):
                continue
            for entry in project_dir.iterdir():
                if entry.name.startswith((".tmp-", ".old-", ".del-")):
                    if now - (_mtime(entry) or now) > self.LEFTOVER_SECONDS:
                        shutil.rmtree(entry, ignore_errors=True)
                elif (self.retention_seconds and _SAFE_NAME.match(entry.name)
                      and self._remove(project_dir.name, entry.name, now - self.retention_seconds)):
                    removed.append(f"{project_dir.name}/{entry.name}")
        if removed:
            logger.info("pruned old previews", extra={"count": len(removed),
                                                      "retentionDays": self.retention_seconds / 86_400})
        return removed

    def _remove(self, project_id: str, job_id: str, published_before: float | None = None) -> bool:
        """Take one preview away in a single rename under the project's lock, then delete it at
        leisure. With `published_before`, only if it was published earlier (checked under the
        lock, so a re-render landing meanwhile is kept). True when something was removed."""
        final = self.job_dir(project_id, job_id)
        doomed = final.parent / f".del-{job_id}-{uuid.uuid4().hex}"
        with _locked(final.parent / ".lock"):
            if published_before is not None:
                # No manifest (never the case for a published set): the folder's own age.
                published = _mtime(final / MANIFEST) or _mtime(final)
                if published is None or published >= published_before:
                    return False
            try:
                os.rename(final, doomed)
            except FileNotFoundError:
                return False
        shutil.rmtree(doomed, ignore_errors=True)
        return True

    def read_manifest(self, project_id: str, job_id: str) -> dict[str, Any] | None:
        try:
            raw = (self.job_dir(project_id, job_id) / MANIFEST).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        result: dict[str, Any] = json.loads(raw)
        return result

    def delete(self, project_id: str, job_id: str) -> None:
        if self.job_dir(project_id, job_id).parent.is_dir():
            self._remove(project_id, job_id)

    # -- signed URLs

    def _secret_bytes(self) -> bytes:
        if self._secret is None:
            self._secret = _load_or_create_secret(self.data_dir / ".url-secret")
        return self._secret

    def _signature(self, path: str, expires: int) -> str:
        return hmac.new(self._secret_bytes(), f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def signed_url(self, project_id: str, job_id: str, name: str, ttl_seconds: int,
                   base_url: str | None) -> tuple[str, datetime]:
        path = f"{PREFIX}/{_check_name(project_id, 'projectId')}/{_check_name(job_id, 'jobId')}/" \
               f"{_check_name(name, 'artifact name')}"
        expires = int(time.time()) + int(ttl_seconds)
        url = f"{(base_url or '').rstrip('/')}/artifacts/{quote(path)}?expires={expires}" \
              f"&sig={self._signature(path, expires)}"
        return url, datetime.fromtimestamp(expires, tz=UTC)

    def signature_valid(self, path: str, expires: str | int, sig: str, now: float | None = None) -> bool:
        """Whether a signed URL is genuine and unexpired, whether or not its file exists."""
        relative = path.lstrip("/").removeprefix("artifacts/")
        try:
            expires_at = int(expires)
        except (TypeError, ValueError):
            return False
        if expires_at < (time.time() if now is None else now):
            return False
        expected = self._signature(relative, expires_at).encode()
        return hmac.compare_digest(expected, str(sig).lower().encode("utf-8", "replace"))

    def verify(self, path: str, expires: str | int, sig: str, now: float | None = None) -> Path | None:
        """The file a signed URL grants, or None when the signature is wrong, the URL has
        expired or the path does not name a file inside the previews folder. `path` is the URL
        path, with or without the leading `/artifacts/`."""
        relative = path.lstrip("/").removeprefix("artifacts/")
        parts = relative.split("/")
        if len(parts) != 4 or parts[0] != PREFIX or not all(_SAFE_NAME.match(p) for p in parts[1:]):
            return None
        if not self.signature_valid(relative, expires, sig, now):
            return None
        root = self.root.resolve()
        try:
            target = root.joinpath(*parts[1:]).resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not target.is_relative_to(root) or not target.is_file():
            return None
        return target


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except (FileNotFoundError, NotADirectoryError):
        return None


def _load_or_create_secret(path: Path) -> bytes:
    """Read the persisted URL secret, creating it once. Written to a private temp file then
    hard-linked into place: link() fails if another process got there first, and nobody ever
    reads a half-written secret."""
    try:
        existing = path.read_bytes().strip()
        if existing:
            return existing
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_hex(32).encode())
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    return path.read_bytes().strip()


# --------------------------------------------------------------------------- S3


class S3Store:
    """Artifacts in an S3 bucket, fetched through presigned URLs. Errors while publishing are
    render errors (the worker retries them); errors while reading are `StoreUnavailable` (503)."""

    def __init__(self, bucket: str, client: Any | None = None) -> None:
        self.bucket = bucket
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            from shared.render.s3 import make_s3_client

            self._client = make_s3_client()
        return self._client

    def key(self, project_id: str, job_id: str, name: str) -> str:
        return f"{PREFIX}/{_check_name(project_id, 'projectId')}/{_check_name(job_id, 'jobId')}/" \
               f"{_check_name(name, 'artifact name')}"

    def publish(self, project_id: str, job_id: str, src_dir: Path) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        from shared.render import s3

        manifest, raw = _source_manifest(project_id, job_id, Path(src_dir))
        try:
            # A previous set stops being published before its files are overwritten, so no
            # reader pairs an old manifest with new bytes.
            self.client.delete_object(Bucket=self.bucket, Key=self.key(project_id, job_id, MANIFEST))
            for entry in manifest["files"]:
                with (Path(src_dir) / entry["name"]).open("rb") as body:
                    self.client.put_object(Bucket=self.bucket, Key=self.key(project_id, job_id, entry["name"]),
                                           Body=body, ContentType=entry["contentType"])
            # last: its presence publishes the set
            self.client.put_object(Bucket=self.bucket, Key=self.key(project_id, job_id, MANIFEST),
                                   Body=raw, ContentType="application/json")
        except (BotoCoreError, ClientError) as exc:
            detail = s3.describe(exc)
            if s3.classify(exc) == "transient":
                raise TransientRenderError(f"artifact upload to s3://{self.bucket} failed: {detail}") from exc
            # access denied, missing bucket: configuration, not the payload; retry may succeed
            # once fixed, and the attempt limit bounds it
            raise RenderError(f"artifact upload to s3://{self.bucket} failed: {detail}") from exc
        return manifest

    def read_manifest(self, project_id: str, job_id: str) -> dict[str, Any] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        from shared.render import s3

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key(project_id, job_id, MANIFEST))
            with contextlib.closing(response["Body"]) as body:
                raw = body.read()
        except (BotoCoreError, ClientError) as exc:
            if s3.classify(exc) == "missing":
                return None
            raise StoreUnavailable(f"artifact store unavailable: {s3.describe(exc)}") from exc
        result: dict[str, Any] = json.loads(raw)
        return result

    def signed_url(self, project_id: str, job_id: str, name: str, ttl_seconds: int,
                   base_url: str | None) -> tuple[str, datetime]:
        """A presigned GET; `base_url` is irrelevant here (S3 serves the file itself)."""
        from botocore.exceptions import BotoCoreError

        del base_url
        key = self.key(project_id, job_id, name)
        expires_at = datetime.fromtimestamp(int(time.time()) + int(ttl_seconds), tz=UTC)
        try:
            url: str = self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=int(ttl_seconds))
        except BotoCoreError as exc:
            raise StoreUnavailable(f"cannot sign artifact URL: {exc}") from exc
        return url, expires_at

    def delete(self, project_id: str, job_id: str) -> None:
        """Manifest first (unpublishes the set), then the files it lists. Needs no ListBucket
        permission: the names come from the manifest, or the fixed render names without one."""
        from botocore.exceptions import BotoCoreError, ClientError

        from shared.render import s3

        manifest = self.read_manifest(project_id, job_id)
        names = [entry["name"] for entry in manifest["files"]] if manifest else list(_KNOWN_NAMES)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(project_id, job_id, MANIFEST))
            self.client.delete_objects(Bucket=self.bucket, Delete={
                "Objects": [{"Key": self.key(project_id, job_id, n)} for n in names], "Quiet": True})
        except (BotoCoreError, ClientError) as exc:
            raise StoreUnavailable(f"cannot delete artifacts: {s3.describe(exc)}") from exc


def get_store(settings: Settings) -> ArtifactStore:
    if settings.artifact_bucket:
        return S3Store(settings.artifact_bucket)
    return LocalStore(settings.data_dir, settings.url_secret, settings.artifact_retention_days * 86_400)
