"""Artifacts under `DATA_DIR/previews`, served by the emulator through signed URLs."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from shared.artifacts import files, layout
from shared.artifacts.signing import UrlSigner, relative_path
from shared.contract import is_id
from shared.errors import ArtifactPruned
from shared.observability import logger

if TYPE_CHECKING:
    from shared.artifacts.index import Entry, StoreIndex

MB = 1024 * 1024


class LocalStore:
    """Each preview is a folder, published by a swap so a reader never sees half a set.

    Bounded by age (`retention_seconds`, like the bucket's lifecycle rule) and, with `max_mb`,
    by size: after each publish the oldest previews go until the folders' disk usage is within
    the budget again, each leaving a tombstone so that its job's artifact route and links say
    why it is gone. The sizes and the running total live in an index (`shared.artifacts.index`).
    """

    # Pruning runs from publish, at most this often per store.
    PRUNE_INTERVAL_SECONDS = 3600
    # Staging and removal folders a killed process left behind are swept after this long.
    LEFTOVER_SECONDS = 3600
    # Tombstones kept at most (about 60 bytes each); older ones also go with the retention.
    TOMBSTONES_KEPT = 100_000

    def __init__(self, data_dir: Path, url_secret: str = "", retention_seconds: int = 0,
                 max_mb: float = 0) -> None:
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / layout.PREFIX
        self.signer = UrlSigner(url_secret, self.data_dir / ".url-secret")
        self.retention_seconds = retention_seconds
        self.max_mb = max_mb
        self.max_bytes = int(max_mb * MB)
        self._next_prune = 0.0
        self._prune_lock = threading.Lock()

    def close(self) -> None:
        """The index's connections (the folders hold none)."""
        if "index" in self.__dict__:
            self.index.close()

    @functools.cached_property
    def index(self) -> StoreIndex:
        # Imported on first use: an HTTP function's cold start never needs SQLite.
        from shared.artifacts.index import StoreIndex

        return StoreIndex(self.root)

    def job_dir(self, project_id: str, job_id: str) -> Path:
        return self.root / layout.check_name(project_id, "projectId") / layout.check_name(job_id, "jobId")

    def publish(self, project_id: str, job_id: str, src_dir: Path) -> dict[str, Any]:
        final = self.job_dir(project_id, job_id)
        manifest, raw = layout.manifest_to_publish(project_id, job_id, Path(src_dir))
        project_dir = final.parent
        project_dir.mkdir(parents=True, exist_ok=True)
        # Staged beside the source when on the same disk (a worker's scratch folder): a publish
        # cut short by a kill leaves its copy where the worker's start-up sweep removes it.
        beside = os.stat(src_dir).st_dev == os.stat(project_dir).st_dev
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{job_id}-", dir=src_dir if beside else project_dir))
        try:
            for entry in manifest["files"]:
                files.copy_synced(Path(src_dir) / entry["name"], staging / entry["name"])
            files.write_synced(staging / layout.MANIFEST, raw)
            os.chmod(staging, 0o755)  # mkdtemp makes it 0700; the set should read like any folder
            files.fsync_dir(staging)
            size = disk_usage(staging)
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
        self._account(project_id, job_id, size)
        self._maybe_prune()
        return manifest

    # -- the size budget

    def _account(self, project_id: str, job_id: str, size: int) -> None:
        """Index a preview just published, then prune the oldest others while over budget. A
        failure here (a full disk, a locked index) must not fail the job that published."""
        if not self.max_bytes:
            return
        import sqlite3

        from shared.artifacts.index import Entry

        try:
            self._open_index()
            total = self.index.record(Entry(project_id, job_id, size, time.time()))
            if total > self.max_bytes:
                self.enforce_budget(keep=(project_id, job_id))
        except (OSError, sqlite3.Error) as exc:
            logger.warning("keeping the local store within its budget failed", extra={"error": str(exc)})

    def _open_index(self) -> None:
        if self.index.open(self._scan()):
            total, count = self.index.total()
            logger.info("indexed the local store", extra={"previews": count, "mb": round(total / MB, 1)})

    def _scan(self, published_before: float | None = None) -> Iterator[Entry]:
        """Every published preview found in the folders (those published before the given
        time), with its disk usage; age is the manifest's, as for the age pruning."""
        from shared.artifacts.index import Entry

        if not self.root.is_dir():
            return
        for project_dir in self.root.iterdir():
            if not project_dir.is_dir() or not is_id(project_dir.name):
                continue
            for entry in project_dir.iterdir():
                published = files.mtime(entry / layout.MANIFEST) if is_id(entry.name) else None
                if published is None or (published_before is not None and published >= published_before):
                    continue
                with contextlib.suppress(FileNotFoundError):  # pruned or replaced meanwhile
                    yield Entry(project_dir.name, entry.name, disk_usage(entry), published)

    def enforce_budget(self, keep: tuple[str, str] | None = None) -> list[str]:
        """Delete the oldest previews (never `keep`, the one just published, by default the
        newest) until the index's total is within the budget. Returns `project/job` of each
        preview deleted."""
        from shared.artifacts.index import Tombstone

        removed: list[str] = []
        if keep is None and (newest := self.index.newest()) is not None:
            keep = (newest.project, newest.job)
        passed: set[tuple[str, str]] = {keep} if keep else set()
        while self.max_bytes:
            total, _ = self.index.total()
            if total <= self.max_bytes:
                break
            victim = next((e for e in self.index.oldest(len(passed) + 1) if (e.project, e.job) not in passed), None)
            if victim is None:
                logger.warning("a single preview is larger than the local store's budget; kept it",
                               extra={"maxMb": self.max_mb, "mb": round(total / MB, 2)})
                break
            outcome = self._remove_published(victim)
            if outcome == "removed":
                self.index.forget(victim.project, victim.job, victim.published,
                                  Tombstone(time.time(), self.max_mb))
                removed.append(f"{victim.project}/{victim.job}")
            elif outcome == "missing":  # deleted by someone else meanwhile: only the row is left
                self.index.forget(victim.project, victim.job, victim.published)
            else:  # published again since its row was read: its publisher updates the row
                passed.add((victim.project, victim.job))
        if removed:
            total, count = self.index.total()
            logger.info("pruned previews over the local store's budget",
                        extra={"count": len(removed), "maxMb": self.max_mb, "mb": round(total / MB, 1),
                               "previews": count})
        return removed

    def _remove_published(self, entry: Entry) -> Literal["removed", "missing", "newer"]:
        """Take the set `entry` describes away (one rename under the project's lock), unless a
        newer set replaced it meanwhile."""
        final = self.job_dir(entry.project, entry.job)
        doomed = final.parent / f".del-{entry.job}-{uuid.uuid4().hex}"
        try:
            with files.locked(final.parent / ".lock"):
                published = files.mtime(final / layout.MANIFEST)
                if published is None:
                    return "missing"
                if published > entry.published:
                    return "newer"
                os.rename(final, doomed)
        except FileNotFoundError:  # the project folder itself is gone
            return "missing"
        shutil.rmtree(doomed, ignore_errors=True)
        return "removed"

    def usage(self) -> tuple[int, int]:
        """Bytes on disk and number of the previews the budget counts (0, 0 without one)."""
        if not self.max_bytes:
            return 0, 0
        self._open_index()
        return self.index.total()

    def pruned_reason(self, project_id: str, job_id: str) -> str | None:
        """Why the job's preview is missing, when the budget pruned it; None otherwise."""
        import sqlite3

        if not self.index.path.exists():
            return None
        try:
            tombstone = self.index.tombstone(project_id, job_id)
        except sqlite3.Error:
            return None
        if tombstone is None:
            return None
        when = datetime.fromtimestamp(tombstone.pruned, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return (f"the preview of job {job_id!r} was pruned at {when} to keep the local store within "
                f"{tombstone.budget_mb:g} MB (PREVIEW_LOCAL_STORE_MAX_MB)")

    def pruned_reason_for(self, path: str) -> str | None:
        """`pruned_reason` of the job a link's path (`/artifacts/previews/p/j/name`) names."""
        parts = relative_path(path).split("/")
        if len(parts) != 4 or parts[0] != layout.PREFIX or not all(is_id(p) for p in parts[1:]):
            return None
        if self.job_dir(parts[1], parts[2]).exists():
            return None
        return self.pruned_reason(parts[1], parts[2])

    # -- the age limit

    def _maybe_prune(self) -> None:
        if not (self.retention_seconds or self.max_bytes) or time.monotonic() < self._next_prune:
            return
        import sqlite3

        if not self._prune_lock.acquire(blocking=False):
            return  # another thread of this process is at it
        try:
            self._next_prune = time.monotonic() + self.PRUNE_INTERVAL_SECONDS
            self.prune()
        except (OSError, sqlite3.Error) as exc:  # a full or read-only disk must not fail the job that published
            logger.warning("pruning old previews failed", extra={"error": str(exc)})
        finally:
            self._prune_lock.release()

    def prune(self, now: float | None = None) -> list[str]:
        """Delete previews published more than `retention_seconds` ago (like the S3 lifecycle
        rule) and staging folders a killed process left. Returns `project/job` of each preview
        deleted. Age is the manifest's: a re-render of the same job starts it again."""
        now = time.time() if now is None else now
        removed: list[str] = []
        present: set[tuple[str, str]] = set()
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
                elif is_id(entry.name):
                    present.add((project_dir.name, entry.name))
        if removed:
            logger.info("pruned old previews", extra={"count": len(removed),
                                                      "retentionDays": self.retention_seconds / 86_400})
        if self.max_bytes:
            self._reconcile(now, present)
        return removed

    def _reconcile(self, started: float, present: set[tuple[str, str]]) -> None:
        """Bring the index in line with the folders just walked: rows of folders gone (pruned by
        age, deleted by hand) are dropped, folders without a row (a publisher killed between its
        rename and its row) are added, then the budget holds again. Only what is older than the
        walk is touched, so a publish that lands meanwhile keeps its row."""
        self._open_index()
        for entry in self.index.all():
            if (entry.project, entry.job) not in present and entry.published < started:
                self.index.forget(entry.project, entry.job, entry.published)
        known = {(e.project, e.job) for e in self.index.all()}
        added = self.index.add_missing(e for e in self._scan(published_before=started - self.LEFTOVER_SECONDS)
                                       if (e.project, e.job) not in known)
        if added:
            logger.info("indexed previews the index had missed", extra={"count": added})
        keep_after = started - self.retention_seconds if self.retention_seconds else 0.0
        self.index.drop_tombstones(keep_after, self.TOMBSTONES_KEPT)
        self.enforce_budget()

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
        """The published set's manifest; None when there is none; `ArtifactPruned` when the
        size budget took it."""
        try:
            raw = (self.job_dir(project_id, job_id) / layout.MANIFEST).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            reason = self.pruned_reason(project_id, job_id)
            if reason:
                raise ArtifactPruned(reason, jobId=job_id) from None
            return None
        return layout.parse_manifest(raw)

    def delete(self, project_id: str, job_id: str) -> None:
        if self.job_dir(project_id, job_id).parent.is_dir():
            self._remove(project_id, job_id)
            if self.max_bytes:
                import sqlite3

                with contextlib.suppress(OSError, sqlite3.Error):
                    self._open_index()
                    self.index.forget(project_id, job_id)

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


def disk_usage(folder: Path) -> int:
    """Bytes a folder and the files in it take on disk (what `du` counts: a 300-byte file
    takes a block), so the budget matches what fills the disk."""
    total = os.stat(folder).st_blocks * 512
    with os.scandir(folder) as entries:
        for entry in entries:
            total += entry.stat(follow_symlinks=False).st_blocks * 512
    return total
