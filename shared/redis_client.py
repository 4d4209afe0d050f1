"""Redis clients with short timeouts, and the runner of the queue's Lua scripts.

`REDIS_URL` names one server (`redis://host:6379/0`), or a Redis Cluster when its query says
`cluster=true` (`rediss://user:token@clustercfg.example:6379/?cluster=true`): any node or a
configuration endpoint is the seed the cluster is discovered from. Credentials, TLS and the
other query options mean the same in both modes; a cluster has only database 0.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any, TypeAlias

import redis
from redis.backoff import NoBackoff
from redis.cluster import PRIMARY, ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.connection import AbstractConnection, parse_url
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.retry import Retry
from redis.utils import HIREDIS_AVAILABLE

from shared.errors import ConfigError, StoreUnavailable
from shared.settings import Settings

# Admission, status and health must answer (or fail with 503) well within 2 s, so one quick
# retry after a dropped connection is all we allow.
_RETRY = Retry(NoBackoff(), retries=1)

MAX_BLOCK_SECONDS = 5.0

RedisClient: TypeAlias = "redis.Redis | RedisCluster"

if HIREDIS_AVAILABLE:
    from hiredis import pack_command as _hiredis_pack

_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off"})


def split_cluster_option(url: str) -> tuple[str, bool]:
    """(the URL without its `cluster` query option, whether that option asks for cluster mode).
    The rest of the URL is left exactly as written (redis-py reads it)."""
    base, sep, rest = url.partition("?")
    if not sep:
        return url, False
    query, hash_sep, fragment = rest.partition("#")
    cluster: bool | None = None
    kept = []
    for item in query.split("&"):
        name, _, value = item.partition("=")
        if name != "cluster":
            kept.append(item)
            continue
        value = value.strip().lower()
        if value in _TRUE:
            cluster = True
        elif value in _FALSE:
            cluster = False
        else:
            raise ConfigError("invalid configuration: REDIS_URL=<hidden>: cluster must be true or false")
    cleaned = base + ("?" + "&".join(kept) if [k for k in kept if k] else "") + (hash_sep + fragment)
    return cleaned, bool(cluster)


def connect(settings: Settings, *, blocking: bool = False) -> RedisClient:
    """A client for `settings.redis_url` with short timeouts (`blocking`: for BLPOP waits): a
    `redis.Redis`, or a `RedisCluster` in cluster mode. Nothing connects before first use.
    The caller owns it and closes it; `shared.wiring` makes the process's pair."""
    timeout = settings.redis_timeout_ms / 1000
    # A blocking client waits in BLPOP for up to MAX_BLOCK_SECONDS; its read timeout leaves
    # room for that yet still notices a connection that died silently.
    read_timeout = MAX_BLOCK_SECONDS + 5 if blocking else timeout
    url, cluster = split_cluster_option(settings.redis_url)
    if cluster:
        return _cluster_client(url, connect_timeout=timeout, read_timeout=read_timeout)
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=read_timeout,
        socket_keepalive=True,
        retry=_RETRY,
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        decode_responses=True,
    )


def _cluster_client(url: str, *, connect_timeout: float, read_timeout: float) -> RedisCluster:
    try:
        options = parse_url(url)
    except ValueError as exc:  # a query option of the wrong type
        raise ConfigError(f"invalid configuration: REDIS_URL=<hidden>: {exc}") from None
    if options.get("path") or not options.get("host"):
        raise ConfigError("invalid configuration: REDIS_URL=<hidden>: cluster mode needs redis:// or rediss://"
                          " with a host")
    if options.get("db", 0) != 0:
        raise ConfigError("invalid configuration: REDIS_URL=<hidden>: a cluster has only database 0")
    return LazyRedisCluster(
        url=url,
        socket_connect_timeout=connect_timeout,
        socket_timeout=read_timeout,
        socket_keepalive=True,
        decode_responses=True,
        # Retried by the cluster client itself after it refreshed its slot map: one more try,
        # as in single-node mode (its default is three more, each CLUSTERDOWN costing 0.25 s).
        retry=Retry(NoBackoff(), retries=1),
        # The queue needs only its own slot: another shard down is no reason to refuse work.
        require_full_coverage=False,
        seed=(str(options["host"]), int(options.get("port", 6379))),
    )


class _Pending:
    __slots__ = ("kwargs", "lock", "ready", "building")

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.kwargs, self.lock, self.ready, self.building = kwargs, threading.RLock(), False, False


