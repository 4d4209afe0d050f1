"""CORS as an HTTP API applies it: the API's `CorsConfiguration` from the template, a preflight
answered by the gateway itself (before any authorization), and the allow headers put on every
response to an allowed origin, whatever the function returned.

The emulator's artifact links get the same headers: in the cloud the artifact bucket carries a
CORS rule for the same origins (template.yaml).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from local.errors import TemplateError

CORS_HEADERS = (
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-expose-headers",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-max-age",
)


@dataclass(frozen=True)
class CorsConfig:
    allow_origins: tuple[str, ...]
    allow_methods: tuple[str, ...] = ("*",)
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: int | None = None
    allow_credentials: bool = False

    def allows(self, origin: str) -> bool:
        return "*" in self.allow_origins or origin.lower() in self.allow_origins

    def allow_origin_value(self, origin: str) -> str:
        # A wildcard is echoed as `*` unless credentials are allowed (browsers refuse that pair).
        return "*" if "*" in self.allow_origins and not self.allow_credentials else origin

    def method_allowed(self, method: str) -> bool:
        return "*" in self.allow_methods or method.upper() in self.allow_methods


def read_cors(value: Any, where: str) -> CorsConfig | None:
    """An HTTP API's resolved `CorsConfiguration`: `true` (any origin), a mapping of
    AllowOrigins, AllowMethods, AllowHeaders, ExposeHeaders, MaxAge, AllowCredentials, or absent."""
    if value is None or value is False:
        return None
    if value is True:
        return CorsConfig(allow_origins=("*",), allow_headers=("*",))
    if not isinstance(value, Mapping):
        raise TemplateError(f"{where}: CorsConfiguration must be true or a mapping")

    def names(key: str) -> tuple[str, ...]:
        raw = value.get(key) or ()
        if isinstance(raw, str):  # a CommaDelimitedList parameter passed through !Join, say
            raw = raw.split(",")
        if not isinstance(raw, Iterable):
            raise TemplateError(f"{where}: CorsConfiguration.{key} must be a list of strings")
        return tuple(str(v).strip().lower() for v in raw if str(v).strip())

    origins = names("AllowOrigins")
    if not origins:
        return None
    max_age = value.get("MaxAge")
    try:
        age = None if max_age is None else int(max_age)
    except (TypeError, ValueError):
        raise TemplateError(f"{where}: CorsConfiguration.MaxAge must be a number of seconds") from None
    return CorsConfig(
        allow_origins=origins,
        allow_methods=tuple(m.upper() for m in names("AllowMethods")) or ("*",),
        allow_headers=names("AllowHeaders"),
        expose_headers=names("ExposeHeaders"),
        max_age=age,
        allow_credentials=str(value.get("AllowCredentials", "false")).lower() == "true",
    )


class CorsMiddleware:
    """Outermost layer of the emulator: preflights never reach a route or a signature check."""

    def __init__(self, app: ASGIApp, config: CorsConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if scope["method"] == "OPTIONS" and origin and "access-control-request-method" in headers:
            await self._preflight(origin, headers, send)
            return
        if not origin or not self.config.allows(origin):
            await self.app(scope, receive, send)
            return
        config = self.config

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                for name in CORS_HEADERS:  # the gateway's headers replace the function's
                    del out[name]
                out["access-control-allow-origin"] = config.allow_origin_value(origin)
                if config.allow_credentials:
                    out["access-control-allow-credentials"] = "true"
                if config.expose_headers:
                    out["access-control-expose-headers"] = ",".join(config.expose_headers)
                out.add_vary_header("Origin")
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(self, origin: str, headers: Headers, send: Send) -> None:
        config = self.config
        method = headers["access-control-request-method"]
        requested = [h.strip().lower() for h in headers.get("access-control-request-headers", "").split(",")
                     if h.strip()]
        out: list[tuple[bytes, bytes]] = [(b"content-length", b"0"), (b"vary", b"Origin")]
        headers_ok = "*" in config.allow_headers or all(h in config.allow_headers for h in requested)
        # A refused preflight is an empty 204 without allow headers: the browser then blocks the call.
        if config.allows(origin) and config.method_allowed(method) and headers_ok:
            out += [(b"access-control-allow-origin", config.allow_origin_value(origin).encode()),
                    (b"access-control-allow-methods", ",".join(config.allow_methods).encode())]
            if requested:
                out.append((b"access-control-allow-headers", ",".join(requested).encode()))
            if config.allow_credentials:
                out.append((b"access-control-allow-credentials", b"true"))
            if config.max_age is not None:
                out.append((b"access-control-max-age", str(config.max_age).encode()))
        await send({"type": "http.response.start", "status": 204, "headers": out})
        await send({"type": "http.response.body", "body": b""})
