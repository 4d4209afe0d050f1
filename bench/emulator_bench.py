"""Emulator benchmark: what the emulator costs over calling the same code directly.

1. Enqueue throughput: concurrent clients POST distinct jobs through `python -m local serve`
   and through a bare Starlette route (same uvicorn settings) that calls the same core
   function, shared.service.enqueue; target: the emulator reaches at least 0.6x.
2. Per-request overhead: the emulator's ASGI app in-process (event building, thread hop,
   response conversion) against a direct handler(event, context) call; target p50 <= 1 ms.

Cold starts are bench.cold_start's: the packaged functions under the runtime's interpreter.

Everything runs against a private Redis on a free loopback port; the worker and the enqueue
kick are off on both sides, so both do exactly the admission work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from bench import harness
from bench.harness import Figure, Target

ROOT = harness.REPO_ROOT
TEMPLATE = ROOT / "template.yaml"
STATUS_ROUTE = "GET /api/preview/job/{jobId}/status"

THROUGHPUT_TARGET = Target(">=", 0.6)  # emulator over bare route, enqueues per second
OVERHEAD_TARGET = Target("<=", 1.0, "ms")  # p50 per request, emulator app over a direct call


@dataclass(frozen=True)
class Sizes:
    requests: int = 3000
    clients: int = 16
    rounds: int = 2
    overhead_samples: int = 2000


BENCH_KEY = "bench-key"  # the emulator's API key (the bare baseline ignores it)

FULL = Sizes()
QUICK = Sizes(requests=300, clients=8, rounds=1, overhead_samples=200)


# --------------------------------------------------------------------------- servers


def server_env(redis_url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREVIEW_")}
    env.update({
        "REDIS_URL": redis_url,
        "DATA_DIR": str(data_dir),
        "PREVIEW_QUEUE_MAX": "1000000",
        # Admission keeps room for every unfinished job's final record: room for all the bench admits.
        "PREVIEW_KEEP_COMPLETED_COUNT": "1000000",
        "PREVIEW_KEEP_FAILED_COUNT": "1000000",
        "RENDER_WORKER_FUNCTION": "",  # no kick: both sides do the admission only
        "PYTHONUNBUFFERED": "1",
    })
    return env


@contextmanager
def running(kind: str, env: dict[str, str]) -> Iterator[str]:
    port = harness.free_port()
    if kind == "emulator":
        # The API key mode: a constant-time key check per request, where the template's IAM
        # authorization would have the client sign each request and the emulator recompute it.
        command = [sys.executable, "-m", "local", "serve", "--port", str(port), "--no-worker", "--no-schedules",
                   "--no-access-log", "--api-key", BENCH_KEY]
    else:
        command = [sys.executable, "-m", "bench.emulator_bench", "--bare-server", str(port)]
    with harness.child_server(command, port, env, cwd=ROOT) as url:
        yield url


def bare_server(port: int) -> None:
    """The baseline: one Starlette route calling shared.service.enqueue, same uvicorn settings."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from shared import service, wiring
    from shared.api import admission_answer, parse_body
    from shared.errors import PreviewError
    from shared.models import EnqueueResponse

    def admit(body: bytes, origin: str) -> tuple[int, EnqueueResponse]:
        services = wiring.services()
        document = parse_body(body.decode() if body else None, False, services.settings.max_body_bytes)
        result = service.enqueue(document, settings=services.settings, queue=services.queue, kick=services.kick)
        return admission_answer(result, origin)

    async def enqueue(request: Request) -> Response:
        body = await request.body()
        origin = f"{request.url.scheme}://{request.headers.get('host', '')}"
        try:
            status, answer = await run_in_threadpool(admit, body, origin)
        except PreviewError as exc:
            return Response(json.dumps(exc.body()), exc.status_code, media_type="application/json")
        headers = {"Location": answer.statusUrl} if status == 202 else {}
        body = json.dumps(answer.as_json(), separators=(",", ":"))
        return Response(body, status, headers=headers, media_type="application/json")

    app = Starlette(routes=[Route("/api/preview/job", enqueue, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on",
                proxy_headers=False, server_header=False)


# --------------------------------------------------------------------------- load


def job_body(job_id: str) -> bytes:
    return json.dumps({"jobId": job_id, "projectId": "bench", "requestId": f"req-{job_id}", "dryRun": True,
                       "previewRequest": {"steps": [], "assets": [], "audio": {}}}).encode()


async def _load(url: str, prefix: str, total: int, clients: int) -> float:
    import httpx

    counter = iter(range(total))
    failures: list[int] = []

    async def client_loop(client: httpx.AsyncClient) -> None:
        for i in counter:
            response = await client.post("/api/preview/job", content=job_body(f"{prefix}-{i}"),
                                         headers={"content-type": "application/json", "x-api-key": BENCH_KEY})
            if response.status_code != 202:
                failures.append(response.status_code)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} enqueues failed, e.g. status {failures[0]}")
    return total / elapsed


def enqueue_rate(kind: str, env: dict[str, str], sizes: Sizes, round_: int) -> float:
    """jobs/s of one server of `kind` (started for this round), after a warm-up load."""
    with running(kind, env) as url:
        asyncio.run(_load(url, f"warm-{kind}-{round_}", min(200, sizes.requests), sizes.clients))
        return asyncio.run(_load(url, f"{kind}-{round_}", sizes.requests, sizes.clients))


def throughput(redis_url: str, data_dir: Path, sizes: Sizes) -> dict[str, float]:
    env = server_env(redis_url, data_dir)

    def report(round_: int, kind: str, rate: float) -> None:
        harness.progress(f"  round {round_ + 1} {kind:<8} {rate:8.0f} jobs/s")

    contenders = {kind: partial(enqueue_rate, kind, env, sizes) for kind in ("emulator", "bare")}
    rates = harness.alternate(sizes.rounds, contenders, before=partial(harness.flush_redis, redis_url), report=report)
    return harness.highest(rates)


# --------------------------------------------------------------------------- per-request overhead


def measure_overhead(samples: int) -> dict[str, float]:
    """In this process: the emulator's app against the handler called directly (both on the
    same status route, same Redis). Runs in a subprocess of the bench (it applies the
    template's environment to os.environ)."""
    from local import environment, isolation
    from local.events import LambdaContext, http_event
    from local.runtime import FunctionRuntime
    from local.server import Emulator, ServerOptions
    from local.startup import ServeArgs, prepare, shell_environment

    args = ServeArgs(template=TEMPLATE)
    prepared = prepare(args, shell_environment(args))
    environment.apply(prepared.env.values)
    template = prepared.template
    runtime = FunctionRuntime(template)
    runtime.load()
    isolation.install()
    app = Emulator(template, runtime, ServerOptions(schedules=False)).app()
    route = next(r for r in template.routes() if r.route_key == STATUS_ROUTE)
    spec = template.functions[route.function]
    handler = runtime.handlers[spec.logical_id]
    path = "/api/preview/job/bench-unknown/status"
    headers = [(b"host", b"127.0.0.1:3000"), (b"user-agent", b"bench"), (b"accept", b"*/*")]
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 3000),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    statuses: list[int] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    event = http_event(route_key=STATUS_ROUTE, method="GET", raw_path=path, raw_query="", headers=headers, body=b"",
                       path_parameters={"jobId": "bench-unknown"}, source_ip="127.0.0.1", scheme="http",
                       server_port=3000)

    async def run() -> tuple[list[float], list[float]]:
        direct: list[float] = []
        emulated: list[float] = []
        for i in range(samples + 50):
            started = time.perf_counter()
            answer = handler(event, LambdaContext(template, spec))
            middle = time.perf_counter()
            await app(dict(scope), receive, send)
            ended = time.perf_counter()
            if i >= 50:  # warm-up: first calls fill caches and connection pools
                direct.append(middle - started)
                emulated.append(ended - middle)
        assert answer["statusCode"] == 404 and set(statuses) == {404}, (answer, set(statuses))
        return direct, emulated

    direct, emulated = asyncio.run(run())
    runtime.shutdown()
    return {
        "direct_p50_ms": statistics.median(direct) * 1000,
        "emulator_p50_ms": statistics.median(emulated) * 1000,
        "overhead_p50_ms": (statistics.median(emulated) - statistics.median(direct)) * 1000,
    }