class LazyRedisCluster(RedisCluster):
    """A `RedisCluster` that discovers the cluster (CLUSTER SLOTS, COMMAND) on first use rather
    than when built, so a cold start never waits for Redis and a cluster down at start-up
    is a 503 on the calls, not a process that cannot start. A failed discovery is tried
    again by the next call.

    Every topology refresh also asks the URL's own host (when the nodes known so far did not
    answer): a configuration endpoint keeps working after every node's address changed."""

    def __init__(self, *, seed: tuple[str, int], **kwargs: Any) -> None:
        self.__dict__["_pending"] = _Pending(kwargs)
        self.__dict__["_seed"] = seed

    def __getattr__(self, name: str) -> Any:
        pending: _Pending | None = self.__dict__.get("_pending")
        if pending is None or pending.ready or name.startswith("__"):
            raise AttributeError(name)
        self._discover(pending, name)
        return object.__getattribute__(self, name)

    def _discover(self, pending: _Pending, name: str) -> None:
        with pending.lock:
            if pending.ready:
                return
            if pending.building:  # an attribute RedisCluster.__init__ reads before it sets it
                raise AttributeError(name)
            pending.building = True
            try:
                RedisCluster.__init__(self, **pending.kwargs)
                manager = self.nodes_manager
                initialize, seed = manager.initialize, self.__dict__["_seed"]

                def initialize_with_seed(additional_startup_nodes_info: Any = None, **kwargs: Any) -> Any:
                    extra = [*(additional_startup_nodes_info or ()), seed]
                    return initialize(additional_startup_nodes_info=extra, **kwargs)

                manager.initialize = initialize_with_seed  # type: ignore[method-assign,assignment]
                pending.ready = True
            except BaseException:
                for key in [k for k in self.__dict__ if k not in ("_pending", "_seed")]:
                    del self.__dict__[key]
                raise
            finally:
                pending.building = False

    @property
    def discovered(self) -> bool:
        return bool(self.__dict__["_pending"].ready)

    def get_encoder(self) -> Any:
        if not self.discovered:  # Script objects are made at build time: no discovery for that
            kwargs = self.__dict__["_pending"].kwargs
            return redis.connection.Encoder(kwargs.get("encoding", "utf-8"), kwargs.get("encoding_errors", "strict"),
                                            kwargs.get("decode_responses", False))
        return super().get_encoder()

    def close(self) -> None:
        if self.discovered:
            super().close()


class _ThreadConnection:
    """A thread's script connection. A redis-py connection sits in reference cycles, so only
    the garbage collector would close it after its thread ends; this holder is in none, so the
    thread's end closes the socket at once."""

    __slots__ = ("conn", "pid")

    def __init__(self, conn: AbstractConnection) -> None:
        self.conn, self.pid = conn, os.getpid()

    def __del__(self) -> None:
        if self.pid == os.getpid():  # never close a parent's socket from a forked child
            with contextlib.suppress(Exception):  # e.g. at interpreter shutdown: nothing to tell
                self.conn.disconnect()


