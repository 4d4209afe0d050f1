"""Redis clients with short timeouts, and the runner of the queue's Lua scripts."""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Sequence
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.connection import AbstractConnection
from redis.exceptions import NoScriptError
from redis.retry import Retry
from redis.utils import HIREDIS_AVAILABLE

from shared.settings import Settings

# Admission, status and health must answer (or fail with 503) well within 2 s, so one quick
# retry after a dropped connection is all we allow.
_RETRY = Retry(NoBackoff(), retries=1)

MAX_BLOCK_SECONDS = 5.0

if HIREDIS_AVAILABLE:
    from hiredis import pack_command as _hiredis_pack


def connect(settings: Settings, *, blocking: bool = False) -> redis.Redis:
    """A client for `settings.redis_url` with short timeouts (`blocking`: for BLPOP waits).
    The caller owns it and closes it; `shared.wiring` makes the process's pair."""
    timeout = settings.redis_timeout_ms / 1000
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=timeout,
        # A blocking client waits in BLPOP for up to MAX_BLOCK_SECONDS; its read timeout leaves
        # room for that yet still notices a connection that died silently.
        socket_timeout=MAX_BLOCK_SECONDS + 5 if blocking else timeout,
        socket_keepalive=True,
        retry=_RETRY,
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        decode_responses=True,
    )


class _ThreadConnection:
    """A thread's script connection. A redis-py connection sits in reference cycles, so only
    the garbage collector would close it after its thread ends; this holder is in none, so the
    thread's end closes the socket at once."""

    __slots__ = ("conn", "pid")

    def __init__(self, conn: AbstractConnection) -> None:
        self.conn, self.pid = conn, os.getpid()

    def __del__(self) -> None:
        if self.pid == os.getpid():  # never close a parent's socket from a forked child
            with contextlib.suppress(Exception):  # e.g. at interpreter shutdown: nothing to tell
                self.conn.disconnect()


class ScriptRunner:
    """Runs the queue's Lua scripts: one EVALSHA round trip on a connection of the caller's
    thread, with nothing between the caller and the socket but packing and parsing.

    Every state change of the queue is one script, so this is the hot path of admission and of
    the worker loop. Going through `Redis.execute_command` adds a pool check-out and check-in,
    retry closures and redis-py's metric hooks to each call: about a fifth of an admission's
    time on loopback (see bench/queue_bench.py). The connections are made from the client's
    own settings (timeouts, keep-alive, credentials, TLS). One retry on a fresh connection when
    an open one turns out dropped (never after a timeout: see `_evalsha`), a script reloaded
    once when the server lost it. A connection belongs to one thread; it closes when that thread ends, when the
    runner is closed or collected, and is never reused across a fork.
    """

    def __init__(self, client: redis.Redis, retries: int = 1) -> None:
        pool = client.connection_pool
        self._connection_class = pool.connection_class
        self._connection_kwargs = dict(pool.connection_kwargs)
        self._retries = retries
        self._local = threading.local()
        self._open: weakref.WeakSet[AbstractConnection] = weakref.WeakSet()
        self._lock = threading.Lock()

    def _connection(self) -> AbstractConnection:
        held: _ThreadConnection | None = getattr(self._local, "held", None)
        if held is None or held.pid != os.getpid():
            conn = self._connection_class(**self._connection_kwargs)
            self._local.held = held = _ThreadConnection(conn)
            with self._lock:
                self._open.add(conn)
        return held.conn

    def __call__(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        conn = self._connection()
        try:
            return self._evalsha(conn, script, keys, args)
        except redis.ResponseError:
            raise  # an error reply was read whole: the connection is still in step
        except BaseException:
            # Anything else (a dropped connection, a timeout, KeyboardInterrupt between send
            # and read) may leave a reply unread, which the next call would take for its own.
            conn.disconnect()
            raise

    @staticmethod
    def _pack(conn: AbstractConnection, *args: Any) -> Any:
        if HIREDIS_AVAILABLE:
            # What redis-py's own hiredis packer ends in, without its per-argument checks
            # (our arguments are only str and int): a third of the time.
            return [_hiredis_pack(args)]
        return conn.pack_command(*args)

    def _evalsha(self, conn: AbstractConnection, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        packed = self._pack(conn, "EVALSHA", script.sha, len(keys), *keys, *args)
        retries = self._retries
        reloaded = False
        while True:
            # Only a connection that was open before this call is retried: the server may have
            # closed it while idle (timeout, restart, failover), and then it never saw the
            # command. A failed connect is not retried here (the connection's own policy already
            # did), nor is a timeout: a script that ran but answered late must not run twice
            # (claim would lease a second job, complete would report a lost lease).
            was_open = conn.is_connected
            try:
                conn.send_packed_command(packed, check_health=False)
                return conn.read_response()
            except NoScriptError:
                if reloaded:
                    raise
                reloaded = True
                conn.send_command("SCRIPT", "LOAD", script.script, check_health=False)
                script.sha = conn.read_response()
                packed = self._pack(conn, "EVALSHA", script.sha, len(keys), *keys, *args)
            except redis.ConnectionError:
                if not was_open or retries <= 0:
                    raise
                retries -= 1
                conn.disconnect()

    def close(self) -> None:
        """Close every connection this runner opened (a thread still using one reconnects)."""
        with self._lock:
            connections = list(self._open)  # kept: a thread may reconnect the same object
        for conn in connections:
            conn.disconnect()
