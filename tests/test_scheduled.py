"""The scheduled functions through their EventBridge fixtures: render worker and health probe."""

from __future__ import annotations

import pytest

from shared import wiring
from tests.conftest import load_event
from tests.handlers import EXPECTED, apply_given, invoke

CASES = [k for k in EXPECTED if k.split("/")[0] in {"render_worker", "health_probe"}]


@pytest.mark.parametrize("case", CASES)
def test_fixture_gives_expected_summary(case: str, redis_url: str) -> None:
    function, name = case.split("/")
    apply_given(EXPECTED[case].get("given", []))
    result = invoke(function, load_event(function, name))
    for key, value in EXPECTED[case]["expect"].items():
        assert result[key] == value, result


@pytest.mark.slow
def test_probe_recovers_expired_leases(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREVIEW_LEASE_MS", "1000")
    wiring.reset()
    apply_given(["enqueue:minimal", "worker-heartbeat"])
    queue = wiring.services().queue
    assert queue.claim().job is not None  # a worker claims it, then dies
    import time

    time.sleep(1.1)
    result = invoke("health_probe", load_event("health_probe", "scheduled"))
    assert result["recovered"]["requeued"] == ["preview-job-0001"]
    assert queue.status("preview-job-0001").state == "waiting"  # type: ignore[union-attr]


@pytest.mark.redis
def test_probe_reports_redis_down(monkeypatch: pytest.MonkeyPatch) -> None:
    result = invoke("health_probe", load_event("health_probe", "scheduled"))
    assert result["status"] == "unhealthy" and result["redis"]["status"] == "disconnected"