class ScriptRunner:
    """Runs the queue's Lua scripts: one EVALSHA round trip on a connection of the caller's
    thread, with nothing between the caller and the socket but packing and parsing.

    Every state change of the queue is one script, so this is the hot path of admission and of
    the worker loop. Going through `Redis.execute_command` adds a pool check-out and check-in,
    retry closures and redis-py's metric hooks to each call: about a fifth of an admission's
    time on loopback (see bench/queue_bench.py). The connections are made from the client's
    own settings (timeouts, keep-alive, credentials, TLS). One retry on a fresh connection when
    an open one turns out dropped (never after a timeout: see `_evalsha`), a script reloaded
    once when the server lost it. A connection belongs to one thread; it closes when that thread ends, when the
    runner is closed or collected, and is never reused across a fork.

    Replication is asynchronous, so a server with replicas and automatic failover (ElastiCache
    with cluster mode disabled and Multi-AZ) can fail over to a replica that never got the
    last writes. A `replicated` call (the writes a client is told succeeded) on a server that
    has a replica sends `WAIT 1 REPLICA_WAIT_MS` in the same write as the script, and a write no
    replica confirmed in time is a `StoreUnavailable` (503) instead of an acknowledgement. How
    many replicas the server has is asked (INFO replication, in the same write as a script) at
    most every REPLICA_CHECK_S, and again after a write went unconfirmed.
    """

    # How long a `replicated` write waits for a replica to confirm it: replication takes well
    # under a millisecond in one region, so only a replica that is gone or stalled makes the
    # caller wait this long, and then it gets a 503.
    REPLICA_WAIT_MS = 500
    REPLICA_CHECK_S = 5.0

    def __new__(cls, client: RedisClient, retries: int = 1) -> ScriptRunner:
        if cls is ScriptRunner and isinstance(client, RedisCluster):
            cls = ClusterScriptRunner  # the same API on a cluster
        return object.__new__(cls)

    def __init__(self, client: RedisClient, retries: int = 1) -> None:
        assert isinstance(client, redis.Redis)
        pool = client.connection_pool
        self._connection_class = pool.connection_class
        self._connection_kwargs = dict(pool.connection_kwargs)
        self._retries = retries
        self._local = threading.local()
        self._open: weakref.WeakSet[AbstractConnection] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._replicas = 0  # as the server last said; asked again from `_replicas_due` on
        self._replicas_due = 0.0

    def _connection(self) -> AbstractConnection:
        held: _ThreadConnection | None = getattr(self._local, "held", None)
        if held is None or held.pid != os.getpid():
            conn = self._connection_class(**self._connection_kwargs)
            self._local.held = held = _ThreadConnection(conn)
            with self._lock:
                self._open.add(conn)
        return held.conn

    def __call__(self, script: Script, keys: Sequence[Any], args: Sequence[Any], *, replicated: bool = False) -> Any:
        """The script's reply. `replicated` asks for the write to reach a replica, where the
        server has one, before it is acknowledged (see the class's docstring)."""
        conn = self._connection()
        try:
            return self._evalsha(conn, script, keys, args, replicated)
        except (redis.ResponseError, StoreUnavailable):
            raise  # an error reply was read whole, or a write unconfirmed: the connection is in step
        except BaseException:
            # Anything else (a dropped connection, a timeout, KeyboardInterrupt between send
            # and read) may leave a reply unread, which the next call would take for its own.
            conn.disconnect()
            raise

    @staticmethod
    def _pack(conn: AbstractConnection, *args: Any) -> Any:
        if HIREDIS_AVAILABLE:
            # What redis-py's own hiredis packer ends in, without its per-argument checks
            # (our arguments are only str and int): a third of the time.
            return [_hiredis_pack(args)]
        return conn.pack_command(*args)

    def _evalsha(self, conn: AbstractConnection, script: Script, keys: Sequence[Any], args: Sequence[Any],
                 replicated: bool = False) -> Any:
        packed = self._pack(conn, "EVALSHA", script.sha, len(keys), *keys, *args)
        retries = self._retries
        reloaded = False
        while True:
            # A replicated call asks how many replicas there are when that is due (the answer
            # first, so the script's own WAIT, if one is needed, is a second round trip), or
            # waits for one as the last answer said.
            ask = replicated and time.monotonic() >= self._replicas_due
            wait = replicated and not ask and self._replicas > 0
            # Only a connection that was open before this call is retried: the server may have
            # closed it while idle (timeout, restart, failover), and then it never saw the
            # command. A failed connect is not retried here (the connection's own policy already
            # did), nor is a timeout: a script that ran but answered late must not run twice
            # (claim would lease a second job, complete would report a lost lease).
            was_open = conn.is_connected
            try:
                if ask:
                    conn.send_packed_command(self._pack(conn, "INFO", "replication") + packed, check_health=False)
                    try:
                        info = conn.read_response()
                    except redis.ResponseError:  # a server that will not say (INFO renamed away)
                        info = ""
                    self._note_replicas(info)
                    reply = conn.read_response()
                    if self._replicas == 0:
                        return reply
                    conn.send_command("WAIT", 1, self.REPLICA_WAIT_MS, check_health=False)
                    confirmed = int(conn.read_response())
                elif wait:
                    conn.send_packed_command(packed + self._wait(conn), check_health=False)
                    reply, confirmed = self._read_confirmed(conn)
                else:
                    conn.send_packed_command(packed, check_health=False)
                    return conn.read_response()
                if confirmed < 1:
                    self._replicas_due = 0.0  # a replica may be gone: ask again next time
                    raise StoreUnavailable("Redis did not confirm the write on a replica in time; try again shortly")
                return reply
            except NoScriptError:
                if reloaded:
                    raise
                reloaded = True
                conn.send_command("SCRIPT", "LOAD", script.script, check_health=False)
                script.sha = conn.read_response()
                packed = self._pack(conn, "EVALSHA", script.sha, len(keys), *keys, *args)
            except redis.ConnectionError:
                if not was_open or retries <= 0:
                    raise
                retries -= 1
                conn.disconnect()

    def _wait(self, conn: AbstractConnection) -> Any:
        """WAIT for one replica, packed to follow a script in the same write."""
        return self._pack(conn, "WAIT", 1, self.REPLICA_WAIT_MS)

    @staticmethod
    def _read_confirmed(conn: AbstractConnection) -> tuple[Any, int]:
        """The replies of a script sent with `_wait` after it: the script's, and how many
        replicas confirmed its write. WAIT's answer is read even when the script's is an error,
        so the connection stays in step."""
        try:
            reply = conn.read_response()
        except redis.ResponseError:
            conn.read_response()
            raise
        return reply, int(conn.read_response())

    def _note_replicas(self, info: Any) -> None:
        text = info.decode() if isinstance(info, bytes) else str(info)
        count = next((line.partition(":")[2] for line in text.splitlines() if line.startswith("connected_slaves:")),
                     "0")
        self._replicas = int(count.strip() or 0)
        self._replicas_due = time.monotonic() + self.REPLICA_CHECK_S

    def close(self) -> None:
        """Close every connection this runner opened (a thread still using one reconnects)."""
        with self._lock:
            connections = list(self._open)  # kept: a thread may reconnect the same object
        for conn in connections:
            conn.disconnect()


