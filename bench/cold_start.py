"""Cold start as a caller feels it: a fresh Lambda-like process answering its first request.

    python -m bench.cold_start [--rounds 20] [--quick] [--function JobStatusFunction]

Exit status 0 when every target is met, 1 when one is missed, 2 when it cannot run (no
Python of the runtime's version, or the packages cannot be built).

Each side is a folder built for the template's runtime (python3.12, manylinux wheels):

* ours: `build/package/<Function>` exactly as `python -m deploy.package` makes it;
* the baseline: what a user would write without this project, a Powertools
  `APIGatewayHttpResolver` route doing one redis-py call and `json.dumps` (for the enqueue
  route also the payload's validation against the same JSON Schema with jsonschema, which any
  real enqueue handler needs), in a folder holding the very same dependency tree (the
  package's cached site, copied) and byte-compiled the same way.

A measurement spawns the runtime's interpreter with nothing but that folder on `sys.path`
(`-I -S`: no site-packages, no PYTHONPATH; the AWS SDK is not there, so a handler that
imported boto3 on its first request would fail), with the variables the Lambda runtime sets
(AWS_LAMBDA_FUNCTION_NAME, AWS_LAMBDA_FUNCTION_MEMORY_SIZE, AWS_REGION, AWS_EXECUTION_ENV,
LAMBDA_TASK_ROOT, _HANDLER, ...) and the template's environment of the function, REDIS_URL
pointing at a private redis-server. A small bootstrap (the same for both sides) imports
`_HANDLER`, calls it with a real fixture from events/ and writes the response to a pipe;
the time is from the spawn to that response read by the bench. The enqueue kick is off
(RENDER_WORKER_FUNCTION empty: the baseline does not invoke Lambda either) and
ARTIFACT_BUCKET names a bucket, as deployed (the S3 client is made on first use only).

Rounds interleave the two sides (their order alternating), each run on the same Redis
state (the job of the status fixture admitted beforehand; an empty queue before an
enqueue). The median, min-max and the ratio of the medians are printed, for the time to the
answer and for the CPU time the process used until then (which a busy machine inflates far
less); target: ours within 1.2x of the baseline on both.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import harness
from bench.harness import Figure, Target
from deploy import lambda_runtime

ROOT = harness.REPO_ROOT
EVENTS = ROOT / "events"
BASELINE_OUT = ROOT / "build" / "bench"
TARGET = Target("<=", 1.2)
MEMORY_MB = 512
BUCKET = "preview-artifacts-bench"
OURS, BASELINE = "ours", "baseline"


@dataclass(frozen=True)
class Case:
    """One HTTP function: its first request, and the baseline handler doing the same work."""

    function: str  # logical id
    fixture: str  # events/<folder>/<fixture>.json
    status: int  # what both sides must answer
    baseline: str  # the hand-written handler module's source
    seeded: bool  # the fixture's job must exist first (else: an empty queue)

    @property
    def event_path(self) -> Path:
        return EVENTS / self.fixture


# A user's status route: the resolver, one HGETALL of the job's hash, json.dumps.
BASELINE_STATUS = '''\
import json
import os

import redis
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response

app = APIGatewayHttpResolver()
client = redis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True, socket_timeout=0.75)
PREFIX = "pq:{" + os.environ.get("PREVIEW_QUEUE_NAME", "preview-jobs") + "}:job:"


@app.get("/api/preview/job/<job_id>/status")
def status(job_id: str) -> Response:
    fields = client.hgetall(PREFIX + job_id)
    if not fields:
        return Response(404, "application/json", json.dumps({"error": "not_found"}))
    fields.pop("payload", None)
    return Response(200, "application/json", json.dumps(fields))


def handler(event, context):
    return app.resolve(event, context)
'''

# A user's enqueue route: the resolver, the body checked against the same schema with
# jsonschema (the validator built at import, as one would), one SET NX, json.dumps.
BASELINE_ENQUEUE = '''\
import json
import os

import redis
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from jsonschema import Draft7Validator, FormatChecker

app = APIGatewayHttpResolver()
client = redis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True, socket_timeout=0.75)
PREFIX = "pq:{" + os.environ.get("PREVIEW_QUEUE_NAME", "preview-jobs") + "}:job:"
with open(os.path.join(os.path.dirname(__file__), "preview-job.schema.json")) as handle:
    validator = Draft7Validator(json.load(handle), format_checker=FormatChecker())


@app.post("/api/preview/job")
def enqueue() -> Response:
    document = app.current_event.json_body
    errors = [{"path": "/" + "/".join(map(str, e.path)), "message": e.message} for e in validator.iter_errors(document)]
    if errors:
        return Response(400, "application/json", json.dumps({"error": "invalid_payload", "errors": errors}))
    created = client.set(PREFIX + document["jobId"], json.dumps(document), nx=True)
    body = {"jobId": document["jobId"], "status": "queued" if created else "exists"}
    return Response(202 if created else 200, "application/json", json.dumps(body))


def handler(event, context):
    return app.resolve(event, context)
'''

CASES = (
    Case("JobStatusFunction", "job_status/success.json", 200, BASELINE_STATUS, seeded=True),
    Case("EnqueueJobFunction", "enqueue_job/success.json", 202, BASELINE_ENQUEUE, seeded=False),
)

# The same for both sides: what the Lambda runtime's bootstrap does before the first answer
# (import _HANDLER from LAMBDA_TASK_ROOT, call it with the event and a context), the response
# written to the pipe the bench reads, after the CPU time the process had used until then (which
# a busy machine inflates far less than the wall time).
BOOTSTRAP = '''\
import importlib, json, os, sys, time
sys.path.insert(0, os.environ["LAMBDA_TASK_ROOT"])
module, _, name = os.environ["_HANDLER"].rpartition(".")
handler = getattr(importlib.import_module(module), name)
''' + lambda_runtime.context_source(10_000) + '''with open(sys.argv[1], "rb") as handle:
    event = json.load(handle)
response = json.dumps(handler(event, Context()))
with open(int(sys.argv[2]), "w") as out:
    out.write(json.dumps({"cpu": time.process_time()}) + "\\t" + response + "\\n")
'''


@dataclass(frozen=True)
class Side:
    name: str
    task_root: Path
    handler: str


def lambda_env(function: str, task_root: Path, handler: str, template_env: dict[str, str],
               redis_url: str) -> dict[str, str]:
    """What a python3.12 function's process starts with (besides credentials)."""
    env = dict(template_env)
    env.update({
        "REDIS_URL": redis_url,
        "REDIS_SECRET": "",
        "ARTIFACT_BUCKET": BUCKET,
        "RENDER_WORKER_FUNCTION": "",
        "PREVIEW_QUEUE_MAX": "1000",
    })
    env.update(lambda_runtime.environment(function, task_root, handler, memory_mb=MEMORY_MB))
    return env


