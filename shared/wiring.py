"""The one place that builds the service's dependencies.

Every entry point (the handlers, the long-running worker, the emulator, `local invoke`) gets
its `Services` from `services()`: the settings read from the environment, the job queue on
its Redis clients, the artifact store and the worker kick, built together once per process.
`start()` builds them now from given inputs (the emulator passes its own invoker for the
kick), and `reset()` closes the connections and forgets them, so that the next `services()`
reads the environment again (tests do so between cases).

Nothing here connects at build time: a Redis connection opens on first use, an AWS client is
made on first use. So building at a function's cold start is cheap, and a bad configuration
fails that cold start with one clear message.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shared import observability, redis_client
from shared.artifacts import ArtifactStore, build_store
from shared.kick import Invoker, WorkerKick
from shared.queue import JobQueue
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.worker import Worker


@dataclass(frozen=True)
class Services:
    settings: Settings
    queue: JobQueue
    store: ArtifactStore
    kick: WorkerKick
    _clients: tuple[redis_client.RedisClient, ...] = field(default=(), repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def new_worker(self) -> Worker:
        """A render worker on these services (the emulator's long-running one)."""
        # Imported here: the HTTP functions never load the worker.
        from shared.worker import Worker

        return Worker(self.settings, self.queue, self.store)

    @property
    def worker(self) -> Worker:
        """The worker of this execution environment: a stable id in the health report across
        warm invocations, and its lease renewer reused rather than started again."""
        with self._lock:  # the emulator may run two kicked invocations at once
            if "_worker" not in self.__dict__:
                self.__dict__["_worker"] = self.new_worker()  # frozen: no attribute to assign
            worker: Worker = self.__dict__["_worker"]
        return worker

    def close(self) -> None:
        """Close every connection and client these services opened."""
        self.queue.close()
        for client in self._clients:
            client.close()
        self.store.close()
        self.kick.close()


def build(settings: Settings, *, invoker: Invoker | None = None) -> Services:
    observability.configure(settings)
    client = redis_client.connect(settings)
    blocking = redis_client.connect(settings, blocking=True)
    return Services(
        settings=settings,
        queue=JobQueue(client, settings, blocking),
        store=build_store(settings),
        kick=WorkerKick(settings.render_worker_function, invoker),
        _clients=(client, blocking),
    )


_lock = threading.Lock()
_current: Services | None = None


def services() -> Services:
    """This process's services, built from the environment on first use."""
    global _current
    current = _current
    if current is None:
        with _lock:
            if _current is None:
                _current = build(Settings.from_env())
            current = _current
    return current


def start(*, invoker: Invoker | None = None, env: Mapping[str, str] | None = None) -> Services:
    """Build the services now (from `env`, else the environment) and make them this process's,
    closing any built before."""
    global _current
    fresh = build(Settings.from_env(env), invoker=invoker)
    with _lock:
        previous, _current = _current, fresh
    if previous is not None:
        previous.close()
    return fresh


def reset() -> None:
    """Close the connections and forget the services; the next `services()` builds anew."""
    global _current
    with _lock:
        previous, _current = _current, None
    if previous is not None:
        previous.close()
    observability.configure(Settings())  # logs and metrics as before any services
