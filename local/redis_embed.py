"""The embedded Redis of a data folder, used when no REDIS_URL is configured.

One server per `DATA_DIR/redis`, append-only so stopping and restarting the emulator loses no
job. It is supervised: should it die (killed, out of memory), it is reaped at once and started
again on the same port from its append-only file, with a backoff between failed attempts.
Whoever starts it holds an exclusive lock on `owner.lock` for its whole life and writes the
server's URL to `owner.json`. A second `serve` on the same folder is refused (two servers
appending to one file would corrupt it); `invoke` joins a running emulator's server, so it
sees the same jobs, and otherwise starts the server itself for the duration of the call.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from local.errors import StartupError
from local.redis_server import RedisServer

log = logging.getLogger("local.redis")
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.1, 5.0
STABLE_S = 10.0  # a server that ran this long starts the next backoff from the beginning


class Supervisor:
    """Restarts `server` whenever it exits without being asked to, until `stop`. The server's
    process is waited for (no zombie) by this supervisor's thread alone."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.restarts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # a restart and a stop never overlap
        self._thread = threading.Thread(target=self._watch, name="redis-supervisor", daemon=True)

    def start(self) -> Supervisor:
        self._thread.start()
        return self

    def _watch(self) -> None:
        backoff = BACKOFF_FIRST_S
        while not self._stopping.is_set():
            process = self.server.process
            if process is None:
                return
            started = time.monotonic()
            code = process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= STABLE_S:
                backoff = BACKOFF_FIRST_S
            down = time.monotonic()
            log.warning("the embedded Redis (pid %d) exited with status %s; restarting it from %s",
                        process.pid, code, self.server.data_dir)
            while not self._stopping.is_set():
                try:
                    with self._lock:
                        if self._stopping.is_set():
                            return
                        self.server.start()
                except (RuntimeError, OSError) as exc:
                    log.warning("the embedded Redis did not restart (%s); next try in %.1f s", exc, backoff)
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX_S)
                    continue
                self.restarts += 1
                log.warning("the embedded Redis is back on port %d after %.2f s (restart %d)",
                            self.server.port, time.monotonic() - down, self.restarts)
                break

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            self.server.stop()
        self._thread.join(15)


@dataclass(frozen=True)
class EmbeddedRedis:
    url: str
    directory: Path
    owned: bool

    def describe(self) -> str:
        how = "embedded" if self.owned else "shared with a running emulator"
        return f"{how} at {self.url} (data in {self.directory})"


def _read_owner(directory: Path) -> dict[str, Any] | None:
    try:
        owner: dict[str, Any] = json.loads((directory / "owner.json").read_text())
        return owner
    except (OSError, ValueError):
        return None


def _stop_orphan(directory: Path) -> None:
    """A server left behind by an owner that died uncleanly would keep appending to the same
    file; ask it to shut down (it flushes the append-only file first)."""
    owner = _read_owner(directory)
    if not owner or "url" not in owner:
        return
    client = redis.Redis.from_url(owner["url"], socket_timeout=0.5, socket_connect_timeout=0.5)
    with contextlib.suppress(redis.RedisError, OSError):
        if client.ping():
            client.shutdown()
    client.close()


@contextlib.contextmanager
def embedded_redis(data_dir: Path, *, join_running: bool) -> Iterator[EmbeddedRedis]:
    directory = data_dir / "redis"
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot create {directory} for the embedded Redis: {exc.strerror}") from None
    fd = os.open(directory / "owner.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        locked = True
    except BlockingIOError:
        os.close(fd)
        locked = False
    if not locked:
        owner = None
        deadline = time.monotonic() + 10
        while owner is None and time.monotonic() < deadline:  # the owner may still be starting it
            owner = _read_owner(directory)
            if owner is None:
                time.sleep(0.05)
        if join_running and owner:
            yield EmbeddedRedis(str(owner["url"]), directory, owned=False)
            return
        pid = owner.get("pid", "?") if owner else "?"
        raise StartupError(
            f"the embedded Redis in {directory} is in use by another process (pid {pid}); stop it, "
            "or choose another DATA_DIR, or set REDIS_URL"
        )
    try:
        _stop_orphan(directory)
        server = RedisServer(directory, appendonly=True, die_with_parent=True)
        try:
            server.start()
        except (RuntimeError, OSError) as exc:
            raise StartupError(f"cannot start the embedded Redis: {exc}") from None
        supervisor = Supervisor(server).start()
        owner_file = directory / "owner.json"
        try:
            owner_file.write_text(json.dumps({"url": server.url, "pid": os.getpid()}))
            yield EmbeddedRedis(server.url, directory, owned=True)
        finally:
            owner_file.unlink(missing_ok=True)
            supervisor.stop()
    finally:
        os.close(fd)
