"""A private Redis Cluster for the session: 3 masters with 1 replica each, six redis-server
processes on free loopback ports (the binary `local.redis_server` finds), a 1 s node timeout
so a failover takes a couple of seconds. Each test gets it healthy (a node a test killed is
started again and has rejoined) and empty, and the service pointed at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from local.redis_cluster import RedisCluster
from shared import wiring


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"), node_timeout_ms=1000,
                           password="cluster-s3cret").start()
    yield cluster
    cluster.stop()


@pytest.fixture
def clean_cluster(redis_cluster: RedisCluster) -> RedisCluster:
    """The session's cluster, every node up and in sync, emptied for this test."""
    for node in redis_cluster.nodes:
        if not node.alive:
            node.start()
    redis_cluster.wait_healthy()
    redis_cluster.flush()
    return redis_cluster


@pytest.fixture
def cluster_url(clean_cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the service at the cluster (seeded on its first node)."""
    monkeypatch.setenv("REDIS_URL", clean_cluster.url)
    monkeypatch.setenv("PREVIEW_QUEUE_MAX", "100000")
    wiring.reset()
    return clean_cluster.url


# Lines the failover tests report, shown in the terminal summary (and printed, for `-s`).
FIGURES: list[str] = []


@pytest.fixture
def report() -> Callable[[str], None]:
    def add(line: str) -> None:
        print(line)
        FIGURES.append(line)

    return add


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("redis cluster failover")
        for line in FIGURES:
            terminalreporter.write_line(line)
