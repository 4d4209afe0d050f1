"""No Redis password ever reaches a response or a log through the URL; the cluster form of
REDIS_URL; cluster errors are 503s. All without a socket."""

from __future__ import annotations

import pytest
import redis
from redis.cluster import RedisCluster

from shared.errors import ConfigError, StoreUnavailable
from shared.queue import JobQueue
from shared.redis_client import ClusterScriptRunner, connect, split_cluster_option
from shared.settings import Settings, mask_url

pytestmark = pytest.mark.usefixtures("no_sockets")


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
    ("redis://:pw@10.0.0.1:6380/2", "redis://***@10.0.0.1:6380/2"),
    ("rediss://user:pw@cache.example:6379/0", "rediss://***@cache.example:6379/0"),
    ("redis://127.0.0.1:6379/0?password=pw&db=1", "redis://127.0.0.1:6379/0"),
    ("redis://user@[::1]:6379", "redis://***@[::1]:6379"),
    ("unix:///run/redis.sock?password=pw", "unix:///run/redis.sock"),
])
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown
    assert "pw" not in mask_url(url)


@pytest.mark.parametrize(("url", "cleaned", "cluster"), [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0", False),
    ("redis://127.0.0.1:7000/?cluster=true", "redis://127.0.0.1:7000/", True),
    ("rediss://u:p%40w@cfg.example:6379/?ssl_cert_reqs=required&cluster=yes",
     "rediss://u:p%40w@cfg.example:6379/?ssl_cert_reqs=required", True),
    ("redis://h:1/?cluster=false&socket_keepalive=true", "redis://h:1/?socket_keepalive=true", False),
    ("redis://h:1/?cluster=TRUE", "redis://h:1/", True),
])
def test_the_cluster_option_is_read_and_taken_out(url: str, cleaned: str, cluster: bool) -> None:
    assert split_cluster_option(url) == (cleaned, cluster)


def test_a_cluster_client_is_made_without_connecting() -> None:
    # no_sockets: building the services at a cold start must not wait for the cluster
    settings = Settings.from_env({"REDIS_URL": "rediss://app:tok%2Fen@clustercfg.example:6379/?cluster=true"})
    client = connect(settings)
    assert isinstance(client, RedisCluster) and not client.discovered
    queue = JobQueue(client, settings, connect(settings, blocking=True))
    assert isinstance(queue._runner, ClusterScriptRunner)
    queue.close()
    client.close()
    assert not client.discovered


@pytest.mark.parametrize("url", ["redis://h:1/2?cluster=true", "unix:///run/redis.sock?cluster=true",
                                 "redis://:pw@h:1/?cluster=maybe"])
def test_a_cluster_url_redis_cannot_use_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        connect(Settings.from_env({"REDIS_URL": url}))
    assert "pw" not in str(caught.value) and "REDIS_URL" in str(caught.value)


def test_masked_cluster_url_keeps_no_secret() -> None:
    assert mask_url("rediss://app:token@clustercfg.example:6379/?cluster=true") == (
        "rediss://***@clustercfg.example:6379/")


def test_cluster_errors_become_503() -> None:
    from redis.exceptions import (
        AskError,
        ClusterDownError,
        ClusterError,
        MasterDownError,
        MovedError,
        ReadOnlyError,
        SlotNotCoveredError,
        TryAgainError,
    )

    from shared.queue import redis_errors

    for exc in (ClusterDownError("The cluster is down"), TryAgainError("Multiple keys request during rehashing"),
                MovedError("1234 127.0.0.1:7001"), AskError("1234 127.0.0.1:7001"), SlotNotCoveredError("x"),
                ClusterError("TTL exhausted"), MasterDownError("Link with MASTER is down"),
                ReadOnlyError("You can't write against a read only replica."),
                redis.exceptions.RedisClusterException("Redis Cluster cannot be connected")):
        with pytest.raises(StoreUnavailable), redis_errors():
            raise exc
    with pytest.raises(redis.exceptions.ClusterCrossSlotError), redis_errors():
        raise redis.exceptions.ClusterCrossSlotError("CROSSSLOT Keys in request don't hash to the same slot")