def overhead(redis_url: str, data_dir: Path, samples: int) -> dict[str, float]:
    env = server_env(redis_url, data_dir)
    result = subprocess.run([sys.executable, "-m", "bench.emulator_bench", "--measure-overhead", str(samples)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"overhead measurement failed: {result.stderr.strip()[-2000:]}")
    measured: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return measured


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 when every target is met, 1 when one is missed."""
    parser = harness.argument_parser("bench.emulator_bench", __doc__,
                                     quick_help="small sizes, one round: check that it runs")
    parser.add_argument("--bare-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--measure-overhead", type=int, metavar="SAMPLES", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare_server:
        bare_server(args.bare_server)
        return 0
    if args.measure_overhead:
        print(json.dumps(measure_overhead(args.measure_overhead)))
        return 0

    sizes = QUICK if args.quick else FULL
    figures: list[Figure] = []
    with harness.reports_duration("emulator bench"), harness.private_redis("emulator-bench-") as lab:
        print(f"emulator bench: private Redis on 127.0.0.1:{lab.port}; {sizes.requests} enqueues x "
              f"{sizes.clients} concurrent clients, best of {sizes.rounds} rounds; {harness.cpu_count()} CPUs, "
              f"load average {harness.load_average():.2f}", flush=True)
        log_step = harness.StepLog()
        log_step("enqueue throughput, emulator and bare route in turn")
        rates = throughput(lab.url, lab.data_dir, sizes)
        ratio = rates["emulator"] / rates["bare"]
        figures += [
            Figure("enqueue throughput, emulator", f"{rates['emulator']:.0f} jobs/s"),
            Figure("enqueue throughput, bare Starlette route", f"{rates['bare']:.0f} jobs/s"),
            Figure.checked("emulator / bare throughput", f"{ratio:.2f}x", ratio, THROUGHPUT_TARGET),
        ]
        log_step(f"per-request overhead, {sizes.overhead_samples} samples")
        measured = overhead(lab.url, lab.data_dir, sizes.overhead_samples)
        figures += [
            Figure("status request, handler called directly (p50)", f"{measured['direct_p50_ms']:.3f} ms"),
            Figure("status request through the emulator app (p50)", f"{measured['emulator_p50_ms']:.3f} ms"),
            Figure.checked("per-request overhead of the emulator (p50)", f"{measured['overhead_p50_ms']:.3f} ms",
                           measured["overhead_p50_ms"], OVERHEAD_TARGET),
        ]
        print()
        print(harness.figures_table(figures))
    return harness.exit_status(figure.passed for figure in figures)


if __name__ == "__main__":
    sys.exit(main())
