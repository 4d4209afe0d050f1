"""The Starlette app of an API Gateway (HTTP API) emulator: the template's routes in front of
the in-process functions, as payload 2.0 events; API Gateway's own answers (404, 413, 502,
504) and API-key guard; the OpenAPI document and its docs page; the schedules, listed and
fired. Nothing here knows the service: what it adds around the gateway (its own routes,
work at start-up and shutdown) comes in through `Extras` (this project's: local/preview.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from local import isolation
from local.cors import CorsMiddleware, read_cors
from local.events import BadResponse, http_event, http_response
from local.intrinsics import API_ID
from local.openapi import DOCS_ASSETS, DOCS_SIGNER, SIGNER_FILE, build_openapi, docs_html, swagger_ui_dir
from local.runtime import FunctionRuntime, HandlerFailed
from local.schedules import Scheduler
from local.sigv4 import Refusal, SigV4Verifier
from local.template import FunctionSpec, HttpRoute, Template

log = logging.getLogger("local.server")

MAX_REQUEST_BYTES = 10 * 1024 * 1024  # HTTP API's request size limit
# Request bodies held in memory at once, all requests together. A body is read chunk by chunk
# and refused (413) at MAX_REQUEST_BYTES without reading the rest; past this budget a request
# waits for others to finish (BODY_WAIT_S), then answers 503. With the copies a function's
# event makes (text or base64), bodies in flight take at most about 3x this (chunked uploads,
# which declare no length, each take MAX_REQUEST_BYTES of it: three at a time).
BODY_BUDGET_BYTES = 32 * 1024 * 1024
BODY_WAIT_S = 10.0
INTEGRATION_TIMEOUT_S = 30  # HTTP API gives up on an integration after 30 s, whatever the function's Timeout
_JSON = (b"content-type", b"application/json")
ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


AsyncInvoker = Callable[[str, Any], None]  # (function name, event): Lambda's InvocationType=Event


@dataclass
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 3000
    api_key: str = ""  # when set, the key guards the routes instead of their template authorizer
    sigv4: SigV4Verifier | None = None  # when set (and no api_key), AWS_IAM routes need a signature
    schedule_scale: float = 1.0
    schedules: bool = True
    on_ready: Callable[[], None] | None = field(default=None, repr=False)


class Extras:
    """What a service adds around the gateway. This base adds nothing; a service overrides
    what it provides."""

    title = "API emulator"  # the banner's first words

    def routes(self) -> Sequence[BaseRoute]:
        """Routes of the service's own, matched before the template's."""
        return ()

    def is_open(self, path: str) -> bool:
        """Whether `path` is served without the API key."""
        return False

    def start(self, invoke_async: AsyncInvoker) -> None:
        """At start-up, before schedules fire or requests arrive."""

    def stop(self) -> None:
        """At shutdown, once schedules no longer fire; off the event loop, so it may block."""

    def banner_facts(self) -> Sequence[str]:
        """`name: value` items for the banner's first line, after the docs."""
        return ()

    def banner_lines(self) -> Sequence[str]:
        """Lines after the routes and schedules (read once `start` has run)."""
        return ()


class RawResponse(Response):
    """A response with headers exactly as given (repeated Set-Cookie included)."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status_code = status
        self.body = body
        self.background = None
        self.raw_headers = [(k.lower(), v) for k, v in headers if k.lower() != b"content-length"]
        self.raw_headers.append((b"content-length", str(len(body)).encode()))


def message(status: int, text: str, extra: Iterable[tuple[bytes, bytes]] = ()) -> RawResponse:
    """API Gateway's own answers: `{"message": "..."}`."""
    return RawResponse(status, [_JSON, *extra], json.dumps({"message": text}).encode())


