"""What the cloud gives the preview service around its functions, in the emulator: the signed
links of the local artifact store (`/artifacts/...`), a Prometheus `/metrics` with fresh queue
gauges, the operator dashboard (`/dashboard`: a page without data whose script calls the signed
API routes), the render worker as a long-running thread, and the enqueue kick delivered as a
local async invoke. Plugged into the gateway (local/server.py) as its `Extras`.

`shared` is imported inside the methods: its modules read the environment, which the emulator
applies before any of them is imported.
"""

from __future__ import annotations

import contextlib
import html
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Route

from local.server import AsyncInvoker, Extras, message

if TYPE_CHECKING:
    from shared.worker import Worker

log = logging.getLogger("local.preview")

DASHBOARD = "/dashboard"
DASHBOARD_DIR = Path(__file__).with_name("dashboard")
# The dashboard's files: the page, its script and its style (nothing else is served from there).
DASHBOARD_ASSETS = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}

@dataclass(frozen=True)
class PreviewOptions:
    redis: str = ""  # how Redis is provided, for the banner
    worker: bool = True  # run the render worker as a long-running thread (--no-worker: not)
    worker_function: str | None = None  # logical id of the function that thread stands in for
    fast_shutdown: bool = False  # under --reload: hand running jobs back at once instead of finishing them


