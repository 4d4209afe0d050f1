"""After admitting a job, nudge the render worker with an asynchronous invoke so a job need
not wait for the worker's schedule. Off when RENDER_WORKER_FUNCTION is empty. A batch's new
jobs are kicked together (`kick_all`), several at once."""

from __future__ import annotations

import contextvars
import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shared import aws
from shared.observability import logger, record_failure

# Delivers one asynchronous invoke: (function name, event). The emulator passes its own.
Invoker = Callable[[str, dict[str, Any]], None]

# At most this many kicks of one batch in flight at once. Each is a short call that mostly
# waits on the network (20-50 ms), so 8 threads send a batch of 100 in about 13 rounds instead
# of 100; more would outgrow botocore's connection pool (10 by default: the surplus connections
# are opened and thrown away) and only add load on the Lambda API for little gain.
MAX_KICK_THREADS = 8


class WorkerKick:
    """`kick(job_id)`: best effort, since the job is already safely queued and a failed kick
    only costs latency. Without an invoker, the Lambda API (its client made on first use)."""

    def __init__(self, function: str, invoker: Invoker | None = None) -> None:
        self.function = function
        self._invoker = invoker
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def lambda_client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = aws.make_lambda_client()
            return self._client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _invoke_lambda(self, function: str, event: dict[str, Any]) -> None:
        self.lambda_client.invoke(FunctionName=function, InvocationType="Event", Payload=json.dumps(event).encode())

    def __call__(self, job_id: str) -> None:
        if not self.function:
            return
        event = {"source": "preview.enqueue", "detail-type": "job-admitted", "detail": {"jobId": job_id}}
        try:
            (self._invoker or self._invoke_lambda)(self.function, event)
        except Exception:
            record_failure("kick")
            logger.warning("worker kick failed; the schedule will pick the job up", extra={"jobId": job_id})

    def many(self, job_ids: Sequence[str]) -> None:
        """`kick(job_id)` for each job, up to MAX_KICK_THREADS at once: the same event, the same
        best effort (a failure counted and logged with its jobId, never raised). One job is
        kicked on this thread, as `kick` would. Returns once every kick has been sent."""
        if not self.function or not job_ids:
            return
        if len(job_ids) == 1:
            self(job_ids[0])
            return
        # A pool for this call only, shut down (waited for) by the `with`: every kick has gone
        # out before the handler answers and Lambda freezes the environment, and no thread is
        # left behind; starting a few threads costs far less than one kick. Each kick runs in a
        # copy of this thread's context, so its warning carries the request's log keys.
        with ThreadPoolExecutor(max_workers=min(MAX_KICK_THREADS, len(job_ids)),
                                thread_name_prefix="worker-kick") as pool:
            sent = [pool.submit(contextvars.copy_context().run, self, job_id) for job_id in job_ids]
        for future in sent:
            future.result()  # `kick` raises nothing of its own; anything else is a bug, shown


def kick_all(kick: Callable[[str], None], job_ids: Sequence[str]) -> None:
    """Kick each of `job_ids`: a `WorkerKick` several at once (`WorkerKick.many`), any other
    callable (a test's or the bench's) once per job, in order."""
    if isinstance(kick, WorkerKick):
        kick.many(job_ids)
        return
    for job_id in job_ids:
        kick(job_id)
