"""`python -m local serve`: template, environment and Redis first (each failure one line, exit
2), then the app on uvicorn; under --reload a supervisor restarts it on code changes."""

from __future__ import annotations

import errno
import socket

from local.errors import StartupError
from local.launch import serve_prepared
from local.reload import supervise
from local.startup import ServeArgs, prepare, redis_for, shell_environment


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


def run(args: ServeArgs) -> int:
    shell = shell_environment(args)
    prepared = prepare(args, shell)
    sock = bind(args.host, args.port)
    try:
        with redis_for(prepared.redis_url, prepared.data_dir, join_running=False) as (url, description):
            if args.reload:
                return supervise(args, sock, {"REDIS_URL": url}, description)
            prepared.env.values["REDIS_URL"] = url
            return serve_prepared(args, prepared, sock, description)
    finally:
        sock.close()
