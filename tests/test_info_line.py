"""The per-job log line (`observability.info_line`, written without the logging machinery) is
byte for byte the line `logger.info` writes: same keys, same order, same timestamp, whatever the
time, the log context or the log format."""

from __future__ import annotations

import time
from typing import Any

import pytest

from shared import observability

pytestmark = pytest.mark.unit


def _both(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, at: float, message: str,
          fields: dict[str, Any], **more: Any) -> tuple[str, str]:
    """The line of info_line and of logger.info, each written at the time `at`, from one line."""
    monkeypatch.setattr(time, "time", lambda: at)
    capsys.readouterr()
    lines = []
    for fast in (True, False):
        observability.info_line(message, fields, **more) if fast else observability.logger.info(message, extra={**fields, **more})  # noqa: E501
        lines.append(capsys.readouterr().out)
    monkeypatch.undo()
    return lines[0], lines[1]


MOMENTS = [1795867200.0, 1795867200.0004, 1795867200.1236, 1795867200.9999, 1795867201.5, 1795867199.25,
           1795867200.5, 1795867260.001, 1811111111.999]


@pytest.mark.parametrize("at", MOMENTS)
def test_the_line_is_the_one_logger_info_writes(capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch, at: float) -> None:
    fast, slow = _both(capsys, monkeypatch, at, "job finished", {"jobId": "j-1", "projectId": "p", "attempt": 1},
                       outcome="dryrun", seconds=0.004)
    print(fast, slow)
    assert fast == slow and fast.startswith("{")


def test_the_time_moves_on_from_one_line_to_the_next(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Lines a second, a minute and a day apart (and back): each its own timestamp
    seen = set()
    for at in (*MOMENTS, *reversed(MOMENTS)):
        fast, slow = _both(capsys, monkeypatch, at, "job admitted", {"jobId": "a", "state": "waiting"})
        assert fast == slow
        seen.add(fast)
    assert len(seen) == len({int(at * 1000) for at in MOMENTS})  # one per millisecond


def test_the_log_context_and_a_changed_log_format_are_in_the_line(capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    with observability.invocation_context(None, "corr-1", cold=True, workerId="w-1"):
        fast, slow = _both(capsys, monkeypatch, MOMENTS[2], "job admitted", {"jobId": "a"})
        assert fast == slow and '"correlation_id":"corr-1"' in fast
    fast, slow = _both(capsys, monkeypatch, MOMENTS[2], "job admitted", {"jobId": "a"})
    assert fast == slow and "corr-1" not in fast
    # a key added to the log format, then one of its values changed (to an equal value of another type)
    observability.logger.append_keys(region="eu-west-1", shard=1)
    try:
        fast, slow = _both(capsys, monkeypatch, MOMENTS[3], "job admitted", {"jobId": "a"})
        assert fast == slow and '"shard":1' in fast
        observability.logger.append_keys(shard=True)
        fast, slow = _both(capsys, monkeypatch, MOMENTS[3], "job admitted", {"jobId": "a"})
        assert fast == slow and '"shard":true' in fast
    finally:
        observability.logger.remove_keys(["region", "shard"])
    fast, slow = _both(capsys, monkeypatch, MOMENTS[3], "job admitted", {"jobId": "a"})
    assert fast == slow and "region" not in fast


def test_a_changed_serializer_is_the_one_used(capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import functools
    import json

    formatter = observability.logger.registered_formatter
    _both(capsys, monkeypatch, MOMENTS[4], "job admitted", {"jobId": "a"})  # the plan of the default one
    for serializer in (functools.partial(json.dumps, sort_keys=True, default=str, separators=(", ", ": ")),
                       lambda line: json.dumps(line, indent=1)):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(formatter, "json_serializer", serializer)
            fast, slow = _both(capsys, monkeypatch, MOMENTS[4], "job admitted", {"jobId": "a", "state": "waiting"})
        assert fast == slow and fast != fast.replace(": ", ":")


FIELDS = [
    {},
    {"jobId": "j-1", "state": None, "projectId": "p"},  # None is left out, as logger.info leaves it out
    {"jobId": "é-✓", "title": "line\nbreak \"quoted\" \u2028", "n": 1.5, "ok": True, "none": None},
    {"jobId": "j-1", "service": "another-service"},  # a key of the log format, in its place
    {"jobId": "j-1", "path": ("a", 1), "when": time.gmtime(0)},  # what json.dumps' default=str makes of it
    {"xray_trace_id": "from-a-field"},
]


@pytest.mark.parametrize("fields", FIELDS)
def test_any_fields_give_the_line_logger_info_writes(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch, fields: dict[str, Any]) -> None:
    for more in ({}, {"outcome": "dryrun", "seconds": 0.004}, {"jobId": "overridden"}):
        fast, slow = _both(capsys, monkeypatch, MOMENTS[2], "job finished", fields, **more)
        assert fast == slow


def test_the_trace_id_of_the_invocation_is_in_the_line(capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    fields = {"jobId": "j-1"}
    with pytest.MonkeyPatch.context() as env:  # _both undoes its own patch
        env.setenv("_X_AMZN_TRACE_ID", "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8")
        fast, slow = _both(capsys, monkeypatch, MOMENTS[1], "job admitted", fields)
        assert fast == slow and '"xray_trace_id":"1-5759e988-bd862e3fe1be46a994272793"' in fast
    fast, slow = _both(capsys, monkeypatch, MOMENTS[1], "job admitted", fields)
    assert fast == slow and "xray_trace_id" not in fast


def test_one_call_site_with_several_messages_and_a_format_of_per_line_attributes(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # One line of code writing two messages (as admission writes "job admitted" or "job replayed")
    for created in (True, False, True):
        fast, slow = _both(capsys, monkeypatch, MOMENTS[5], "job admitted" if created else "job replayed",
                           {"jobId": "a"})
        assert fast == slow and ("admitted" in fast) is created
    # A format key filled in from the thread and the process: built per line, still the same line
    observability.logger.append_keys(thread="%(threadName)s", pid="%(process)d")
    try:
        fast, slow = _both(capsys, monkeypatch, MOMENTS[5], "job admitted", {"jobId": "a"})
        assert fast == slow and "MainThread" in fast
    finally:
        observability.logger.remove_keys(["thread", "pid"])


def test_a_field_that_cannot_be_serialised_fails_the_call_and_the_next_line_is_whole(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(ValueError, match="Circular"):
        observability.info_line("job admitted", {"jobId": "a", "loop": looped})
    shared = {"k": 1}  # the same dict twice is no cycle, on this line and the next
    fast, slow = _both(capsys, monkeypatch, MOMENTS[6], "job admitted", {"a": shared, "b": shared})
    assert fast == slow
