"""The emulator's embedded Redis is supervised: killed with SIGKILL while clients enqueue jobs,
it is reaped (no zombie), started again from its append-only file on the same port, and every
job the emulator accepted is still there."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import load_event
from tests.emulator.conftest import Emulator, child_env

pytestmark = [pytest.mark.process, pytest.mark.slow]
KEY = "supervised-key"


def redis_pid(emulator_pid: int) -> int:
    """The emulator's redis-server child."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == emulator_pid and b"redis-server" in cmdline:
            return int(entry.name)
    raise AssertionError("the emulator has no redis-server child")


def state_of(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None  # gone: reaped


def test_a_killed_embedded_redis_comes_back_with_every_accepted_job(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # No worker and no enqueue kick: every accepted job stays waiting, to be counted.
    # Room for every job the load admits: in the backlog, and in the finished records the
    # retention caps keep for them (admission counts unfinished jobs against those caps too).
    env = child_env(PREVIEW_QUEUE_MAX="100000", PREVIEW_KEEP_COMPLETED_COUNT="100000",
                    PREVIEW_KEEP_FAILED_COUNT="100000", PREVIEW_REDIS_TIMEOUT_MS="300", RENDER_WORKER_FUNCTION="")
    env.pop("REDIS_URL", None)  # the embedded one
    emulator = Emulator(tmp_path, ["--data-dir", str(tmp_path / "data"), "--no-worker", "--no-schedules",
                                   "--api-key", KEY, "--no-access-log"], env).start()
    template = json.loads(load_event("enqueue_job", "minimal")["body"])
    accepted: list[str] = []
    statuses: dict[int, int] = {}
    answers: list[tuple[float, int]] = []
    stop = threading.Event()

    def load(worker: int) -> None:
        with httpx.Client(base_url=emulator.url, headers={"x-api-key": KEY}, timeout=10) as client:
            n = 0
            while not stop.is_set():
                n += 1
                job = {**template, "jobId": f"sup-{worker}-{n}", "dryRun": True}
                try:
                    response = client.post("/api/preview/job", json=job)
                except httpx.HTTPError:
                    continue
                answers.append((time.monotonic(), response.status_code))
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code == 202:
                    accepted.append(job["jobId"])

    try:
        assert emulator.process is not None
        old = redis_pid(emulator.process.pid)
        threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        before = len(accepted)
        killed_at = time.monotonic()
        os.kill(old, signal.SIGKILL)
        deadline = killed_at + 20
        while time.monotonic() < deadline and not any(t > killed_at + 0.05 and s == 202 for t, s in answers):
            time.sleep(0.01)
        back = next((t for t, s in answers if t > killed_at + 0.05 and s == 202), None)
        time.sleep(1.0)
        stop.set()
        for thread in threads:
            thread.join(30)
        assert back is not None, f"no job admitted within 20 s of the kill: {statuses}"
        assert state_of(old) is None, f"the killed server is still a process ({state_of(old)}): not reaped"
        new = redis_pid(emulator.process.pid)
        assert new != old
        # Every accepted job is there, read back through the status route.
        with httpx.Client(base_url=emulator.url, headers={"x-api-key": KEY}, timeout=10) as client:
            missing = [job for job in accepted if client.get(f"/api/preview/job/{job}/status").status_code != 200]
            counts = client.get("/api/preview/queue/metrics").json()
        assert missing == []
        assert counts["waiting"] == len(accepted)
        unexpected = {code: n for code, n in statuses.items() if code not in (202, 503)}
        assert unexpected == {}
        assert "restarting it from" in emulator.stderr and "is back on port" in emulator.stderr
        with capsys.disabled():
            print(f"\nembedded Redis killed under load: back {back - killed_at:.2f} s after the kill; "
                  f"{before} jobs accepted before, {len(accepted)} in all, {len(missing)} missing; "
                  f"answers {dict(sorted(statuses.items()))}")
    finally:
        stop.set()
        emulator.stop()
