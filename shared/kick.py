"""After admitting a job, nudge the render worker with an asynchronous invoke so a job need
not wait for the worker's schedule. Off when RENDER_WORKER_FUNCTION is empty."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from shared import aws
from shared.observability import logger, record_failure

# Delivers one asynchronous invoke: (function name, event). The emulator passes its own.
Invoker = Callable[[str, dict[str, Any]], None]


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