def first_answer(python: str, side: Side, event: Path, env: dict[str, str]) -> tuple[float, float, dict[str, Any]]:
    """Seconds from spawning the interpreter to its first response read, the CPU seconds the
    process used until it wrote it, and the response."""
    read_end, write_end = os.pipe()
    try:
        started = time.perf_counter()
        process = subprocess.Popen([python, "-I", "-S", "-c", BOOTSTRAP, str(event), str(write_end)],
                                   env=env, cwd="/", pass_fds=(write_end,), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE)
        os.close(write_end)
        write_end = -1
        with os.fdopen(read_end, "rb") as pipe:
            read_end = -1
            line = pipe.readline()
            elapsed = time.perf_counter() - started
        _, errors = process.communicate(timeout=60)
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)
    if process.returncode != 0 or not line:
        raise RuntimeError(f"{side.name}: the process exited {process.returncode} without an answer: "
                           f"{errors.decode(errors='replace').strip()[-2000:]}")
    usage, _, response = line.partition(b"\t")
    return elapsed, float(json.loads(usage)["cpu"]), json.loads(response)


def interpreter_sys_path(python: str, task_root: Path) -> list[str]:
    """sys.path as the bootstrap sees it: the task root, then the interpreter's standard library."""
    code = "import os, sys; sys.path.insert(0, os.environ['LAMBDA_TASK_ROOT']); print('\\n'.join(sys.path))"
    out = subprocess.run([python, "-I", "-S", "-c", code], env={"LAMBDA_TASK_ROOT": str(task_root)},
                         capture_output=True, text=True, check=True).stdout
    return out.splitlines()


