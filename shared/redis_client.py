"""Lazily created, cached Redis clients with short timeouts, and URL masking."""

from __future__ import annotations

import threading
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.settings import Settings

# Admission, status and health must answer (or fail with 503) well within 2 s, so one quick
# retry after a dropped connection is all we allow.
_RETRY = Retry(NoBackoff(), retries=1)


def mask_url(url: str) -> str:
    """The URL without any password (and without a user name that could be a token)."""
    parts = urlsplit(url)
    # Query options (redis-py accepts ?password=...) are dropped too: none is worth the risk.
    if parts.password is None and parts.username is None:
        return url.split("?", 1)[0].split("#", 1)[0]
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"***@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


MAX_BLOCK_SECONDS = 5.0

_clients: dict[tuple[str, int, bool], redis.Redis] = {}
_lock = threading.Lock()


def _new_client(url: str, timeout_ms: int, blocking: bool) -> redis.Redis:
    timeout = timeout_ms / 1000
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        # A blocking client waits in BLPOP for up to MAX_BLOCK_SECONDS; its read timeout leaves
        # room for that yet still notices a connection that died silently.
        socket_timeout=MAX_BLOCK_SECONDS + 5 if blocking else timeout,
        socket_keepalive=True,
        retry=_RETRY,
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        decode_responses=True,
    )


def get_redis(settings: Settings, *, blocking: bool = False) -> redis.Redis:
    """The shared client for `settings.redis_url` (a separate pool for blocking waits)."""
    key = (settings.redis_url, settings.redis_timeout_ms, blocking)
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = _new_client(*key)
    return client


def reset_clients() -> None:
    """Close and forget every cached client (tests, and after a fork)."""
    with _lock:
        for client in _clients.values():
            client.close()
        _clients.clear()
