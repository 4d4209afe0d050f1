"""The long-running worker writes its log lines together (`observability.batched_log_writes`):
the same lines, byte for byte and in order, in far fewer writes, none kept longer than a moment,
all of them out when the block ends or the logging machinery flushes."""

from __future__ import annotations

import io
import logging
import threading
import time
from typing import Any

import pytest

from shared import observability

pytestmark = pytest.mark.unit


class CountingStream(io.StringIO):
    """A stream that counts its writes (and can be told to fail them)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.failing = False
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        with self.lock:
            if self.failing:
                raise OSError("disk full")
            self.writes += 1
            return super().write(text)


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch) -> CountingStream:
    """The service's handler writing to a CountingStream (as it writes to stdout)."""
    target = CountingStream()
    handler = observability.logger.registered_handler
    monkeypatch.setattr(handler, "stream", target)
    return target


def _lines(text: str) -> list[str]:
    return text.splitlines()


def _wait_for(predicate: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_batched_lines_are_the_lines_written_one_by_one_in_order(stream: CountingStream,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # Every line at the same moment, so both runs give the same text
    monkeypatch.setattr(time, "time", lambda: 1795867200.1236)

    def write_lines() -> None:
        for i in range(300):
            observability.info_line("job finished", {"jobId": f"j-{i}", "projectId": "p", "attempt": 1})
            if i % 100 == 50:  # records through the logging machinery land in their place
                observability.logger.warning("a warning", extra={"jobId": f"j-{i}"})

    write_lines()
    direct, direct_writes = stream.getvalue(), stream.writes
    stream.seek(0)
    stream.truncate()
    stream.writes = 0
    with observability.batched_log_writes():
        write_lines()
    assert stream.getvalue() == direct
    assert len(_lines(direct)) == 303 and direct_writes >= 303
    # the 3 warnings are written at once (their flush), the lines between them together
    assert stream.writes <= 20


def test_many_threads_lose_and_mix_no_line(stream: CountingStream) -> None:
    def lines(t: int) -> None:
        for i in range(500):
            observability.info_line("job finished", {"jobId": f"t{t}-{i}", "projectId": "p"})

    with observability.batched_log_writes():
        threads = [threading.Thread(target=lines, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    written = _lines(stream.getvalue())
    assert len(written) == 4000 and all(line.startswith("{") and line.endswith("}") for line in written)
    for t in range(8):  # each thread's lines in its order
        ids = [line.split('"jobId":"')[1].split('"')[0] for line in written if f'"t{t}-' in line]
        assert ids == [f"t{t}-{i}" for i in range(500)]
    assert stream.writes < 4000 / 10


def test_a_line_is_written_within_a_moment_without_the_block_ending(stream: CountingStream) -> None:
    with observability.batched_log_writes(interval_s=0.01):
        observability.info_line("job finished", {"jobId": "soon"})
        _wait_for(lambda: '"jobId":"soon"' in stream.getvalue())
        # and again after a quiet spell: the writer waits for the next line, then writes it
        time.sleep(0.05)
        observability.info_line("job finished", {"jobId": "later"})
        _wait_for(lambda: '"jobId":"later"' in stream.getvalue())


def test_a_flush_of_the_handler_writes_what_is_kept(stream: CountingStream) -> None:
    with observability.batched_log_writes(interval_s=60):  # the writer thread would wait a minute
        for i in range(5):
            observability.info_line("job finished", {"jobId": f"k-{i}"})
        assert stream.getvalue() == ""
        # what logging.shutdown does to each handler (the worker calls it before it exits at
        # once, `leave`; the interpreter at its exit)
        observability.logger.registered_handler.flush()
        assert len(_lines(stream.getvalue())) == 5


def test_the_handler_writes_straight_again_after_the_block(stream: CountingStream) -> None:
    handler = observability.logger.registered_handler
    with observability.batched_log_writes(interval_s=60):
        observability.info_line("job finished", {"jobId": "kept"})
        with observability.batched_log_writes():  # nested: the outer block's batch is used
            observability.info_line("job finished", {"jobId": "nested"})
        assert stream.getvalue() == "" and handler.stream is not stream
    assert handler.stream is stream
    assert [line.split('"jobId":"')[1].split('"')[0] for line in _lines(stream.getvalue())] == ["kept", "nested"]
    assert not [t for t in threading.enumerate() if t.name == "log-writer"]
    writes = stream.writes
    observability.info_line("job finished", {"jobId": "after"})
    assert stream.writes == writes + 1


def test_a_failed_write_is_said_on_stderr_and_logging_goes_on(stream: CountingStream,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    with observability.batched_log_writes(interval_s=0.01):
        stream.failing = True
        observability.info_line("job finished", {"jobId": "lost"})
        _wait_for(lambda: "writing log lines to stdout failed" in capsys.readouterr().err)
        stream.failing = False
        observability.info_line("job finished", {"jobId": "kept"})
        _wait_for(lambda: '"jobId":"kept"' in stream.getvalue())


def test_another_handler_is_left_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    class OwnHandler(logging.StreamHandler):  # type: ignore[type-arg]
        pass

    handler = OwnHandler(io.StringIO())
    monkeypatch.setattr(observability.logger, "logger_handler", handler)
    with observability.batched_log_writes():
        assert type(handler.stream) is io.StringIO
