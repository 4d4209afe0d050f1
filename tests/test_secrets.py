"""The Redis URL or its password kept in Secrets Manager or an SSM SecureString (REDIS_SECRET):
read once per process, applied to REDIS_URL, never shown. AWS is moto's; Redis is real."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from local.redis_server import RedisServer
from shared import secrets, wiring
from shared.errors import ConfigError
from shared.settings import Settings
from tests.handlers import body, invoke_fixture

REGION = "eu-west-1"
PASSWORD = "s3cret/with:odd@chars"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    secrets.forget()
    with mock_aws():
        yield
    secrets.forget()


def ssm_parameter(value: str) -> str:
    ssm = boto3.client("ssm", region_name=REGION)
    ssm.put_parameter(Name="/preview/redis", Value=value, Type="SecureString")
    return str(ssm.get_parameter(Name="/preview/redis")["Parameter"]["ARN"])


def secret(value: str) -> str:
    return str(boto3.client("secretsmanager", region_name=REGION).create_secret(
        Name="preview-redis", SecretString=value)["ARN"])


@pytest.mark.usefixtures("no_sockets", "aws")
def test_a_password_goes_into_the_configured_url() -> None:
    arn = ssm_parameter(PASSWORD)
    settings = Settings.from_env({"REDIS_URL": "rediss://default@cache.example:6380/0?ssl_cert_reqs=required",
                                  "REDIS_SECRET": arn})
    assert settings.redis_url == ("rediss://default:s3cret%2Fwith%3Aodd%40chars@cache.example:6380/0"
                                  "?ssl_cert_reqs=required")


@pytest.mark.usefixtures("no_sockets", "aws")
def test_a_whole_url_or_a_json_secret_replaces_redis_url() -> None:
    arn = secret('{"url": "redis://:pw@10.0.0.5:6379/0", "note": "console key/value form"}')
    assert Settings.from_env({"REDIS_SECRET": arn}).redis_url == "redis://:pw@10.0.0.5:6379/0"


@pytest.mark.usefixtures("no_sockets", "aws")
def test_it_is_read_once_per_process() -> None:
    arn = secret("redis://:first@10.0.0.5:6379/0")
    assert Settings.from_env({"REDIS_SECRET": arn}).redis_url.endswith(":first@10.0.0.5:6379/0")
    boto3.client("secretsmanager", region_name=REGION).put_secret_value(SecretId=arn, SecretString="redis://x:1")
    # A warm invocation builds its settings again without a second read.
    assert Settings.from_env({"REDIS_SECRET": arn}).redis_url.endswith(":first@10.0.0.5:6379/0")


@pytest.mark.usefixtures("no_sockets", "aws")
def test_problems_name_the_secret_never_its_value() -> None:
    missing = f"arn:aws:secretsmanager:{REGION}:123456789012:secret:nope-AbCdEf"
    with pytest.raises(ConfigError, match="cannot read REDIS_SECRET .*nope-AbCdEf: ResourceNotFoundException"):
        Settings.from_env({"REDIS_SECRET": missing})
    with pytest.raises(ConfigError, match="must be the ARN of a Secrets Manager secret or an SSM"):
        Settings.from_env({"REDIS_SECRET": "my-secret"})
    arn = ssm_parameter("hunter2")
    with pytest.raises(ConfigError, match="REDIS_URL must give the redis:// or rediss:// address") as caught:
        Settings.from_env({"REDIS_SECRET": arn})
    assert "hunter2" not in str(caught.value)


@pytest.mark.process
def test_handlers_reach_a_password_protected_redis_through_the_secret(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aws: None) -> None:
    with RedisServer(tmp_path / "redis", password=PASSWORD) as server:
        monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{server.port}/0")  # no password here
        monkeypatch.setenv("REDIS_SECRET", ssm_parameter(PASSWORD))
        wiring.reset()
        assert invoke_fixture("queue_metrics", "success")["statusCode"] == 200
        response = invoke_fixture("worker_health", "healthy")
        assert PASSWORD not in response["body"] and "s3cret" not in response["body"]
        assert body(response)["redis"]["status"] == "connected"
        wiring.reset()
