"""One server generation: the prepared environment applied to the process, the handlers
imported, the app built (`build_app`: the gateway with the preview service's extras) and run
on uvicorn on an already bound socket until a stop signal (`serve_prepared`). A plain `serve`
runs one generation in its own process; under --reload each child process runs one."""

from __future__ import annotations

import logging
import signal
import socket
from collections.abc import Callable

from starlette.applications import Starlette

from local import environment
from local.environment import worker_function
from local.errors import StartupError
from local.preview import PreviewExtras, PreviewOptions
from local.runtime import FunctionRuntime
from local.server import Emulator, ServerOptions
from local.sigv4 import SigV4Verifier, local_credentials
from local.startup import Prepared, ServeArgs

log = logging.getLogger("local.launch")


def apply_environment(prepared: Prepared) -> None:
    """Report what the preparation found, then put its environment in os.environ (before any
    handler or `shared` module is imported) and check it as a cold start would."""
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


def api_key(args: ServeArgs, prepared: Prepared) -> str:
    if args.api_key is not None:
        return args.api_key
    return prepared.env.values.get("PREVIEW_API_KEY") or prepared.shell.get("PREVIEW_API_KEY", "")


def iam_verifier(args: ServeArgs, prepared: Prepared, key: str) -> SigV4Verifier | None:
    """The SigV4 check of the template's AWS_IAM routes, unless the API key replaces it."""
    template = prepared.template
    if key or not any(route.auth == "AWS_IAM" for route in template.routes()):
        return None
    credentials = local_credentials(prepared.shell)
    if credentials is None:
        log.warning("the template's routes use IAM authorization but no local credentials were found: every "
                    "signed route answers 403. Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) "
                    "before starting, or pass --api-key KEY to use a key instead")
    else:
        log.info("IAM routes need SigV4 (service execute-api, region %s) with the access key %s… from %s",
                 template.region, credentials.access_key[:4], credentials.source)
    return SigV4Verifier(credentials, template.region, template.account_id)


def build_app(args: ServeArgs, prepared: Prepared, port: int, redis_description: str, *,
              fast_shutdown: bool = False, on_ready: Callable[[], None] | None = None) -> Starlette:
    """The emulator's app, for an environment already applied; `port` is the one it listens on."""
    from shared.errors import ConfigError

    runtime = FunctionRuntime(prepared.template, config_errors=(ConfigError,))
    runtime.load()
    worker = worker_function(prepared.template, prepared.env.by_function)
    key = api_key(args, prepared)
    options = ServerOptions(
        host=args.host,
        port=port,
        api_key=key,
        sigv4=iam_verifier(args, prepared, key),
        schedule_scale=args.schedule_scale,
        schedules=args.schedules,
        on_ready=on_ready,
    )
    extras = PreviewExtras(PreviewOptions(
        redis=redis_description,
        worker=args.worker,
        worker_function=worker.logical_id if worker else None,
        fast_shutdown=fast_shutdown,
    ))
    return Emulator(prepared.template, runtime, options, extras).app()


class SignedLinksHidden(logging.Filter):
    """An access line shows an artifact link's path, not its query: the signature and expiry
    would let anyone who reads the log fetch the file for an hour."""

    def filter(self, record: logging.LogRecord) -> bool:
        from shared.artifacts.signing import ROUTE

        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and args[2].startswith(ROUTE):
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


def log_config(access_log: bool) -> dict[str, object]:
    """uvicorn's own lines on stderr: stdout carries the functions' JSON logs."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"signed_links": {"()": SignedLinksHidden}},
        "formatters": {
            "default": {"()": "uvicorn.logging.DefaultFormatter", "fmt": "%(levelprefix)s %(message)s"},
            "access": {"()": "uvicorn.logging.AccessFormatter",
                       "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s'},
        },
        "handlers": {
            "default": {"formatter": "default", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
            "access": {"formatter": "access", "class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                       "filters": ["signed_links"]},
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

    apply_environment(prepared)
    app = build_app(args, prepared, sock.getsockname()[1], redis_description, fast_shutdown=fast_shutdown,
                    on_ready=on_ready)
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
