"""`serve --reload`: the server runs in a child process that is replaced when code changes.

Children come from a multiprocessing fork server that has already imported the heavy
third-party libraries (Starlette, Powertools, jsonschema, PyAV, numpy...), so a
restart only re-imports the project's own modules: a fresh process, no stale module state,
in a fraction of a second. This process keeps the listening socket (children inherit it, so
no connection is refused during a restart) and the embedded Redis (so the data and its URL
survive restarts); the child serves with the same code path as a plain `serve`.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import watchfiles

from local.errors import StartupError
from local.launch import serve_prepared
from local.startup import ServeArgs, prepare, setup_logging, shell_environment

log = logging.getLogger("local.reload")

PRELOAD = [
    "starlette.applications", "starlette.routing", "starlette.responses", "uvicorn", "uvicorn.server",
    "uvicorn.protocols.http.h11_impl", "uvicorn.lifespan.on", "redis", "jsonschema",
    "prometheus_client", "aws_lambda_powertools", "aws_lambda_powertools.event_handler",
    "aws_lambda_powertools.metrics", "aws_lambda_powertools.logging", "yaml", "boto3",
    "numpy", "PIL.Image", "av",
]
WATCHED_SUFFIXES = (".py", ".lua", ".json", ".yaml", ".yml")
# Folders of a code root whose changes do not alter the running service.
IGNORED_DIRS = {"tests", "bench", "docs", "deploy", "events", "node_modules", "build", "dist", "venv"}


def watch_paths(code_roots: list[Path], extra_files: list[Path], data_dir: Path) -> list[Path]:
    """Each code root's top-level folders (not the root itself: it may hold a virtualenv and the
    data folder, which a recursive watch would crawl), plus the template and env file."""
    paths: list[Path] = []
    for root in code_roots:
        for child in sorted(root.iterdir()):
            if not child.is_dir() or child.name.startswith((".", "_")) or child.name in IGNORED_DIRS:
                continue
            if child.name.endswith(".egg-info") or child.resolve() == data_dir.resolve():
                continue
            paths.append(child)
        paths.extend(p for p in root.glob("*.py"))
    return paths + [p for p in extra_files if p.exists()]


class _CodeFilter(watchfiles.DefaultFilter):
    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        return path.endswith(WATCHED_SUFFIXES) and super().__call__(change, path)


def _child(args: ServeArgs, extra_env: Mapping[str, str], redis_description: str, sock: socket.socket,
           ready: Connection) -> None:
    """One server generation (runs in the forked child)."""
    os.environ.update(extra_env)
    setup_logging()
    try:
        prepared = prepare(args, shell_environment(args))
        code = serve_prepared(args, prepared, sock, redis_description, fast_shutdown=True,
                              on_ready=lambda: ready.send("ready"))
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        code = exc.exit_code
    sys.exit(code)


class _Stop(Exception):
    pass


def supervise(args: ServeArgs, sock: socket.socket, extra_env: Mapping[str, str], redis_description: str) -> int:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()
        raise _Stop()

    signal.signal(signal.SIGTERM, on_signal)
    first = True
    child: Any = None
    try:
        while True:
            try:
                prepared = prepare(args, shell_environment(args))
            except StartupError as exc:
                if first:
                    raise
                print(f"error: {exc} (fix it and save to restart)", file=sys.stderr, flush=True)
                prepared = None
            roots = prepared.template.code_roots() if prepared else [Path(args.template).resolve().parent]
            data_dir = prepared.data_dir if prepared else Path("data").resolve()
            files = [Path(args.template).resolve()] + ([Path(args.env_vars).resolve()] if args.env_vars else [])
            paths = watch_paths(roots, files, data_dir)
            if prepared is not None:
                receive, send = context.Pipe(duplex=False)
                started = time.monotonic()
                child = context.Process(target=_child, name="emulator",
                                        args=(args, dict(extra_env), redis_description, sock, send))
                child.start()
                send.close()
                if not _wait_ready(child, receive):
                    receive.close()
                    child.join()
                    code = child.exitcode or 2
                    _stop_child(child)
                    child = None
                    if first:
                        return code
                    print("the emulator did not start; fix the error and save to restart", file=sys.stderr,
                          flush=True)
                else:
                    receive.close()
                    log.info("ready in %.2f s", time.monotonic() - started)
                first = False
            changes = _wait_for_change(paths, child, stop)
            _stop_child(child)
            child = None
            names = sorted({Path(p).name for _, p in changes})
            log.info("reloading (%s)", ", ".join(names[:5]) + (" ..." if len(names) > 5 else ""))
    except (KeyboardInterrupt, _Stop):
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _stop_child(child)


def _wait_ready(child: Any, receive: Connection) -> bool:
    while child.is_alive():
        if receive.poll(0.05):
            try:
                return bool(receive.recv() == "ready")
            except EOFError:
                return False
    return False


def _wait_for_change(paths: list[Path], child: Any, stop: threading.Event) -> set[tuple[watchfiles.Change, str]]:
    died_reported = False
    for changes in watchfiles.watch(*paths, watch_filter=_CodeFilter(), stop_event=stop, debounce=400,
                                    step=30, rust_timeout=500, yield_on_timeout=True, raise_interrupt=True):
        if changes:
            return changes
        if child is not None and not child.is_alive() and not died_reported:
            died_reported = True
            print(f"the emulator exited (code {child.exitcode}); waiting for a change to restart",
                  file=sys.stderr, flush=True)
    raise _Stop()


def _stop_child(child: Any) -> None:
    if child is None:
        return
    if child.is_alive():
        child.terminate()
        child.join(15)
        if child.is_alive():
            child.kill()
            child.join(5)
    child.close()