class _NodeConnections:
    """A thread's script connections, one per cluster node it talked to (by node name)."""

    __slots__ = ("by_node", "pid")

    def __init__(self) -> None:
        self.by_node: dict[str, _ThreadConnection] = {}
        self.pid = os.getpid()


class ClusterScriptRunner(ScriptRunner):
    """`ScriptRunner` on a Redis Cluster: the same raw EVALSHA round trip, sent to the master
    that owns the slot of the script's keys (all keys of a queue share one hash tag, so one
    slot), on a connection of the caller's thread to that node.

    The slot map is the cluster client's own (`RedisCluster.nodes_manager`), so both paths
    learn from each other's refreshes. A MOVED reply patches the map and the script goes to
    the named node; an ASK reply sends ASKING and the script to the named node once, the map
    left as is (the slot is still migrating); TRYAGAIN (keys split by a migration) is tried
    again after a short pause. None of these ran the script, so sending it again is safe; a
    few redirections at most, then the error stands (a 503 to the caller). A node that lacks
    the script gets it loaded (SCRIPT LOAD on that node). CLUSTERDOWN, a timeout or a node
    that cannot be reached refreshes the slot map and fails at once: the next call goes to
    whoever owns the slot by then. Only when the connection could not even be opened (so
    nothing was sent) and the refresh names another master is the call tried there at once.
    As in single-node mode, an open connection found dropped is retried once and a timeout
    never is (the script may have run).

    Replication in a cluster is asynchronous, so a master that dies right after a script ran
    can take its write along. A `replicated` call (the writes a client is told succeeded:
    admission, retry, cancel) sends `WAIT 1 REPLICA_WAIT_MS` in the same write as the script
    when the slot map names a replica of the master, and a write no replica confirmed in time
    is a `StoreUnavailable` (503) instead of an acknowledgement.
    """

    REDIRECTS = 5
    TRYAGAIN_PAUSE_S = 0.05
    REFRESH_INTERVAL_S = 0.5  # at most one slot-map refresh this often after an unconfirmed write

    def __init__(self, client: RedisClient, retries: int = 1) -> None:
        assert isinstance(client, RedisCluster)
        self._cluster = client
        self._retries = retries
        self._local = threading.local()
        self._open: weakref.WeakSet[AbstractConnection] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._refreshed_at = 0.0

    def _node_connection(self, node: ClusterNode) -> AbstractConnection:
        held: _NodeConnections | None = getattr(self._local, "nodes", None)
        if held is None or held.pid != os.getpid():
            self._local.nodes = held = _NodeConnections()
        holder = held.by_node.get(node.name)
        if holder is None:
            # The node's pool has the cluster client's settings for it (credentials, TLS,
            # timeouts, the cluster's on-connect hook): the same connection it would make.
            pool = self._cluster.get_redis_connection(node).connection_pool
            conn = pool.connection_class(**pool.connection_kwargs)
            held.by_node[node.name] = holder = _ThreadConnection(conn)
            with self._lock:
                self._open.add(conn)
        return holder.conn

    def _connection(self) -> AbstractConnection:
        """This thread's connection to the first master (what single-node tests poke at)."""
        return self._node_connection(self._cluster.get_primaries()[0])

    def _primary(self, slot: int) -> ClusterNode:
        return self._cluster.nodes_manager.get_node_from_slot(slot)

    def _node_at(self, host: str, port: int) -> ClusterNode:
        manager = self._cluster.nodes_manager
        host, port = manager.remap_host_port(host, port)
        return manager.get_node(host=host, port=port) or ClusterNode(host, port, PRIMARY)

    def _refresh(self, failed: ClusterNode | None) -> None:
        """Read the slot map again (nodes other than `failed` first); a failure is left to the
        next call."""
        with contextlib.suppress(RedisClusterException, redis.RedisError, OSError):
            self._cluster.nodes_manager.initialize(last_failed_node_name=failed.name if failed else None)

    def __call__(self, script: Script, keys: Sequence[Any], args: Sequence[Any], *, replicated: bool = False) -> Any:
        first = keys[0]
        slot = key_slot(first.encode() if isinstance(first, str) else first)
        try:
            node = self._primary(slot)
        except SlotNotCoveredError:  # the map was read while the slot had no master
            self._refresh(None)
            node = self._primary(slot)
        retries = self._retries
        redirects = 0
        reloaded = asked = False  # asked: `node` is the target of an ASK redirection
        packed: Any = None
        while True:
            conn = self._node_connection(node)
            if packed is None:
                packed = self._pack(conn, "EVALSHA", script.sha, len(keys), *keys, *args)
            # WAIT goes out in the same write as the script, on the same connection (it waits
            # for this connection's writes), and only where the slot's master has a replica.
            wait = replicated and self._has_replica(slot)
            was_open = conn.is_connected
            try:
                sent = packed + self._wait(conn) if wait else packed
                if asked:
                    # ASKING holds for the next command only: both go out in one write.
                    conn.send_packed_command(self._pack(conn, "ASKING") + sent, check_health=False)
                    try:
                        conn.read_response()
                    except redis.ResponseError:
                        conn.disconnect()  # the script's reply is still unread
                        raise
                else:
                    conn.send_packed_command(sent, check_health=False)
                if not wait:
                    return conn.read_response()
                reply, confirmed = self._read_confirmed(conn)
            except NoScriptError:
                if reloaded:
                    raise
                reloaded = True
                conn.send_command("SCRIPT", "LOAD", script.script, check_health=False)
                script.sha = conn.read_response()
                packed = None
            except MovedError as exc:
                redirects = self._redirected(redirects, exc)
                self._cluster.nodes_manager.move_slot(exc)
                node, asked = self._primary(slot), False
            except AskError as exc:
                redirects = self._redirected(redirects, exc)
                node, asked = self._node_at(exc.host, exc.port), True
            except TryAgainError as exc:
                redirects = self._redirected(redirects, exc)
                time.sleep(self.TRYAGAIN_PAUSE_S)
                node, asked = self._primary(slot), False
            except ClusterDownError:
                self._refresh(None)
                raise
            except redis.ResponseError:
                raise  # an error reply was read whole: the connection is still in step
            except redis.ConnectionError:
                conn.disconnect()
                if was_open and retries > 0:
                    retries -= 1
                    continue
                self._refresh(node)
                owner = self._primary_or_none(slot)
                if not was_open and owner is not None and owner.name != node.name and redirects < self.REDIRECTS:
                    # Nothing was sent, and the slot has a new master (a failover finished).
                    redirects += 1
                    node, asked = owner, False
                    continue
                raise
            except redis.TimeoutError:
                conn.disconnect()
                self._refresh(node)
                raise
            except BaseException:
                # Anything else (KeyboardInterrupt between send and read) may leave a reply
                # unread, which the next call would take for its own.
                conn.disconnect()
                raise
            else:
                if confirmed < 1:
                    self._unconfirmed()
                return reply

    def _has_replica(self, slot: int) -> bool:
        """Whether the slot map names a replica of the slot's master (CLUSTER SLOTS leaves out
        replicas the cluster marked as failed)."""
        return len(self._cluster.nodes_manager.slots_cache.get(slot) or ()) > 1

    def _unconfirmed(self) -> None:
        """A write no replica confirmed in time: it ran on the master, but a failover now could
        lose it, so it is not acknowledged (the caller answers 503, and a client's retry of the
        same request settles it: a replay if the write survived, a fresh one if it did not). The
        slot map is read again, at most every REFRESH_INTERVAL_S: a replica that died and was
        marked failed leaves it, and its master's writes stop waiting for it."""
        now = time.monotonic()
        if now - self._refreshed_at >= self.REFRESH_INTERVAL_S:
            self._refreshed_at = now
            self._refresh(None)
        raise StoreUnavailable("Redis Cluster did not confirm the write on a replica in time; try again shortly")

    def _primary_or_none(self, slot: int) -> ClusterNode | None:
        try:
            return self._primary(slot)
        except RedisClusterException:
            return None

    def _redirected(self, redirects: int, exc: Exception) -> int:
        if redirects >= self.REDIRECTS:
            raise exc
        return redirects + 1
