"""The free-disk floor (PREVIEW_MIN_FREE_DISK_MB): below it on DATA_DIR's disk a worker claims
no job, since a render needs scratch space and its preview room to land, and health says why.
A job already running finishes; the jobs left wait in the queue until space comes back."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from shared.observability import logger
from shared.settings import Settings

MB = 1024 * 1024


def free_mb(path: Path) -> float:
    """Free space for this user on the disk that holds `path` (or would: the nearest folder
    that exists, before DATA_DIR is first made)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free / MB


def shortage(settings: Settings) -> str | None:
    """Why the worker should not claim now, or None when there is room (or no floor)."""
    floor = settings.min_free_disk_mb
    if not floor:
        return None
    try:
        free = free_mb(settings.data_dir)
    except OSError as exc:  # cannot tell: no reason to stop the work
        logger.warning("could not read the free disk space", extra={"error": str(exc)})
        return None
    if free >= floor:
        return None
    return f"free disk {free:.0f} MB below the {floor:g} MB floor on {settings.data_dir}"


class DiskGate:
    """The floor as a worker's job loops see it: read at most once per `every_s` whichever loop
    asks, and logged once per change (not once per loop or per check)."""

    def __init__(self, settings: Settings, every_s: float = 1.0) -> None:
        self.settings = settings
        self.every_s = every_s
        self._lock = threading.Lock()
        self._checked = float("-inf")
        self._reason: str | None = None

    def blocked(self) -> str | None:
        """The shortage that stops claiming, or None."""
        with self._lock:
            now = time.monotonic()
            if now - self._checked < self.every_s:
                return self._reason
            self._checked = now
            reason = shortage(self.settings)
            if reason and not self._reason:
                logger.warning("not claiming jobs: low on disk", extra={"reason": reason})
            elif self._reason and not reason:
                logger.info("claiming jobs again: disk space is back above the floor",
                            extra={"floorMb": self.settings.min_free_disk_mb})
            self._reason = reason
            return reason
