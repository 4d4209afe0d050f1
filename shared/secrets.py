"""The Redis URL, or just its password, kept out of the function's environment.

`REDIS_SECRET` names where it is kept: the ARN of a Secrets Manager secret
(`arn:aws:secretsmanager:...:secret:name-AbCdEf`) or of an SSM SecureString parameter
(`arn:aws:ssm:...:parameter/name`). The value held there is either a whole `redis://` or
`rediss://` URL, which replaces REDIS_URL, or a bare password, which is put into REDIS_URL
(whose host, port and options stay as configured). It is read once per process (a Lambda
cold start) and kept in memory; a read that fails is a `ConfigError` naming the secret, never
its value.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from shared.errors import ConfigError

VARIABLE = "REDIS_SECRET"
_URL_SCHEMES = ("redis://", "rediss://", "unix://")

_cache: dict[str, str] = {}
_lock = threading.Lock()


def redis_url(env: Mapping[str, str]) -> str | None:
    """The Redis URL the environment describes once its secret is applied (None: REDIS_URL as
    it is, no secret configured)."""
    name = env.get(VARIABLE, "").strip()
    if not name:
        return None
    value = read(name, env)
    if value.startswith(_URL_SCHEMES):
        return value
    base = env.get("REDIS_URL", "")
    if not base.startswith(_URL_SCHEMES):
        raise ConfigError(f"invalid configuration: {VARIABLE} holds a password, so REDIS_URL must give the "
                          "redis:// or rediss:// address it is for")
    return with_password(base, value)


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def read(name: str, env: Mapping[str, str]) -> str:
    """The secret's text, from the process's cache or from the service that keeps it."""
    with _lock:
        if name in _cache:
            return _cache[name]
        value = _fetch(name, env)
        _cache[name] = value
        return value


def forget() -> None:
    """Drop what was read (tests; a rotated secret is read again by the next cold start)."""
    with _lock:
        _cache.clear()


def _fetch(name: str, env: Mapping[str, str]) -> str:
    service = _service_of(name)
    region = name.split(":")[3] or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
    import boto3  # only the functions that keep their Redis URL in a secret pay for it
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    config = Config(connect_timeout=2, read_timeout=3, retries={"max_attempts": 2, "mode": "standard"})
    try:
        client: Any = boto3.client(service, region_name=region, config=config)
        if service == "secretsmanager":
            answer = client.get_secret_value(SecretId=name)
            value = answer.get("SecretString")
        else:
            answer = client.get_parameter(Name=name, WithDecryption=True)
            value = answer["Parameter"]["Value"]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise ConfigError(f"cannot read {VARIABLE} {name}: {code}") from None
    except BotoCoreError as exc:
        raise ConfigError(f"cannot read {VARIABLE} {name}: {type(exc).__name__}") from None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{VARIABLE} {name} holds no text")
    return _from_json(value.strip(), name)


def _service_of(name: str) -> str:
    parts = name.split(":")
    if len(parts) >= 6 and parts[0] == "arn" and parts[2] in ("secretsmanager", "ssm"):
        if parts[2] == "ssm" and not parts[5].startswith("parameter/"):
            raise ConfigError(f"invalid configuration: {VARIABLE} must be an SSM parameter ARN (…:parameter/name)")
        return parts[2]
    raise ConfigError(f"invalid configuration: {VARIABLE} must be the ARN of a Secrets Manager secret or an SSM "
                      "SecureString parameter")


def _from_json(value: str, name: str) -> str:
    """A secret made in the console's key/value form is JSON: its `url` or `password` key."""
    if not value.startswith("{"):
        return value
    try:
        document = json.loads(value)
    except ValueError:
        return value
    for key in ("url", "password"):
        if isinstance(document, dict) and isinstance(document.get(key), str) and document[key]:
            return str(document[key])
    raise ConfigError(f"{VARIABLE} {name} is JSON without a 'url' or 'password' key")
