"""`python -m local serve [...]` and `python -m local invoke <Function> [...]`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from local import samconfig
from local.errors import StartupError
from local.startup import ServeArgs, setup_logging


def _scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m local", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--template", "-t", type=Path, default=Path("template.yaml"),
                       help="SAM template (default: template.yaml)")
        p.add_argument("--env-vars", "-n", type=Path, metavar="FILE",
                       help='JSON overrides in SAM\'s format: {"Parameters": {...}, "<Function>": {...}}')
        p.add_argument("--parameter-overrides", nargs="+", metavar="NAME=VALUE",
                       help="template parameter values (their Default otherwise), in SAM's forms: Name=Value, "
                            "\"A=1 B=2\" or ParameterKey=Name,ParameterValue=Value; samconfig.toml's "
                            "parameter_overrides and env_vars apply too")
        p.add_argument("--config-env", default="default", metavar="NAME",
                       help="the samconfig.toml environment to read (default: default)")
        p.add_argument("--data-dir", type=Path, metavar="DIR",
                       help="local data folder: artifacts, scratch, embedded Redis (default: $DATA_DIR or ./data)")

    serve = commands.add_parser("serve", help="serve the template's routes, schedules and worker")
    common(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", "-p", type=int, default=3000, help="port (default: 3000)")
    serve.add_argument("--api-key", default=None,
                       help="require this key (x-api-key or Authorization: Bearer) on every route but health "
                            "(default: $PREVIEW_API_KEY; empty: no key)")
    serve.add_argument("--schedule-scale", type=_scale, default=1.0, metavar="FACTOR",
                       help="run rate() schedules FACTOR times faster (cron keeps wall-clock time)")
    serve.add_argument("--no-schedules", dest="schedules", action="store_false",
                       help="do not fire schedules by themselves "
                            "(POST /_emulator/schedules/<Function>/fire still does)")
    serve.add_argument("--no-worker", dest="worker", action="store_false",
                       help="do not run the render worker as a long-running process")
    serve.add_argument("--no-access-log", dest="access_log", action="store_false", help="no request log lines")
    serve.add_argument("--reload", action="store_true",
                       help="restart when code, template or env file change")

    invoke = commands.add_parser("invoke", help="invoke one function once with an event")
    common(invoke)
    invoke.add_argument("function", help="logical id (EnqueueJobFunction) or folder name (enqueue_job)")
    invoke.add_argument("--event", "-e", metavar="FILE", help="event JSON file, or - for stdin (default: {})")
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging()
    try:
        # Each command imports only its own modules (invoke needs no web server).
        command = "local_start_api" if args.command == "serve" else "local_invoke"
        overrides, env_vars = samconfig.settings(args.template, command, args.config_env, args.parameter_overrides,
                                                 args.env_vars)
        if args.command == "serve":
            from local.serve import run

            return run(ServeArgs(
                template=args.template, host=args.host, port=args.port, env_vars=env_vars,
                parameter_overrides=overrides, api_key=args.api_key,
                data_dir=args.data_dir, schedule_scale=args.schedule_scale, schedules=args.schedules,
                worker=args.worker, access_log=args.access_log, reload=args.reload,
            ))
        from local import invoke

        return invoke.run(invoke.InvokeArgs(
            function=args.function, event=args.event, template=args.template, env_vars=env_vars,
            parameter_overrides=overrides, data_dir=args.data_dir,
        ))
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
