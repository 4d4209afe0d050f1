"""Emulator benchmark: what the emulator costs over calling the same code directly.

1. Enqueue throughput: concurrent clients POST distinct jobs through `python -m local serve`
   and through a bare Starlette route (same uvicorn settings) that calls the same core
   function, shared.service.enqueue; target: the emulator reaches at least 0.6x.
2. Per-request overhead: the emulator's ASGI app in-process (event building, thread hop,
   response conversion) against a direct handler(event, context) call; target p50 <= 1 ms.
3. Cold import: each HTTP handler module in a fresh interpreter, with the variables the Lambda
   runtime sets, against a minimal Powertools resolver handler; target <= 1.2x. For contrast,
   the same minimal handler that also imports redis-py and pydantic (the libraries the core is
   built on, so the least any handler of this service can load).

Everything runs against a private Redis on a free loopback port; the worker and the enqueue
kick are off on both sides, so both do exactly the admission work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
STATUS_ROUTE = "GET /api/preview/job/{jobId}/status"

MINIMAL_HANDLER = '''\
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver

app = APIGatewayHttpResolver()


@app.get("/hello/<name>")
def hello(name: str) -> dict:
    return {"hello": name}


def handler(event, context):
    return app.resolve(event, context)
'''


@dataclass(frozen=True)
class Sizes:
    requests: int = 3000
    clients: int = 16
    rounds: int = 2
    overhead_samples: int = 2000
    import_runs: int = 5


QUICK = Sizes(requests=300, clients=8, rounds=1, overhead_samples=200, import_runs=2)


@dataclass(frozen=True)
class Row:
    metric: str
    value: str
    target: str = ""
    passed: bool | None = None


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(redis_url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREVIEW_")}
    env.update({
        "REDIS_URL": redis_url,
        "DATA_DIR": str(data_dir),
        "PREVIEW_QUEUE_MAX": "1000000",
        "RENDER_WORKER_FUNCTION": "",  # no kick: both sides do the admission only
        "PYTHONUNBUFFERED": "1",
    })
    return env


@contextmanager
def running(kind: str, env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    if kind == "emulator":
        command = [sys.executable, "-m", "local", "serve", "--port", str(port), "--no-worker", "--no-schedules",
                   "--no-access-log"]
    else:
        command = [sys.executable, "-m", "bench.emulator_bench", "--bare-server", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_listening(port, process)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            error = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"server exited: {error.strip()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("server did not start")


def bare_server(port: int) -> None:
    """The baseline: one Starlette route calling shared.service.enqueue, same uvicorn settings."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from shared import service, wiring
    from shared.api import job_url, parse_body
    from shared.errors import PreviewError
    from shared.models import EnqueueResponse

    def admit(body: bytes, origin: str) -> tuple[int, EnqueueResponse]:
        services = wiring.services()
        document = parse_body(body.decode() if body else None, False, services.settings.max_body_bytes)
        result = service.enqueue(document, settings=services.settings, queue=services.queue, kick=services.kick)
        answer = EnqueueResponse(jobId=result.jobId, status="queued" if result.created else result.state,
                                 state=result.state, statusUrl=job_url(origin, result.jobId, "status"),
                                 artifactUrl=job_url(origin, result.jobId, "artifact"))
        return (202 if result.created else 200), answer

    async def enqueue(request: Request) -> Response:
        body = await request.body()
        origin = f"{request.url.scheme}://{request.headers.get('host', '')}"
        try:
            status, answer = await run_in_threadpool(admit, body, origin)
        except PreviewError as exc:
            return Response(json.dumps(exc.body()), exc.status_code, media_type="application/json")
        headers = {"Location": answer.statusUrl} if status == 202 else {}
        return Response(answer.model_dump_json(), status, headers=headers, media_type="application/json")

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
                                         headers={"content-type": "application/json"})
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


def throughput(redis_url: str, data_dir: Path, sizes: Sizes) -> dict[str, float]:
    import redis

    client = redis.Redis.from_url(redis_url)
    best: dict[str, float] = {}
    env = server_env(redis_url, data_dir)
    for round_ in range(sizes.rounds):
        for kind in ("emulator", "bare"):
            client.flushall()
            with running(kind, env) as url:
                asyncio.run(_load(url, f"warm-{kind}-{round_}", min(200, sizes.requests), sizes.clients))
                rate = asyncio.run(_load(url, f"{kind}-{round_}", sizes.requests, sizes.clients))
            best[kind] = max(best.get(kind, 0.0), rate)
            print(f"  round {round_ + 1} {kind:<8} {rate:8.0f} jobs/s", flush=True)
    client.close()
    return best


# --------------------------------------------------------------------------- per-request overhead