class PreviewExtras(Extras):
    title = "Preview service emulator"

    def __init__(self, options: PreviewOptions) -> None:
        self.options = options
        self.worker: Worker | None = None
        self.worker_thread: threading.Thread | None = None
        self._worker_stopping = threading.Event()

    def routes(self) -> Sequence[BaseRoute]:
        from shared.artifacts.signing import ROUTE

        return (
            Route(ROUTE + "{path:path}", self.artifact, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route(DASHBOARD, self.dashboard, methods=["GET"]),
            Route(DASHBOARD + "/{name}", self.dashboard_asset, methods=["GET"]),
        )

    def is_open(self, path: str) -> bool:
        from shared.artifacts.signing import ROUTE

        # An artifact link is authorised by its own signature; the dashboard's files carry no
        # data (its script sends the credentials typed into it with each API call).
        return path.startswith(ROUTE) or path == DASHBOARD or path.startswith(DASHBOARD + "/")

    def banner_facts(self) -> Sequence[str]:
        return ("dashboard: /dashboard", "metrics: /metrics", f"Redis: {self.options.redis}")

    def banner_lines(self) -> Sequence[str]:
        if self.worker is None:
            return ()
        return (f"  long-running worker ({self.worker.settings.worker_concurrency} job loops) "
                f"-> {self.options.worker_function}",)

    # -- routes

    async def artifact(self, request: Request) -> Response:
        from shared import wiring
        from shared.artifacts import layout
        from shared.artifacts.local import LocalStore

        store = wiring.services().store
        if not isinstance(store, LocalStore):  # S3 artifacts: their presigned URLs point at S3, not here
            return message(404, "Not Found")
        expires, sig = request.query_params.get("expires"), request.query_params.get("sig")
        if not expires or not sig:
            return message(403, "Forbidden")
        path = request.url.path
        verdict = store.signer.check(path, expires, sig)
        if verdict != "valid":
            # A genuine link past its time says so (ask the artifact route for fresh links);
            # anything else stays a bare 403.
            return message(403, "link expired" if verdict == "expired" else "Forbidden")
        # Only a request whose signature holds may learn that the file is missing.
        granted = await run_in_threadpool(store.file, path)
        if granted is None:
            # A preview the size budget pruned says so, as the artifact route does.
            reason = await run_in_threadpool(store.pruned_reason_for, path)
            return message(404, reason or "Not Found")
        stat = await run_in_threadpool(os.stat, granted)
        response = FileResponse(granted, media_type=layout.content_type(granted.name), stat_result=stat,
                                filename=granted.name, content_disposition_type="inline",
                                headers={"Cache-Control": "private, max-age=60", "X-Content-Type-Options": "nosniff"})
        if _matches(request.headers.get("if-none-match"), response.headers["etag"]):
            kept = {k: response.headers[k] for k in ("etag", "cache-control", "last-modified")}
            return Response(status_code=304, headers=kept)
        _drop_unusable_range(request, stat.st_size)
        return response

    async def dashboard(self, request: Request) -> Response:
        # The region requests are signed for: the emulator's (the template's), which it puts
        # into its own environment as Lambda does.
        region = html.escape(os.environ.get("AWS_REGION") or "us-east-1", quote=True)
        page = (DASHBOARD_DIR / "index.html").read_text(encoding="utf-8").replace("{{region}}", region)
        return Response(page, media_type="text/html", headers=_PAGE_HEADERS)

    async def dashboard_asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in DASHBOARD_ASSETS:
            return message(404, "Not Found")
        return Response((DASHBOARD_DIR / name).read_bytes(), media_type=DASHBOARD_ASSETS[name], headers=_PAGE_HEADERS)

    async def metrics(self, request: Request) -> Response:
        from shared import service, wiring
        from shared.prometheus_metrics import PROMETHEUS_CONTENT_TYPE, prometheus_text

        def refresh() -> None:
            with contextlib.suppress(Exception):  # Redis down: scrape what we have
                service.queue_metrics(wiring.services().queue)

        await run_in_threadpool(refresh)
        return Response(prometheus_text(), headers={"content-type": PROMETHEUS_CONTENT_TYPE})

    # -- start-up and shutdown

    def start(self, invoke_async: AsyncInvoker) -> None:
        from shared import wiring

        # The functions' services, with the enqueue kick delivered as a local async invoke.
        wiring.start(invoker=invoke_async)
        if self.options.worker and self.options.worker_function:
            self._start_worker()

    def _start_worker(self) -> None:
        from shared import wiring

        self.worker = wiring.services().new_worker()
        stopping = self._worker_stopping = threading.Event()

        def run() -> None:
            # A worker gives up (non-zero status) when more renders are stuck than it has job
            # loops; a process would be restarted by its supervisor, this thread starts a fresh
            # worker itself, after a pause that grows while it keeps giving up.
            pause = 1.0
            while True:
                worker = self.worker
                assert worker is not None
                try:
                    status = worker.run_forever()
                except Exception:
                    log.exception("the render worker stopped unexpectedly")
                    status = 1
                if stopping.is_set() or status == 0:
                    return
                log.error("the render worker stopped (status %s); starting a fresh one in %.0f s", status, pause)
                if stopping.wait(pause):
                    return
                pause = min(pause * 2, 60.0)
                self.worker = wiring.services().new_worker()
                if stopping.is_set():  # the stop came while the fresh worker was being made
                    return

        self.worker_thread = threading.Thread(target=run, name="render-worker", daemon=True)
        self.worker_thread.start()

    def stop(self) -> None:
        from shared import wiring

        self._stop_worker()
        wiring.reset()

    def _stop_worker(self) -> None:
        if self.worker is None or self.worker_thread is None:
            return
        self._worker_stopping.set()
        self.worker.stop()
        if self.options.fast_shutdown:
            self.worker.abort_event.set()
        self.worker_thread.join(self.worker.settings.shutdown_grace_seconds + 35)


# The dashboard's files change with the code; its page is never framed by another site.
_PAGE_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY"}


def _matches(if_none_match: str | None, etag: str) -> bool:
    """If-None-Match names this ETag (weakly compared, as RFC 9110 says for GET) or is `*`."""
    if not if_none_match:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag.removeprefix("W/") in tags


def _drop_unusable_range(request: Request, size: int) -> None:
    """A Range of another unit or a malformed one is ignored (the whole file, 200), as RFC 9110
    allows; a well-formed byte range outside the file still answers 416."""
    from starlette.responses import MalformedRangeHeader

    value = request.headers.get("range")
    if value is None:
        return
    try:
        FileResponse._parse_range_header(value, size)
    except MalformedRangeHeader:
        request.scope["headers"] = [(k, v) for k, v in request.scope["headers"] if k.lower() != b"range"]
    except Exception:  # noqa: BLE001 - RangeNotSatisfiable: FileResponse answers it (416)
        return
