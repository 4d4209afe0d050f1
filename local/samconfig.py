"""What SAM CLI users already write: `--parameter-overrides` in SAM's forms, and the
`parameter_overrides` and `env_vars` of a `samconfig.toml` beside the template.

    --parameter-overrides QueueMax=5 LogLevel=DEBUG
    --parameter-overrides "QueueMax=5 LogLevel=DEBUG"
    --parameter-overrides ParameterKey=QueueMax,ParameterValue=5 ParameterKey=LogLevel,ParameterValue=DEBUG
    --parameter-overrides 'Title="two words"'

samconfig.toml is read as SAM reads it: the `default` environment (or `--config-env`), its
`global.parameters` then the command's own table (`local_start_api` for serve,
`local_invoke` for invoke); what the command line gives wins.
"""

from __future__ import annotations

import shlex
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from local.errors import StartupError

FILE_NAME = "samconfig.toml"


def parse_overrides(values: Sequence[str] | str | None, source: str = "--parameter-overrides") -> dict[str, str]:
    """Name -> value from SAM's `Name=Value` or `ParameterKey=Name,ParameterValue=Value` items,
    given as separate arguments or in one space-separated string (quotes group a value)."""
    if values is None:
        return {}
    items = [values] if isinstance(values, str) else list(values)
    try:
        tokens = [token for item in items for token in shlex.split(item)]
    except ValueError as exc:
        raise StartupError(f"{source}: {exc}") from None
    result: dict[str, str] = {}
    for token in tokens:
        if token.startswith("ParameterKey="):
            key_part, sep, value = token.partition(",ParameterValue=")
            key = key_part.removeprefix("ParameterKey=")
        else:
            key, sep, value = token.partition("=")
        if not sep or not key:
            raise StartupError(f"{source}: expected Name=Value or ParameterKey=Name,ParameterValue=Value, "
                               f"got {token!r}")
        result[key] = value
    return result


def read(template: Path, command: str, environment: str = "default") -> dict[str, Any]:
    """The parameters samconfig.toml (beside `template`) gives `command`, or {} without one."""
    path = template.resolve().parent / FILE_NAME
    if not path.is_file():
        return {}
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as exc:
        raise StartupError(f"{path}: {exc}") from None
    section = document.get(environment) or {}
    merged: dict[str, Any] = {}
    for table in ("global", command):
        parameters = (section.get(table) or {}).get("parameters") or {}
        if isinstance(parameters, dict):
            merged.update(parameters)
    if "env_vars" in merged:
        merged["env_vars"] = str(path.parent / str(merged["env_vars"]))
    merged["_file"] = str(path)
    return merged


def settings(template: Path, command: str, environment: str, overrides: Sequence[str] | None,
             env_vars: Path | None) -> tuple[dict[str, str], Path | None]:
    """(parameter overrides, env vars file) from samconfig.toml and the command line."""
    config = read(template, command, environment)
    merged = parse_overrides(config.get("parameter_overrides"), f"{config.get('_file')}: parameter_overrides") \
        if config else {}
    merged.update(parse_overrides(overrides))
    if env_vars is None and config.get("env_vars"):
        env_vars = Path(config["env_vars"])
    return merged, env_vars
