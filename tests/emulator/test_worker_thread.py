"""The emulator's long-running worker thread stands in for a supervised process: a worker that
gives up (a non-zero status: more renders stuck than it has job loops) is replaced by a fresh
one after a pause, and a stop ends the thread whatever it was doing."""

from __future__ import annotations

import threading
import time

import pytest

from local.preview import PreviewExtras, PreviewOptions
from shared.worker import Worker
from tests.emulator.in_process import emulator_log

pytestmark = pytest.mark.redis


def test_a_worker_that_gives_up_is_replaced_and_a_stop_ends_the_thread(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[Worker] = []
    second_running = threading.Event()

    def run_forever(self: Worker, concurrency: int | None = None) -> int:
        runs.append(self)
        if len(runs) == 1:
            return 70  # as process_mode.run answers once too many renders are stuck
        second_running.set()
        self.stop_event.wait(30)
        return 0

    monkeypatch.setattr(Worker, "run_forever", run_forever)
    extras = PreviewExtras(PreviewOptions(worker=True, worker_function="RenderWorkerFunction"))
    with emulator_log() as log:
        extras.start(lambda *args, **kwargs: None)  # type: ignore[arg-type,return-value]
        try:
            # Given the first worker gave up, when the pause is over, then a fresh one runs
            assert second_running.wait(10), log.text
            assert runs[0] is not runs[1] and extras.worker is runs[1]
            assert "the render worker stopped (status 70); starting a fresh one in 1 s" in log.text
        finally:
            started = time.monotonic()
            extras.stop()
    # And a stop ends the thread at once
    assert extras.worker_thread is not None and not extras.worker_thread.is_alive()
    assert time.monotonic() - started < 5
    assert len(runs) == 2
