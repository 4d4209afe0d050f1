"""Signed, expiring URLs for the local artifact store: an HMAC over the artifact's path and
its expiry time. The store signs them; the emulator's artifact route checks them."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

ROUTE = "/artifacts/"


class UrlSigner:
    """Signs `previews/...` paths. The key is the configured secret, else one generated once
    and kept in `secret_file` (shared by every process on the same data folder)."""

    def __init__(self, secret: str, secret_file: Path) -> None:
        self._secret = secret.encode("utf-8") if secret else None
        self._secret_file = secret_file

    def _key(self) -> bytes:
        if self._secret is None:
            self._secret = _load_or_create_secret(self._secret_file)
        return self._secret

    def _signature(self, path: str, expires: int) -> str:
        return hmac.new(self._key(), f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def url(self, path: str, ttl_seconds: int, base_url: str | None) -> tuple[str, datetime]:
        """`{base_url}/artifacts/{path}?expires=...&sig=...` and when it expires."""
        expires = int(time.time()) + int(ttl_seconds)
        url = f"{(base_url or '').rstrip('/')}{ROUTE}{quote(path)}?expires={expires}" \
              f"&sig={self._signature(path, expires)}"
        return url, datetime.fromtimestamp(expires, tz=UTC)

    def valid(self, path: str, expires: str | int, sig: str, now: float | None = None) -> bool:
        """Whether a signed URL is genuine and unexpired, whether or not its file exists.
        `path` is the URL path, with or without the leading `/artifacts/`."""
        return self.check(path, expires, sig, now) == "valid"

    def check(self, path: str, expires: str | int, sig: str, now: float | None = None) -> str:
        """"valid", "expired" (genuine, but past its time) or "invalid" (tampered, or not ours).
        Expiry is judged only once the signature holds, so it tells a forger nothing."""
        relative = relative_path(path)
        try:
            expires_at = int(expires)
        except (TypeError, ValueError):
            return "invalid"
        expected = self._signature(relative, expires_at).encode()
        if not hmac.compare_digest(expected, str(sig).lower().encode("utf-8", "replace")):
            return "invalid"
        return "expired" if expires_at < (time.time() if now is None else now) else "valid"


def relative_path(url_path: str) -> str:
    return url_path.lstrip("/").removeprefix(ROUTE.strip("/") + "/")


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