# --------------------------------------------------------------------------- the folders


def build_sides(cases: Sequence[Case], python: str, log: Callable[[str], None]) -> dict[str, list[Side]]:
    """Package the functions (cached: seconds when nothing changed) and the baselines beside
    them; per function: ours, then the baseline."""
    from deploy import package

    built = {b.plan.logical_id: b for b in package.build([c.function for c in cases], python=python,
                                                        log=lambda line: log(f"    {line}"))}
    sides = {}
    for case in cases:
        ours = built[case.function]
        if ours.compiled_with is None:
            raise package.BuildError("the package has no bytecode: the comparison would not be the deployed one")
        folder = BASELINE_OUT / f"Baseline{case.function}"
        shutil.rmtree(folder, ignore_errors=True)
        # The same dependency tree, byte-compiled by the same interpreter (the cache's site).
        shutil.copytree(ours.site.path, folder, ignore=shutil.ignore_patterns(".build-info.json"))
        (folder / "baseline_handler.py").write_text(case.baseline)
        shutil.copy2(ROOT / "schemas" / "preview-job.schema.json", folder / "preview-job.schema.json")
        package.compile_tree(python, folder, ("baseline_handler.py",))
        sides[case.function] = [Side(OURS, ours.path, ours.plan.handler),
                                Side(BASELINE, folder, "baseline_handler.handler")]
    return sides


# --------------------------------------------------------------------------- Redis state


def seed(redis_url: str, case: Case) -> None:
    """The state each run starts from: an empty queue, plus the fixture's job when it reads one."""
    harness.flush_redis(redis_url)
    if not case.seeded:
        return
    import redis

    from shared.queue import JobQueue
    from shared.settings import Settings

    event = json.loads((EVENTS / "enqueue_job" / "success.json").read_text())
    settings = Settings.from_env({"REDIS_URL": redis_url})
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    queue = JobQueue(client, settings)
    try:
        queue.admit(json.loads(event["body"]))
    finally:
        queue.close()
        client.close()


# --------------------------------------------------------------------------- the measurement


@dataclass
class Result:
    case: Case
    seconds: dict[str, list[float]]  # spawn to the answer read, per side
    cpu: dict[str, list[float]]  # CPU the process used until it answered, per side

    def median(self, side: str) -> float:
        return statistics.median(self.seconds[side])

    def ratio(self, side: str = OURS) -> float:
        return self.median(side) / self.median(BASELINE)

    def cpu_ratio(self, side: str = OURS) -> float:
        return statistics.median(self.cpu[side]) / statistics.median(self.cpu[BASELINE])


