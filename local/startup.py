"""What the commands read and set up before anything runs: the serve arguments, the shell's
variables, the template with the one environment of the process (`prepare`), Redis
(`redis_for`), and the emulator's own log lines. Each problem is a StartupError."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from local import environment
from local.environment import EnvFile, SharedEnvironment, read_env_file, shared_environment
from local.intrinsics import DEFAULT_REGION
from local.template import Template, load_template


def setup_logging() -> None:
    """The emulator's own lines on stderr; the functions' JSON logs keep stdout."""
    logger = logging.getLogger("local")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("emulator %(levelname)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


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
