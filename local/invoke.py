"""`python -m local invoke <Function> --event FILE|-`: one invocation, like `sam local invoke`.

The function gets exactly its own template environment (+ --env-vars, + the shell). Its
result is printed as JSON on stdout and everything it logs or prints goes to stderr, so the
output can be piped. A handler that raises prints Lambda's error document and exits 1.

Redis: REDIS_URL if configured; otherwise the data folder's embedded Redis. When an emulator
is running on the same DATA_DIR the call joins its Redis (and so sees its jobs); otherwise it
starts that append-only server for the duration of the call, so successive invokes share
state. An async invoke the function makes (the enqueue kick) is not run: it is logged, and a
running emulator's worker picks the job up from Redis anyway.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from local.environment import data_dir, function_environment, read_env_file
from local.errors import StartupError
from local.events import LambdaContext
from local.runtime import load_handler
from local.startup import redis_for, region, shell_environment
from local.template import load_template

log = logging.getLogger("local.invoke")


@dataclass(frozen=True)
class InvokeArgs:
    function: str
    event: str | None = None  # a file, "-" for stdin, None for {}
    template: Path = Path("template.yaml")
    env_vars: Path | None = None
    parameter_overrides: Mapping[str, str] = field(default_factory=dict)
    data_dir: Path | None = None


@contextlib.contextmanager
def scoped_environment(values: Mapping[str, str]) -> Iterator[None]:
    """The function's variables in os.environ and no services built before, all undone after
    (so invoking in-process, as the tests do, leaves nothing behind)."""
    from shared import wiring

    saved = dict(os.environ)
    os.environ.update(values)
    wiring.reset()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        wiring.reset()


def read_event(source: str | None, stdin: TextIO) -> Any:
    if source is None:
        return {}
    try:
        text = stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise StartupError(f"--event {source}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise StartupError(f"--event {source}: not JSON: {exc}") from None


def _skip_async_invoke(function: str, event: dict[str, Any]) -> None:
    log.info("async invoke of %s not run by `invoke` (the job waits in Redis for a worker): %s",
             function, json.dumps(event))


def run(args: InvokeArgs, stdout: TextIO | None = None, stdin: TextIO | None = None) -> int:
    stdout = stdout or sys.stdout
    shell = shell_environment(None)
    if args.data_dir is not None:
        shell["DATA_DIR"] = str(args.data_dir)
    template = load_template(args.template, region(shell), args.parameter_overrides)
    spec = template.find(args.function)
    if spec is None:
        names = ", ".join(f"{s.logical_id} ({s.folder})" for s in template.functions.values())
        raise StartupError(f"no function {args.function!r} in {template.path.name}; functions: {names}")
    event = read_event(args.event, stdin or sys.stdin)
    env = function_environment(template, spec, read_env_file(args.env_vars, template), shell)
    redis_url = env.get("REDIS_URL") or shell.get("REDIS_URL", "")
    folder = Path(env["DATA_DIR"]) if env.get("DATA_DIR") else data_dir(shell)
    with redis_for(redis_url, folder, join_running=True) as (url, description):
        env["REDIS_URL"] = url
        log.info("invoking %s (Redis: %s)", spec.logical_id, description)
        with scoped_environment(env), contextlib.redirect_stdout(sys.stderr):
            from shared import wiring
            from shared.errors import ConfigError

            try:
                # The function's services, with its async invokes (the enqueue kick) not run.
                wiring.start(invoker=_skip_async_invoke)
                handler = load_handler(spec, config_errors=(ConfigError,))
            except ConfigError as exc:
                raise StartupError(str(exc)) from None
            outcome = _call_with_timeout(handler, event, LambdaContext(template, spec), spec.timeout)
    result, error = outcome
    if error is not None:
        print(json.dumps(error), file=stdout, flush=True)
        return 1
    print(json.dumps(result), file=stdout, flush=True)
    return 0


def _call_with_timeout(handler: Any, event: Any, context: LambdaContext,
                       timeout_s: int) -> tuple[Any, dict[str, Any] | None]:
    """(result, None) or (None, Lambda's error document)."""
    box: dict[str, Any] = {}

    def call() -> None:
        try:
            box["result"] = handler(event, context)
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            box["error"] = {
                "errorMessage": str(exc),
                "errorType": type(exc).__name__,
                "stackTrace": traceback.format_tb(exc.__traceback__),
            }

    # A daemon thread, so a handler stuck past its Timeout does not keep the process alive.
    thread = threading.Thread(target=call, name=f"invoke-{context.function_name}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        message = f"Task timed out after {timeout_s:.2f} seconds"
        print(message, file=sys.stderr)
        return None, {"errorMessage": message, "errorType": "TimeoutError"}
    if "error" in box:
        return None, box["error"]
    try:
        json.dumps(box.get("result"))
    except (TypeError, ValueError) as exc:
        return None, {"errorMessage": f"Unable to marshal response: {exc}", "errorType": "Runtime.MarshalError"}
    return box.get("result"), None