def measure(python: str, sides: dict[str, list[Side]], cases: Sequence[Case], redis_url: str, rounds: int,
            log: Callable[[str], None]) -> list[Result]:
    from deploy.package import plans

    environments = {p.logical_id: dict(p.environment) for p in plans()}
    results = []
    for case in cases:
        contenders = sides[case.function]
        envs = {side.name: lambda_env(case.function, side.task_root, side.handler, environments[case.function],
                                      redis_url) for side in contenders}

        def run(side: Side, case: Case = case, envs: dict[str, dict[str, str]] = envs) -> tuple[float, float]:
            seed(redis_url, case)
            elapsed, used, response = first_answer(python, side, case.event_path, envs[side.name])
            if response.get("statusCode") != case.status:
                raise RuntimeError(f"{case.function} {side.name} answered {response.get('statusCode')}, expected "
                                   f"{case.status}: {str(response.get('body'))[:300]}")
            return elapsed, used

        for side in contenders:  # one untimed run each: the files in the page cache, the answers checked
            run(side)
        seconds: dict[str, list[float]] = {side.name: [] for side in contenders}
        cpu: dict[str, list[float]] = {side.name: [] for side in contenders}
        log(f"  {case.function}, first request {case.fixture} (ms):")
        for round_ in range(rounds):
            shift = round_ % len(contenders)  # each side first, middle and last in turn
            for side in contenders[shift:] + contenders[:shift]:
                elapsed, used = run(side)
                seconds[side.name].append(elapsed)
                cpu[side.name].append(used)
            log(f"    round {round_ + 1:>2}: " + ", ".join(f"{side.name} {seconds[side.name][-1] * 1000:5.0f}"
                                                        for side in contenders))
        results.append(Result(case, seconds, cpu))
    return results


LABELS = {OURS: "packaged handler", BASELINE: "hand-written baseline"}


def figures(results: Sequence[Result]) -> list[Figure]:
    rows = []
    for result in results:
        name = result.case.function
        for side, values in result.seconds.items():
            rows.append(Figure(f"{name}: {LABELS[side]}, median (min-max)",
                               f"{statistics.median(values) * 1000:.0f} ms ({min(values) * 1000:.0f}-"
                               f"{max(values) * 1000:.0f})"))
        for side, values in result.cpu.items():
            rows.append(Figure(f"{name}: {LABELS[side]}, CPU until the answer, median (min-max)",
                               f"{statistics.median(values) * 1000:.0f} ms ({min(values) * 1000:.0f}-"
                               f"{max(values) * 1000:.0f})"))
        rows.append(Figure.checked(f"{name}: packaged / baseline, first answer", f"{result.ratio():.2f}x",
                                   result.ratio(), TARGET))
        rows.append(Figure.checked(f"{name}: packaged / baseline, CPU until the answer", f"{result.cpu_ratio():.2f}x",
                                   result.cpu_ratio(), TARGET))
    return rows


def run(cases: Sequence[Case], rounds: int, python: str, redis_url: str,
        log: Callable[[str], None] = harness.progress) -> list[Result]:
    """Build both sides of each case and time their first answers."""
    sides = build_sides(cases, python, log)
    log(f"  sys.path of a run: {interpreter_sys_path(python, sides[cases[0].function][0].task_root)}")
    return measure(python, sides, cases, redis_url, rounds, log)


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 when every target is met, 1 when one is missed, 2 when it cannot run."""
    parser = harness.argument_parser("bench.cold_start", __doc__, quick_help="3 rounds: check that it runs")
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds per function (default 20)")
    parser.add_argument("--function", action="append", choices=[c.function for c in CASES],
                        help="measure this function only (repeatable)")
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else args.rounds
    cases = [c for c in CASES if not args.function or c.function in args.function]

    from deploy import package

    target = package.plans()[0].target
    python = package.find_interpreter(target)
    if python is None:
        print(f"cold start bench: cannot run: {package.no_interpreter_note(target)}")
        return 2
    with harness.reports_duration("cold start bench"), harness.private_redis("cold-start-bench-") as lab:
        print(f"cold start bench: {target}, interpreter {python}; private Redis on 127.0.0.1:{lab.port}; "
              f"{rounds} interleaved rounds per function; {harness.cpu_count()} CPUs, load average "
              f"{harness.load_average():.2f}", flush=True)
        try:
            results = run(cases, rounds, python, lab.url)
        except package.BuildError as exc:
            print(f"cold start bench: cannot run: {exc}")
            return 2
        print(f"\nload average after: {harness.load_average():.2f}")
        table = figures(results)
        print(harness.figures_table(table))
    return harness.exit_status(figure.passed for figure in table)


if __name__ == "__main__":
    sys.exit(main())
