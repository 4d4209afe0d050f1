"""Configuration read from the environment and validated in one step.

Every variable the service reads is a field alias here; a bad value raises `ConfigError` with
one message that names the variable. Settings are built by `shared.wiring` (once per process,
with the other dependencies), never cached here.
"""

# No `from __future__ import annotations`: the field annotations are built as the class body
# runs, from bytecode, rather than parsed from strings at every cold start.
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from shared import secrets
from shared.envconfig import EnvSettings, Field, SettingsError, field_validator
from shared.errors import ConfigError

QUEUE_NAME_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$"


class Settings(EnvSettings):
    """Frozen; `Settings()` is the defaults, `Settings.fields()` every field (its `alias` is
    the variable)."""

    redis_url: Annotated[str, Field(alias="REDIS_URL")] = "redis://127.0.0.1:6379"
    # Where the Redis URL or its password is kept (shared/secrets.py); applied to redis_url.
    redis_secret: Annotated[str, Field(alias="REDIS_SECRET")] = ""
    queue_name: Annotated[str, Field(alias="PREVIEW_QUEUE_NAME", pattern=QUEUE_NAME_PATTERN)] = (
        "preview-jobs"
    )
    worker_concurrency: Annotated[int, Field(alias="PREVIEW_WORKER_CONCURRENCY", ge=1, le=64)] = 2
    # The long-running worker only: that many worker processes under one parent (shared/worker/processes.py).
    worker_processes: Annotated[int, Field(alias="PREVIEW_WORKER_PROCESSES", ge=1, le=64)] = 1
    queue_max: Annotated[int, Field(alias="PREVIEW_QUEUE_MAX", ge=1, le=1_000_000)] = 20
    data_dir: Annotated[Path, Field(alias="DATA_DIR")] = Path("./data")

    job_attempts: Annotated[int, Field(alias="PREVIEW_JOB_ATTEMPTS", ge=1, le=25)] = 5
    backoff_ms: Annotated[int, Field(alias="PREVIEW_BACKOFF_MS", ge=0, le=3_600_000)] = 1000
    lease_ms: Annotated[int, Field(alias="PREVIEW_LEASE_MS", ge=1000, le=3_600_000)] = 30_000
    # A long-running worker renews its liveness every sixth of this; when it lapses (worker
    # killed, or cut off from Redis) its jobs go back to waiting at once, lease or not.
    worker_liveness_ms: Annotated[int, Field(alias="PREVIEW_WORKER_LIVENESS_MS", ge=600, le=600_000)] = 3000
    keep_completed_seconds: Annotated[int, Field(alias="PREVIEW_KEEP_COMPLETED_SECONDS", ge=0)] = 3600
    # Unset: sized from PREVIEW_FINISHED_MEMORY_MB (shared/retention.py).
    keep_completed_count: Annotated[int | None, Field(alias="PREVIEW_KEEP_COMPLETED_COUNT", ge=1)] = None
    keep_failed_seconds: Annotated[int, Field(alias="PREVIEW_KEEP_FAILED_SECONDS", ge=0)] = 86_400
    keep_failed_count: Annotated[int | None, Field(alias="PREVIEW_KEEP_FAILED_COUNT", ge=1)] = None
    # Redis memory for finished jobs, which sizes their count caps.
    finished_memory_mb: Annotated[float, Field(alias="PREVIEW_FINISHED_MEMORY_MB", gt=0, le=1_000_000)] = 64
    redis_timeout_ms: Annotated[int, Field(alias="PREVIEW_REDIS_TIMEOUT_MS", ge=50, le=30_000)] = 750
    max_body_bytes: Annotated[int, Field(alias="PREVIEW_MAX_BODY_BYTES", ge=1024, le=6_291_456)] = 262_144

    artifact_bucket: Annotated[str, Field(alias="ARTIFACT_BUCKET")] = ""
    url_ttl_seconds: Annotated[int, Field(alias="PREVIEW_URL_TTL_SECONDS", ge=1, le=604_800)] = 3600
    artifact_retention_days: Annotated[int, Field(alias="PREVIEW_ARTIFACT_RETENTION_DAYS", ge=0, le=3650)] = 7
    # The local store's size budget (its folders' disk usage); past it the oldest previews go
    # first. 0: no budget (age alone bounds the store).
    local_store_max_mb: Annotated[float, Field(alias="PREVIEW_LOCAL_STORE_MAX_MB", ge=0)] = 2048
    # Below this much free space on DATA_DIR's disk the worker claims no job and health says so.
    # 0: no floor.
    min_free_disk_mb: Annotated[float, Field(alias="PREVIEW_MIN_FREE_DISK_MB", ge=0)] = 500
    url_secret: Annotated[str, Field(alias="PREVIEW_URL_SECRET", repr=False)] = ""
    public_url: Annotated[str, Field(alias="PREVIEW_PUBLIC_URL")] = ""
    asset_dir: Annotated[Path | None, Field(alias="PREVIEW_ASSET_DIR")] = None
    asset_buckets: Annotated[tuple[str, ...], Field(alias="PREVIEW_ASSET_BUCKETS")] = ()
    api_key: Annotated[str, Field(alias="PREVIEW_API_KEY", repr=False)] = ""
    render_worker_function: Annotated[str, Field(alias="RENDER_WORKER_FUNCTION")] = ""
    max_wait_seconds: Annotated[int, Field(alias="PREVIEW_MAX_WAIT_SECONDS", ge=1)] = 600
    worker_stale_seconds: Annotated[int, Field(alias="PREVIEW_WORKER_STALE_SECONDS", ge=1)] = 900
    log_level: Annotated[str, Field(alias="LOG_LEVEL")] = "INFO"
    render_ms_per_video_second: Annotated[
        int, Field(alias="PREVIEW_RENDER_MS_PER_VIDEO_SECOND", ge=1, le=600_000)
    ] = 500
    # The most any render may take, whatever its length (each job's own deadline comes from its
    # planned length and size, see shared/worker/deadline.py); past it the job is failed.
    render_deadline_seconds: Annotated[
        int, Field(alias="PREVIEW_RENDER_DEADLINE_SECONDS", ge=1, le=86_400)
    ] = 900
    shutdown_grace_seconds: Annotated[int, Field(alias="PREVIEW_SHUTDOWN_GRACE_SECONDS", ge=0, le=3600)] = 20
    metrics_port: Annotated[int, Field(alias="PREVIEW_METRICS_PORT", ge=0, le=65535)] = 9102
    # Empty: every interface.
    metrics_host: Annotated[str, Field(alias="PREVIEW_METRICS_HOST")] = "127.0.0.1"
    # Inside Lambda the only metrics a function has are CloudWatch EMF lines; false stops them.
    metrics_emf: Annotated[bool, Field(alias="PREVIEW_METRICS_EMF")] = True

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("asset_buckets", mode="before")
    @classmethod
    def _split_buckets(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_dir_set(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("must be a folder path, not empty")
        return value

    @field_validator("public_url")
    @classmethod
    def _origin(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// origin")
        return value.rstrip("/")

    @field_validator("asset_buckets")
    @classmethod
    def _bucket_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for bucket in value:
            if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
                raise ValueError(f"{bucket!r} is not an S3 bucket name")
        return value

    @field_validator("metrics_emf", mode="before")
    @classmethod
    def _unset_is_default(cls, value: Any) -> Any:
        return True if isinstance(value, str) and not value.strip() else value

    @field_validator("asset_dir", mode="before")
    @classmethod
    def _empty_path(cls, value: Any) -> Any:
        return None if value == "" else value

    @property
    def assets_root(self) -> Path:
        """The folder local asset paths resolve inside."""
        return (self.asset_dir or self.data_dir / "assets").resolve()

    @property
    def allowed_asset_buckets(self) -> frozenset[str]:
        extra = {self.artifact_bucket} if self.artifact_bucket else set()
        return frozenset(self.asset_buckets) | extra

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        source = os.environ if env is None else env
        values = {name: source[name] for name in cls.variables() if name in source}
        if source.get("REDIS_SECRET"):  # the URL or its password kept in Secrets Manager or SSM
            values["REDIS_URL"] = secrets.redis_url(source) or values.get("REDIS_URL", "")
        try:
            return cls.from_variables(values)
        except SettingsError as exc:
            # A secret's value is never echoed (the Redis URL may hold a password).
            secret = not exc.field.repr or exc.variable == "REDIS_URL"
            shown = "<hidden>" if secret else repr(values.get(exc.variable))
            raise ConfigError(f"invalid configuration: {exc.variable}={shown}: {exc.message}") from None

    @classmethod
    def variables(cls) -> list[str]:
        """Every variable a field is read from."""
        return [field.alias for field in cls.fields().values() if field.alias]


def mask_url(url: str) -> str:
    """The URL without any password (and without a user name that could be a token)."""
    parts = urlsplit(url)
    # Query options (redis-py accepts ?password=...) are dropped too: none is worth the risk.
    if parts.password is None and parts.username is None:
        return url.split("?", 1)[0].split("#", 1)[0]
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"***@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def main() -> int:
    """`python -m shared.settings`: check the environment, print the effective configuration."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    for name, field in Settings.fields().items():
        value = getattr(settings, name)
        if name == "redis_url":
            value = mask_url(value)
        elif not field.repr:
            value = "<set>" if value else ""
        elif isinstance(value, bool):
            value = "true" if value else "false"
        print(f"{field.alias}={value if not isinstance(value, tuple) else ','.join(value)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
