"""`python -m local serve`: template, environment and Redis first (each failure one line, exit
2), then the app on uvicorn; under --reload a supervisor restarts it on code changes."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from local import environment
from local.environment import EnvFile, SharedEnvironment, read_env_file, shared_environment, worker_function
from local.errors import StartupError
from local.template import DEFAULT_REGION, Template, load_template

log = logging.getLogger("local.serve")


@dataclass(frozen=True)
class ServeArgs:
    template: Path = Path("template.yaml")
    host: str = "127.0.0.1"
    port: int = 3000
    env_vars: Path | None = None
    parameter_overrides: Mapping[str, str] = field(default_factory=dict)
    api_key: str | None = None
    data_dir: Path | None = None
    schedule_scale: float = 1.0
    schedules: bool = True
    worker: bool = True
    access_log: bool = True
    reload: bool = False


@dataclass(frozen=True)
class Prepared:
    template: Template
    env_file: EnvFile
    env: SharedEnvironment
    shell: Mapping[str, str]

    @property
    def redis_url(self) -> str:
        return self.env.values.get("REDIS_URL") or self.shell.get("REDIS_URL", "")

    @property
    def data_dir(self) -> Path:
        return Path(self.env.values.get("DATA_DIR") or environment.data_dir(self.shell))


def shell_environment(args: ServeArgs | None = None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    shell = dict(os.environ if base is None else base)
    if args is not None and args.data_dir is not None:
        shell["DATA_DIR"] = str(args.data_dir)  # the flag counts as a variable set in the shell
    return shell


def region(shell: Mapping[str, str]) -> str:
    return shell.get("AWS_REGION") or shell.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def prepare(args: ServeArgs, shell: Mapping[str, str]) -> Prepared:
    template = load_template(args.template, region(shell), args.parameter_overrides)
    env_file = read_env_file(args.env_vars, template)
    return Prepared(template, env_file, shared_environment(template, env_file, shell), shell)


def bind(host: str, port: int) -> socket.socket:
    """Listen now, so a busy port is one clear message before anything starts."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(f"port {port} on {host} is already in use; choose another with --port") from None
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def api_key(args: ServeArgs, prepared: Prepared) -> str:
    if args.api_key is not None:
        return args.api_key
    return prepared.env.values.get("PREVIEW_API_KEY") or prepared.shell.get("PREVIEW_API_KEY", "")


def log_config(access_log: bool) -> dict[str, object]:
    """uvicorn's own lines on stderr: stdout carries the functions' JSON logs."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "default": {"()": "uvicorn.logging.DefaultFormatter", "fmt": "%(levelprefix)s %(message)s"},
            "access": {"()": "uvicorn.logging.AccessFormatter",
                       "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s'},
        },
        "handlers": {
            "default": {"formatter": "default", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
            "access": {"formatter": "access", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "WARNING"},
            "uvicorn.access": {"handlers": ["access"], "level": "INFO" if access_log else "WARNING",
                               "propagate": False},
        },
    }


def serve_prepared(args: ServeArgs, prepared: Prepared, sock: socket.socket, redis_description: str, *,
                   fast_shutdown: bool = False, on_ready: Callable[[], None] | None = None) -> int:
    """Apply the environment, import the handlers, serve until stopped. Redis must be set up."""
    import uvicorn

    from local.runtime import FunctionRuntime
    from local.server import Emulator, ServerOptions

    for warning in prepared.env.warnings:
        log.warning("%s", warning)
    for note in prepared.template.notes:
        log.info("%s", note)
    environment.apply(prepared.env.values)
    from shared.errors import ConfigError
    from shared.settings import Settings

    try:
        Settings.from_env()
    except ConfigError as exc:
        raise StartupError(str(exc)) from None
    runtime = FunctionRuntime(prepared.template)
    runtime.load()
    worker = worker_function(prepared.template, prepared.env.by_function)
    options = ServerOptions(
        host=args.host,
        port=sock.getsockname()[1],
        api_key=api_key(args, prepared),
        schedule_scale=args.schedule_scale,
        schedules=args.schedules,
        worker=args.worker,
        access_log=args.access_log,
        fast_shutdown=fast_shutdown,
        redis=redis_description,
        worker_function=worker.logical_id if worker else None,
        on_ready=on_ready,
    )
    app = Emulator(prepared.template, runtime, options).app()
    config = uvicorn.Config(app, log_config=log_config(args.access_log), access_log=args.access_log,
                            lifespan="on", proxy_headers=False, server_header=False,
                            timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    # uvicorn re-raises the stop signal once it has shut down; with the default SIGTERM action
    # that would end the process before the embedded Redis is stopped. Turn it into an exception.
    previous = {sig: signal.signal(sig, _stop_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    except _StopSignal:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if server.started else 2


class _StopSignal(Exception):
    pass


def _stop_signal(signum: int, frame: object) -> None:
    raise _StopSignal(signum)


@contextlib.contextmanager
def redis_for(redis_url: str, data_dir: Path, *, join_running: bool) -> Iterator[tuple[str, str]]:
    """(url, description): the configured Redis, else the data folder's embedded one."""
    from local.redis_embed import embedded_redis
    from shared.settings import mask_url

    if redis_url:
        yield redis_url, mask_url(redis_url)
        return
    with embedded_redis(data_dir, join_running=join_running) as embedded:
        yield embedded.url, embedded.describe()


def run(args: ServeArgs) -> int:
    shell = shell_environment(args)
    prepared = prepare(args, shell)
    sock = bind(args.host, args.port)
    try:
        with redis_for(prepared.redis_url, prepared.data_dir, join_running=False) as (url, description):
            if args.reload:
                from local.reload import supervise

                return supervise(args, sock, {"REDIS_URL": url}, description)
            prepared.env.values["REDIS_URL"] = url
            return serve_prepared(args, prepared, sock, description)
    finally:
        sock.close()
