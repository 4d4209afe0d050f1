"""Scratch space for renders under `DATA_DIR/tmp`: each job loop owns one folder, emptied
between its jobs, and folders left by killed worker processes of this host are swept."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path


class Scratch:
    def __init__(self, data_dir: Path, worker_id: str) -> None:
        self.data_dir = data_dir
        self.worker_id = worker_id
        self._root: Path | None = None
        self._loop = threading.local()

    def root(self) -> Path:
        if self._root is None:
            path = self.data_dir / "tmp"
            path.mkdir(parents=True, exist_ok=True)
            self._root = path
        return self._root

    @contextlib.contextmanager
    def for_job(self, job_id: str) -> Iterator[Path]:
        """An empty folder for one render: the job loop's own, emptied after each job (a fresh
        folder per job costs more than a no-op job), or a temporary one outside a loop."""
        reusable: Path | None = getattr(self._loop, "path", None)
        if reusable is None:
            path = Path(tempfile.mkdtemp(prefix=f"render-{job_id}-", dir=self.root()))
            try:
                yield path
            finally:
                shutil.rmtree(path, ignore_errors=True)
            return
        try:
            yield reusable
        finally:
            _empty(reusable)

    @contextlib.contextmanager
    def for_loop(self) -> Iterator[None]:
        """Give the calling job loop (thread) a scratch folder of its own for its lifetime."""
        name = f"{self.worker_id}-{threading.get_ident()}".replace(":", "_")
        path = self.root() / name
        path.mkdir(exist_ok=True)
        _empty(path)
        self._loop.path = path
        try:
            yield
        finally:
            self._loop.path = None
            shutil.rmtree(path, ignore_errors=True)

    def sweep(self) -> None:
        """Remove scratch folders left by dead worker processes of this host (killed mid-render).
        Loop folders are named host_pid_...; a pid that no longer runs left its folder behind."""
        host = socket.gethostname()
        for entry in self.root().iterdir():
            parts = entry.name.split("_")
            if len(parts) < 3 or parts[0] != host or not parts[1].isdigit():
                continue
            pid = int(parts[1])
            if pid == os.getpid():
                continue
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                shutil.rmtree(entry, ignore_errors=True)
            except PermissionError:
                pass  # alive, owned by someone else


def _empty(folder: Path) -> None:
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
