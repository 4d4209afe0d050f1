"""`python -m functions.render_worker`: the long-running worker process.

PREVIEW_WORKER_CONCURRENCY jobs at a time, `/metrics` for Prometheus on
PREVIEW_METRICS_HOST:PREVIEW_METRICS_PORT, and on SIGTERM/SIGINT the active jobs finish (or
are handed back after PREVIEW_SHUTDOWN_GRACE_SECONDS) before the process exits.

With PREVIEW_WORKER_PROCESSES above 1 this process supervises that many copies of itself (see
shared/worker/processes.py)."""

from __future__ import annotations

import signal
import sys

from shared import wiring
from shared.errors import ConfigError
from shared.settings import Settings
from shared.worker.process_mode import leave
from shared.worker.processes import supervise


def main() -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if settings.worker_processes > 1:
        return supervise([sys.executable, "-m", "functions.render_worker"], settings.worker_processes,
                         metrics_port=settings.metrics_port, shutdown_grace_s=settings.shutdown_grace_seconds)
    try:
        services = wiring.services()
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    settings = services.settings
    worker = services.worker
    if settings.metrics_port:
        from prometheus_client import start_http_server

        from shared.prometheus_metrics import REGISTRY

        start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=REGISTRY)

    # The handler only notes the signal (no lock, no log line): the worker's loop stops it.
    signal.signal(signal.SIGTERM, worker.stop_from_signal)
    signal.signal(signal.SIGINT, worker.stop_from_signal)
    try:
        # Not 0 when renders got stuck past their deadlines: the supervisor starts a fresh one.
        code = worker.run_forever()
    finally:
        wiring.reset()
    return leave(worker, code)


if __name__ == "__main__":
    raise SystemExit(main())
