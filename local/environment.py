"""The environment each function sees, built in SAM's order and then the shell's:

    Lambda runtime variables (AWS_REGION...)  <  template (Globals + the function's own)
    <  env file "Parameters"  <  env file section of that function  <  variables set in the shell

`DATA_DIR` in the template is the Lambda sandbox path (/tmp/...); locally it maps to the
emulator's data folder (`--data-dir`, else $DATA_DIR, else ./data), unless the env file sets it.

`python -m local serve` runs every function in one process, and the service reads its
configuration once per process (`shared.wiring` builds its settings). So the emulator
applies one environment to the process: the variables of all functions together. Where two
functions set the same variable to different values, the most specific source wins (shell,
then env-file function section, ...; then the first function in template order) and a
warning names the variable. Swapping os.environ per invocation instead would need a global
lock (no more concurrent requests) and would still be defeated by the services built once.
`python -m local invoke` runs one function, so it gets exactly that function's environment.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from local.errors import StartupError
from local.template import FunctionSpec, Template

# The variable shared/kick.py addresses the render worker with; the function it names is the
# one the emulator runs as a long-running worker.
WORKER_VARIABLE = "RENDER_WORKER_FUNCTION"
DEFAULT_DATA_DIR = "./data"

log = logging.getLogger("local.environment")

_RUNTIME, _TEMPLATE, _FILE_COMMON, _FILE_FUNCTION, _SHELL = range(5)
_SECRET_HINTS = ("KEY", "SECRET", "PASSWORD", "TOKEN", "REDIS_URL")


@dataclass(frozen=True)
class EnvFile:
    common: Mapping[str, str]
    functions: Mapping[str, Mapping[str, str]]  # by logical id


def read_env_file(path: Path | str | None, template: Template) -> EnvFile:
    """SAM's --env-vars format: {"Parameters": {...every function...}, "<Function>": {...}}.
    A function may be named by logical id, FunctionName or folder."""
    if path is None:
        return EnvFile({}, {})
    try:
        document = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise StartupError(f"--env-vars: file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise StartupError(f"--env-vars {path}: not a JSON file: {exc}") from None
    if not isinstance(document, dict):
        raise StartupError(f"--env-vars {path}: expected a JSON object")
    common: dict[str, str] = {}
    functions: dict[str, dict[str, str]] = {}
    for section, values in document.items():
        if not isinstance(values, dict):
            raise StartupError(f"--env-vars {path}: {section} must map variable names to values")
        parsed = {str(k): _value(path, section, k, v) for k, v in values.items()}
        if section == "Parameters":
            common.update(parsed)
            continue
        spec = template.find(section)
        if spec is None:
            log.warning("--env-vars: %s is not a function of the template; its variables are ignored", section)
            continue
        functions.setdefault(spec.logical_id, {}).update(parsed)
    return EnvFile(common, functions)


def _value(path: Path | str, section: str, key: object, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise StartupError(f"--env-vars {path}: {section}.{key} must be a string, number or boolean")


def data_dir(shell: Mapping[str, str]) -> Path:
    return Path(shell.get("DATA_DIR") or DEFAULT_DATA_DIR).resolve()


def _layers(template: Template, spec: FunctionSpec, env_file: EnvFile,
            shell: Mapping[str, str]) -> dict[str, tuple[str, int]]:
    env: dict[str, tuple[str, int]] = {
        "AWS_REGION": (template.region, _RUNTIME),
        "AWS_DEFAULT_REGION": (template.region, _RUNTIME),
    }
    for key, value in spec.environment.items():
        env[key] = (value, _TEMPLATE)
    if "DATA_DIR" in env:
        env["DATA_DIR"] = (str(data_dir(shell)), _TEMPLATE)
    for key, value in env_file.common.items():
        env[key] = (value, _FILE_COMMON)
    for key, value in env_file.functions.get(spec.logical_id, {}).items():
        env[key] = (value, _FILE_FUNCTION)
    for key in env:
        if key in shell:
            env[key] = (shell[key], _SHELL)
    if "DATA_DIR" in env:
        env["DATA_DIR"] = (str(Path(env["DATA_DIR"][0]).resolve()), env["DATA_DIR"][1])
    return env


def function_environment(template: Template, spec: FunctionSpec, env_file: EnvFile,
                         shell: Mapping[str, str]) -> dict[str, str]:
    """Exactly one function's variables (for `invoke`)."""
    return {key: value for key, (value, _) in _layers(template, spec, env_file, shell).items()}


@dataclass(frozen=True)
class SharedEnvironment:
    values: dict[str, str]
    warnings: tuple[str, ...]
    by_function: Mapping[str, Mapping[str, str]]


def shared_environment(template: Template, env_file: EnvFile, shell: Mapping[str, str]) -> SharedEnvironment:
    """One environment for the whole emulator process, and a warning per disagreement."""
    per_function = {spec.logical_id: _layers(template, spec, env_file, shell)
                    for spec in template.functions.values()}
    chosen: dict[str, str] = {}
    warnings: list[str] = []
    core = _core_variables()
    names = list(dict.fromkeys(name for env in per_function.values() for name in env))
    for name in names:
        candidates = [(fid, env[name]) for fid, env in per_function.items() if name in env]
        best_rank = max(rank for _, (_, rank) in candidates)
        winner = next(value for _, (value, rank) in candidates if rank == best_rank)
        chosen[name] = winner
        if len({value for _, (value, _) in candidates}) > 1:
            shown = ", ".join(f"{fid}={_show(name, value)}" for fid, (value, _) in candidates)
            reads = " The service reads it (shared.settings)." if name in core else ""
            warnings.append(
                f"{name} differs between functions ({shown}); all functions share one process in the "
                f"emulator, so every function sees {_show(name, winner)}.{reads}"
            )
    by_function = {fid: {k: v for k, (v, _) in env.items()} for fid, env in per_function.items()}
    return SharedEnvironment(chosen, tuple(warnings), by_function)


def _show(name: str, value: str) -> str:
    return "<hidden>" if any(hint in name.upper() for hint in _SECRET_HINTS) and value else repr(value)


def _core_variables() -> set[str]:
    from shared.settings import Settings

    return set(Settings.variables())


def worker_function(template: Template, environments: Mapping[str, Mapping[str, str]]) -> FunctionSpec | None:
    """The function another function kicks through RENDER_WORKER_FUNCTION (the render worker)."""
    for fid, env in environments.items():
        target = env.get(WORKER_VARIABLE)
        if target:
            spec = template.find(target)
            if spec is not None and spec.logical_id != fid:
                return spec
    return None


def apply(values: Mapping[str, str]) -> None:
    """Into os.environ, before any handler module (or shared.*) is imported."""
    os.environ.update(values)