def measure_overhead(samples: int) -> dict[str, float]:
    """In this process: the emulator's app against the handler called directly (both on the
    same status route, same Redis). Runs in a subprocess of the bench (it applies the
    template's environment to os.environ)."""
    from local import environment, isolation
    from local.events import LambdaContext, http_event
    from local.runtime import FunctionRuntime
    from local.serve import ServeArgs, prepare, shell_environment
    from local.server import Emulator, ServerOptions

    args = ServeArgs(template=TEMPLATE)
    prepared = prepare(args, shell_environment(args))
    environment.apply(prepared.env.values)
    template = prepared.template
    runtime = FunctionRuntime(template)
    runtime.load()
    isolation.install()
    app = Emulator(template, runtime, ServerOptions(schedules=False, worker=False)).app()
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


# --------------------------------------------------------------------------- cold import


# What the Lambda runtime sets before it imports a handler (observability reads them).
LAMBDA_ENV = {"AWS_EXECUTION_ENV": "AWS_Lambda_python3.12", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
              "AWS_REGION": "us-east-1"}
LIBRARIES_FLOOR = "import minimal_handler, redis, pydantic\nclass Probe(pydantic.BaseModel):\n    n: int\n"


def import_seconds(code: str, runs: int, function_name: str, extra_path: str | None = None) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREVIEW_", "REDIS_"))}
    env.update(LAMBDA_ENV, AWS_LAMBDA_FUNCTION_NAME=function_name)
    if extra_path:
        env["PYTHONPATH"] = extra_path + os.pathsep + env.get("PYTHONPATH", "")
    times = []
    for i in range(runs + 1):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if i:  # the first run compiles bytecode
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def cold_imports(runs: int, tmp: Path) -> list[Row]:
    from local.template import load_template

    (tmp / "minimal_handler.py").write_text(MINIMAL_HANDLER)
    baseline = import_seconds("import minimal_handler", runs, "minimal", str(tmp))
    floor = import_seconds(LIBRARIES_FLOOR, runs, "minimal", str(tmp))
    rows = [Row("cold import, minimal Powertools resolver handler", f"{baseline * 1000:.0f} ms"),
            Row("cold import, the same + redis-py + pydantic (contrast)",
                f"{floor * 1000:.0f} ms = {floor / baseline:.2f}x")]
    for spec in load_template(TEMPLATE).functions.values():
        if not spec.routes:
            continue
        seconds = import_seconds(f"import {spec.module}", runs, spec.name)
        ratio = seconds / baseline
        rows.append(Row(f"cold import {spec.module}", f"{seconds * 1000:.0f} ms = {ratio:.2f}x", "<= 1.20x",
                        ratio <= 1.2))
    return rows


# --------------------------------------------------------------------------- report


def format_table(rows: list[Row]) -> str:
    width = max(len(r.metric) for r in rows)
    lines = [f"{'metric':<{width}}  {'value':>22}  {'target':>10}  result", "-" * (width + 44)]
    for row in rows:
        result = "" if row.passed is None else "PASS" if row.passed else "MISS"
        lines.append(f"{row.metric:<{width}}  {row.value:>22}  {row.target:>10}  {result}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 when every target is met, 1 when one is missed."""
    parser = argparse.ArgumentParser(prog="python -m bench.emulator_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one round: check that it runs")
    parser.add_argument("--bare-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--measure-overhead", type=int, metavar="SAMPLES", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare_server:
        bare_server(args.bare_server)
        return 0
    if args.measure_overhead:
        print(json.dumps(measure_overhead(args.measure_overhead)))
        return 0

    from local.redis_server import RedisServer

    sizes = QUICK if args.quick else Sizes()
    started = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="emulator-bench-") as tmp_name, \
            RedisServer(Path(tmp_name) / "redis") as server:
        tmp = Path(tmp_name)
        print(f"emulator bench: private Redis on 127.0.0.1:{server.port}; {sizes.requests} enqueues x "
              f"{sizes.clients} concurrent clients, best of {sizes.rounds} rounds; {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.2f}", flush=True)
        rates = throughput(server.url, tmp / "data", sizes)
        ratio = rates["emulator"] / rates["bare"]
        rows += [
            Row("enqueue throughput, emulator", f"{rates['emulator']:.0f} jobs/s"),
            Row("enqueue throughput, bare Starlette route", f"{rates['bare']:.0f} jobs/s"),
            Row("emulator / bare throughput", f"{ratio:.2f}x", ">= 0.60x", ratio >= 0.6),
        ]
        measured = overhead(server.url, tmp / "data", sizes.overhead_samples)
        rows += [
            Row("status request, handler called directly (p50)", f"{measured['direct_p50_ms']:.3f} ms"),
            Row("status request through the emulator app (p50)", f"{measured['emulator_p50_ms']:.3f} ms"),
            Row("per-request overhead of the emulator (p50)", f"{measured['overhead_p50_ms']:.3f} ms", "<= 1 ms",
                measured["overhead_p50_ms"] <= 1.0),
        ]
        rows += cold_imports(sizes.import_runs, tmp)
    print()
    print(format_table(rows))
    print(f"\nemulator bench took {time.perf_counter() - started:.1f} s")
    return 0 if all(row.passed is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
