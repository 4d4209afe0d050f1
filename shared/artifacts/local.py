"""Artifacts under `DATA_DIR/previews`, served by the emulator through signed URLs."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from shared.artifacts import files, layout
from shared.artifacts.signing import UrlSigner, relative_path
from shared.contract import is_id
from shared.observability import logger


class LocalStore:
    """Each preview is a folder, published by a swap so a reader never sees half a set."""

    # Pruning runs from publish, at most this often per store.
    PRUNE_INTERVAL_SECONDS = 3600
    # Staging and removal folders a killed process left behind are swept after this long.
    LEFTOVER_SECONDS = 3600

    def __init__(self, data_dir: Path, url_secret: str = "", retention_seconds: int = 0) -> None:
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / layout.PREFIX
        self.signer = UrlSigner(url_secret, self.data_dir / ".url-secret")
        self.retention_seconds = retention_seconds
        self._next_prune = 0.0
        self._prune_lock = threading.Lock()

    def close(self) -> None:
        """Nothing to close: a folder holds no connection."""

    def job_dir(self, project_id: str, job_id: str) -> Path:
        return self.root / layout.check_name(project_id, "projectId") / layout.check_name(job_id, "jobId")

    def publish(self, project_id: str, job_id: str, src_dir: Path) -> dict[str, Any]:
        final = self.job_dir(project_id, job_id)
        manifest, raw = layout.manifest_to_publish(project_id, job_id, Path(src_dir))
        project_dir = final.parent
        project_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{job_id}-", dir=project_dir))
        try:
            for entry in manifest["files"]:
                files.copy_synced(Path(src_dir) / entry["name"], staging / entry["name"])
            files.write_synced(staging / layout.MANIFEST, raw)
            os.chmod(staging, 0o755)  # mkdtemp makes it 0700; the set should read like any folder
            files.fsync_dir(staging)
            old: Path | None = None
            with files.locked(project_dir / ".lock"):
                if final.exists():
                    if files.exchange(staging, final):
                        old = staging  # now holds the previous set; the path never went missing
                    else:
                        old = project_dir / f".old-{job_id}-{uuid.uuid4().hex}"
                        os.rename(final, old)
                        os.rename(staging, final)
                else:
                    os.rename(staging, final)
                files.fsync_dir(project_dir)
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
            if not project_dir.is_dir() or not is_id(project_dir.name):
                continue
            for entry in project_dir.iterdir():
                if entry.name.startswith((".tmp-", ".old-", ".del-")):
                    if now - (files.mtime(entry) or now) > self.LEFTOVER_SECONDS:
                        shutil.rmtree(entry, ignore_errors=True)
                elif (self.retention_seconds and is_id(entry.name)
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
        with files.locked(final.parent / ".lock"):
            if published_before is not None:
                # No manifest (never the case for a published set): the folder's own age.
                published = files.mtime(final / layout.MANIFEST) or files.mtime(final)
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
            raw = (self.job_dir(project_id, job_id) / layout.MANIFEST).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return layout.parse_manifest(raw)

    def delete(self, project_id: str, job_id: str) -> None:
        if self.job_dir(project_id, job_id).parent.is_dir():
            self._remove(project_id, job_id)

    # -- signed URLs

    def signed_url(self, project_id: str, job_id: str, name: str, ttl_seconds: int,
                   base_url: str | None) -> tuple[str, datetime]:
        return self.signer.url(layout.job_key(project_id, job_id, name), ttl_seconds, base_url)

    def file(self, path: str) -> Path | None:
        """The published file a URL path names (`/artifacts/previews/p/j/name`, or without
        the route), or None when it names nothing inside the previews folder."""
        parts = relative_path(path).split("/")
        if len(parts) != 4 or parts[0] != layout.PREFIX or not all(is_id(p) for p in parts[1:]):
            return None
        root = self.root.resolve()
        try:
            target = root.joinpath(*parts[1:]).resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not target.is_relative_to(root) or not target.is_file():
            return None
        return target

    def verify(self, path: str, expires: str | int, sig: str, now: float | None = None) -> Path | None:
        """The file a signed URL grants, or None when the signature is wrong, the URL has
        expired or the path does not name a file inside the previews folder."""
        if not self.signer.valid(path, expires, sig, now):
            return None
        return self.file(path)