class ApiKeyGuard:
    """Like an API key authorizer: `x-api-key: KEY` or `Authorization: Bearer KEY` on every
    route but the exempt ones, else 401 before any function runs."""

    def __init__(self, app: ASGIApp, key: str, exempt: Callable[[str, str], bool]) -> None:
        self.app = app
        self.key = key.encode()
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.exempt(scope["method"], scope["path"]) or self._has_key(scope):
            await self.app(scope, receive, send)
            return
        await message(401, "Unauthorized")(scope, receive, send)

    def _has_key(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                candidate = value
            elif name == b"authorization" and value[:7].lower() == b"bearer ":
                candidate = value[7:].strip()
            else:
                continue
            if hmac.compare_digest(candidate, self.key):
                return True
        return False


class BodyBudget:
    """The bytes of request bodies in memory, bounded: `reserve` waits while others hold the
    budget and gives up after a while; `release` hands bytes back. One per app (one event loop)."""

    def __init__(self, total: int = BODY_BUDGET_BYTES, wait_s: float = BODY_WAIT_S) -> None:
        self.total, self.wait_s = total, wait_s
        self.used = 0
        self._freed: asyncio.Condition | None = None

    async def reserve(self, size: int) -> bool:
        if self._freed is None:
            self._freed = asyncio.Condition()
        async with self._freed:
            try:
                await asyncio.wait_for(self._freed.wait_for(lambda: self.used + size <= self.total), self.wait_s)
            except TimeoutError:
                return False
            self.used += size
            return True

    async def release(self, size: int) -> None:
        if size and self._freed is not None:
            async with self._freed:
                self.used -= size
                self._freed.notify_all()


class BodyRefused(Exception):
    def __init__(self, response: RawResponse) -> None:
        self.response = response


@contextlib.asynccontextmanager
async def request_body(request: Request, budget: BodyBudget, limit: int = MAX_REQUEST_BYTES) -> AsyncIterator[bytes]:
    """The request's body, read chunk by chunk within `limit`; BodyRefused(413) without reading
    further past it. Its room in `budget` is taken before reading and held until the block ends:
    the declared Content-Length, or `limit` for a chunked body (taken whole, so requests that
    each hold part of the budget never wait on one another); BodyRefused(503) if none frees up."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyRefused(message(413, "Request Entity Too Large"))
    room = int(declared) if declared.isdigit() else limit if "transfer-encoding" in request.headers else 0
    if room and not await budget.reserve(room):
        raise BodyRefused(message(503, "Service Unavailable"))
    try:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyRefused(message(413, "Request Entity Too Large"))
            chunks.append(chunk)
        body = b"".join(chunks)
        chunks.clear()
        yield body
    finally:
        await budget.release(room)


def starlette_path(path: str) -> str:
    """`{jobId}` stays, a greedy `{proxy+}` becomes `{proxy:path}`."""
    return re.sub(r"\{([^}]+)\+\}", r"{\1:path}", path)


def _specificity(route: HttpRoute) -> tuple[int, int, int]:
    """API Gateway prefers the most specific route; Starlette takes the first that matches."""
    if route.path is None:
        return (3, 0, 0)
    greedy = "+}" in route.path
    params = route.path.count("{")
    return (2 if greedy else 1 if params else 0, params, -len(route.path))


def is_health_route(route: HttpRoute) -> bool:
    """Health checks stay open without the key (load balancers and probes carry none)."""
    return route.method in ("GET", "ANY") and route.path is not None and \
        route.path.rstrip("/").rsplit("/", 1)[-1] in ("health", "healthz")


class Emulator:
    """The gateway of one template; `app()` is its Starlette app."""

    def __init__(self, template: Template, runtime: FunctionRuntime, options: ServerOptions,
                 extras: Extras | None = None) -> None:
        self.template = template
        self.runtime = runtime
        self.options = options
        self.extras = extras if extras is not None else Extras()
        self.scheduler: Scheduler | None = None
        self._open_paths = {route.path for route in template.routes() if is_health_route(route)}
        # IAM authorization as the template declares it, unless the API key mode replaces it.
        self._iam = None if options.api_key else options.sigv4
        self._swagger_ui = swagger_ui_dir()
        self._bodies = BodyBudget()

    # -- app

    def app(self) -> Starlette:
        routes: list[BaseRoute] = []
        for route in sorted(self.template.routes(), key=_specificity):
            spec = self.template.functions[route.function]
            path = "/{path:path}" if route.path is None else starlette_path(route.path)
            methods = list(ALL_METHODS) if route.method == "ANY" else [route.method]
            routes.append(Route(path, self._endpoint(spec, route), methods=methods, name=route.route_key))
        routes[:0] = [
            *self.extras.routes(),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            Route("/docs", self.docs, methods=["GET"]),
            Route(DOCS_SIGNER, self.docs_signer, methods=["GET"]),
            Route("/_emulator/schedules", self.list_schedules, methods=["GET"]),
            Route("/_emulator/schedules/{function}/fire", self.fire_schedule, methods=["POST"]),
        ]
        if self._swagger_ui is not None:
            routes.insert(0, Mount(DOCS_ASSETS, StaticFiles(directory=self._swagger_ui)))
        middleware = []
        cors = read_cors(self.template.cors, f"{self.template.path}: HTTP API")
        if cors is not None:
            middleware.append(Middleware(CorsMiddleware, config=cors))
        if self.options.api_key:
            middleware.append(Middleware(ApiKeyGuard, key=self.options.api_key, exempt=self._exempt))
        not_found = self._not_found
        app = Starlette(routes=routes, middleware=middleware, lifespan=self._lifespan,
                        exception_handlers={404: not_found, 405: not_found})
        app.router.redirect_slashes = False  # API Gateway does not redirect; /path/ is another route
        return app

    def _exempt(self, method: str, path: str) -> bool:
        # Docs carry no data.
        return (path in self._open_paths or path in ("/docs", "/openapi.json", DOCS_SIGNER) or self.extras.is_open(path)
                or (self._swagger_ui is not None and path.startswith(DOCS_ASSETS + "/")))

    async def _not_found(self, request: Request, exc: Exception) -> RawResponse:
        return message(404, "Not Found")

    # -- the template's routes

    def _endpoint(self, spec: FunctionSpec, route: HttpRoute) -> Callable[[Request], Any]:
        runtime = self.runtime
        route_key = route.route_key
        timeout = float(min(spec.timeout, INTEGRATION_TIMEOUT_S))

        async def endpoint(request: Request) -> RawResponse:
            scope = request.scope
            if route.method != "ANY" and scope["method"] != route.method:
                return message(404, "Not Found")  # Starlette adds HEAD to GET routes; API Gateway does not
            try:
                async with request_body(request, self._bodies) as body:
                    return await invoke(request, body)
            except BodyRefused as refused:
                return refused.response

        async def invoke(request: Request, body: bytes) -> RawResponse:
            scope = request.scope
            identity: dict[str, Any] | None = None
            if self._iam is not None and route.auth == "AWS_IAM":
                verdict = self._signed(scope, body, route_key)
                if isinstance(verdict, RawResponse):
                    return verdict
                identity = verdict
            client, server = scope.get("client"), scope.get("server")
            raw_path = scope.get("raw_path")
            event = http_event(
                route_key=route_key,
                method=scope["method"],
                raw_path=raw_path.decode("latin-1") if raw_path else scope["path"],
                raw_query=scope["query_string"].decode("latin-1"),
                headers=scope["headers"],
                body=body,
                path_parameters={k: str(v) for k, v in request.path_params.items()} if route.path else {},
                source_ip=client[0] if client else "127.0.0.1",
                scheme=scope.get("scheme", "http"),
                server_port=server[1] if server else None,
                server_host=server[0] if server else None,
                account_id=self.template.account_id,
                api_id=API_ID,
                iam=identity,
            )
            request_id = (b"apigw-requestid", event["requestContext"]["requestId"].encode())
            try:
                result = await runtime.invoke_http(spec, event, timeout)
            except TimeoutError:
                log.error("%s did not answer within %.0f s (%s)", spec.logical_id, timeout, route_key)
                return message(504, "Endpoint request timed out", [request_id])
            except HandlerFailed:
                return message(502, "Internal Server Error", [request_id])
            try:
                status, headers, payload = http_response(result)
            except BadResponse as exc:
                log.error("%s returned a malformed response: %s", spec.logical_id, exc)
                return message(502, "Internal Server Error", [request_id])
            headers.append(request_id)
            return RawResponse(status, headers, payload)

        return endpoint

    def _signed(self, scope: Scope, body: bytes, what: str) -> dict[str, Any] | RawResponse:
        """The caller's IAM identity, or API Gateway's 403 for a missing, wrong or stale
        signature (the reason goes to the log, not to the caller)."""
        assert self._iam is not None
        raw_path = scope.get("raw_path")
        verdict = self._iam.verify(scope["method"], scope.get("scheme", "http"),
                                   raw_path.decode("latin-1") if raw_path else scope["path"],
                                   scope["query_string"].decode("latin-1"), scope["headers"], body)
        if isinstance(verdict, Refusal):
            log.info("403 for %s: %s", what, verdict.why)
            return message(403, verdict.message)
        return verdict

    async def _emulator_route_refused(self, request: Request) -> RawResponse | None:
        """The emulator's own routes need what the template's need: the key, or a signature."""
        if self._iam is None or not any(r.auth == "AWS_IAM" for r in self.template.routes()):
            return None
        try:
            async with request_body(request, self._bodies) as body:
                verdict = self._signed(request.scope, body, request.url.path)
        except BodyRefused as refused:
            return refused.response
        return verdict if isinstance(verdict, RawResponse) else None

    # -- around the functions

    async def openapi(self, request: Request) -> Response:
        protected, scheme = None, "apiKey"
        if self.options.api_key:
            protected = {r.route_key for r in self.template.routes() if r.path not in self._open_paths}
        elif self._iam is not None:
            protected, scheme = {r.route_key for r in self.template.routes() if r.auth == "AWS_IAM"}, "sigv4"
        return JSONResponse(build_openapi(self.template, protected=protected, scheme=scheme))

    async def docs(self, request: Request) -> Response:
        region = self._iam.region if self._iam is not None else None
        return HTMLResponse(docs_html(local_assets=self._swagger_ui is not None, sigv4_region=region))

    async def docs_signer(self, request: Request) -> Response:
        return Response(SIGNER_FILE.read_bytes(), media_type="text/javascript")

    async def list_schedules(self, request: Request) -> Response:
        refused = await self._emulator_route_refused(request)
        if refused is not None:
            return refused
        upcoming = self.scheduler.next_fire() if self.scheduler else {}
        return JSONResponse([
            {"function": s.function, "event": s.event, "type": s.kind, "expression": s.expression,
             "enabled": s.enabled, "nextInSeconds": upcoming.get(s.key)}
            for s in self.template.schedules()
        ])

    async def fire_schedule(self, request: Request) -> Response:
        """Fire a function's schedule now: `?event=Name` picks one of several, `?async=true`
        queues it like EventBridge does instead of waiting for the result."""
        refused = await self._emulator_route_refused(request)
        if refused is not None:
            return refused
        spec = self.template.find(request.path_params["function"])
        wanted = request.query_params.get("event")
        schedules = [s for s in spec.schedules if wanted in (None, s.event)] if spec else []
        if not schedules:
            return message(404, "Not Found")
        schedule = schedules[0]
        if request.query_params.get("async", "").lower() in ("1", "true", "yes"):
            event, _ = self.runtime.fire(schedule)
            return JSONResponse({"function": schedule.function, "schedule": schedule.event, "event": event},
                                status_code=202)
        try:
            event, result = await run_in_threadpool(self.runtime.fire, schedule, wait=True)
        except HandlerFailed as exc:
            return JSONResponse({"message": "the function raised", "error": str(exc)}, status_code=502)
        return JSONResponse({"function": schedule.function, "schedule": schedule.event, "event": event,
                             "result": result})

    # -- start-up and shutdown

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        if not isolation.install():
            log.warning("Powertools' request state cannot be made per-thread; requests run one at a time")
            self.runtime.serial = threading.Lock()
        self.extras.start(self.runtime.invoke_async)
        self._start_schedules()
        self._banner()
        if self.options.on_ready:
            self.options.on_ready()
        try:
            yield
        finally:
            if self.scheduler:
                self.scheduler.stop()
            # No new invocation starts once the extras begin to let go of what functions use.
            self.runtime.shutdown()
            await asyncio.get_running_loop().run_in_executor(None, self.extras.stop)

    def _start_schedules(self) -> None:
        enabled = {s.key: s for s in self.template.schedules() if s.enabled}
        if not (self.options.schedules and enabled):
            return

        def fire(key: str) -> None:
            self.runtime.fire(enabled[key])

        self.scheduler = Scheduler({k: s.expression for k, s in enabled.items()}, fire,
                                   scale=self.options.schedule_scale)
        self.scheduler.start()

    def _banner(self) -> None:
        o = self.options
        host = f"[{o.host}]" if ":" in o.host else o.host
        facts = ", ".join(["docs: /docs", *self.extras.banner_facts()])
        lines = [f"{self.extras.title} on http://{host}:{o.port} ({facts})"]
        for route in self.template.routes():
            if o.api_key:
                lock = "" if route.path in self._open_paths else "  [api key]"
            else:
                lock = "  [sigv4]" if self._iam is not None and route.auth == "AWS_IAM" else ""
            lines.append(f"  {route.route_key:<45} -> {route.function}{lock}")
        for s in self.template.schedules():
            state = "" if s.enabled and o.schedules else "  [not fired automatically]"
            scale = f" (x{o.schedule_scale:g})" if o.schedule_scale != 1 and s.expression.startswith("rate") else ""
            lines.append(f"  {s.expression + scale:<45} -> {s.function}{state}")
        lines.extend(self.extras.banner_lines())
        print("\n".join(lines), file=sys.stderr, flush=True)
