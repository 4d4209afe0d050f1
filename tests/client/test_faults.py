"""The client when the service is not fine, each fault provoked for real on an emulator of the
test's own: a full queue (429 with Retry-After, PREVIEW_QUEUE_MAX=1 and no worker), Redis gone
under the emulator (503 until it is back), Redis stalled so that a 503 still admitted the job
(the retry with the same body is answered 200), nothing listening, and `verify` against an
emulator whose worker is not running."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from local.redis_server import RedisServer, free_port
from tests.client.conftest import (
    API_KEY,
    Running,
    assert_exit,
    client_env,
    job_file,
    keyed_args,
    preview,
    start_emulator,
)

pytestmark = [pytest.mark.process, pytest.mark.slow]

# No worker thread, no schedules, no kick after admission: jobs stay waiting until a test says.
IDLE = ["--api-key", API_KEY, "--no-worker", "--no-schedules"]
NO_KICK = {"RENDER_WORKER_FUNCTION": ""}


def served(stderr: str, status: int) -> int:
    """Enqueue requests the emulator answered with `status` (its access log)."""
    return stderr.count(f'"POST /api/preview/job HTTP/1.1" {status}')


def test_a_full_queue_is_waited_out_as_retry_after_says(tmp_path: Path) -> None:
    emulator = start_emulator(tmp_path, IDLE, PREVIEW_QUEUE_MAX="1", PREVIEW_BACKOFF_MS="2000", **NO_KICK)
    try:
        env = client_env(tmp_path)
        assert_exit(preview(keyed_args(emulator, "enqueue", str(job_file(tmp_path, "minimal", jobId="full-1"))),
                            env), 0)
        second = str(job_file(tmp_path, "minimal", jobId="full-2"))
        # Given a full queue that asks for 2 s: a budget of 1 s is not enough, said at once
        gave_up = preview(keyed_args(emulator, "--queue-full-wait", "1", "enqueue", second), env)
        assert_exit(gave_up, 4)
        assert "POST /api/preview/job: 429 " in gave_up.stderr and "it asks to retry after 2 s" in gave_up.stderr
        # When the budget allows, the client waits as told and gets in once a worker made room
        running = Running(keyed_args(emulator, "enqueue", second), env)
        told = running.wait_for("429")
        assert "retrying in 2.0 s" in running.stderr
        fired = httpx.post(f"{emulator.url}/_emulator/schedules/RenderWorkerFunction/fire",
                           headers={"x-api-key": API_KEY}, timeout=30)
        assert fired.status_code < 300, fired.text
        code, out, ended = running.finish()
        assert code == 0, running.stderr
        assert out.startswith("admitted full-2 (202, waiting)")
        waited = ended - told
        print(f"\n429 answers: {served(emulator.stderr, 429)}; admitted {waited:.2f} s after the first 429 "
              "(Retry-After: 2)")
        assert waited >= 1.8  # it did wait what Retry-After said before trying again
        assert served(emulator.stderr, 429) >= 2 and served(emulator.stderr, 202) == 2
    finally:
        emulator.stop()


def test_a_503_is_retried_with_the_same_body_until_redis_is_back(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis").start()
    emulator = start_emulator(tmp_path, IDLE, REDIS_URL=redis.url, **NO_KICK)
    try:
        env = client_env(tmp_path)
        redis.stop()  # Given Redis gone from under the emulator
        running = Running(keyed_args(emulator, "enqueue", str(job_file(tmp_path, "minimal", jobId="redis-back"))),
                          env)
        first = running.wait_for("503")
        redis = RedisServer(tmp_path / "redis", port=redis.port).start()  # When it comes back
        back = time.monotonic()
        code, out, ended = running.finish()
        # Then the same request, retried, is admitted
        assert code == 0, running.stderr
        assert out.startswith("admitted redis-back (202, waiting)")
        unavailable = served(emulator.stderr, 503)
        print(f"\n503 answers: {unavailable}; admitted {ended - first:.2f} s after the first 503, "
              f"{ended - back:.2f} s after Redis was back")
        assert unavailable >= 1 and served(emulator.stderr, 202) == 1
        status = preview(keyed_args(emulator, "status", "redis-back"), env)
        assert_exit(status, 0)
        assert status.stdout.startswith("redis-back  waiting  0%")
    finally:
        emulator.stop()
        redis.stop()


def test_a_503_that_admitted_the_job_is_answered_200_on_the_retry(tmp_path: Path) -> None:
    """The README's warning: when Redis stalls after the admission was sent, the job may be
    stored once Redis resumes although the client was answered 503. The client's retry with the
    same body then learns it was admitted (200), and says so; nothing is admitted twice."""
    redis = RedisServer(tmp_path / "redis").start()
    emulator = start_emulator(tmp_path, IDLE, REDIS_URL=redis.url, **NO_KICK)
    assert redis.process is not None
    try:
        env = client_env(tmp_path)
        # warm the emulator's connections and scripts, so the stalled command is the admission
        assert_exit(preview(keyed_args(emulator, "enqueue", str(job_file(tmp_path, "minimal", jobId="warm"))),
                            env), 0)
        os.kill(redis.process.pid, signal.SIGSTOP)
        try:
            running = Running(keyed_args(emulator, "enqueue", str(job_file(tmp_path, "minimal", jobId="stalled"))),
                              env)
            running.wait_for("503")
        finally:
            os.kill(redis.process.pid, signal.SIGCONT)
        code, out, _ = running.finish()
        assert code == 0, running.stderr
        print(f"\nafter a 503: {out.strip()}")
        assert out.startswith(("already admitted stalled (200, an identical replay)", "admitted stalled (202"))
        metrics = preview(keyed_args(emulator, "--json", "status", "stalled"), env)
        assert_exit(metrics, 0)
        counts = httpx.get(f"{emulator.url}/api/preview/queue/metrics", headers={"x-api-key": API_KEY}).json()
        assert counts["waiting"] == 2  # warm and stalled, once each
    finally:
        emulator.stop()
        redis.stop()


def test_nothing_listening_is_a_clear_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = preview(["--url", url, "--api-key", "k", "--retries", "2", "status", "x"], client_env(tmp_path))
    assert_exit(result, 4)
    assert "retrying in" in result.stderr
    assert f"preview: error: cannot reach the service at {url} (connection refused; 2 tries)" in result.stderr
    no_url = preview(["status", "x"], client_env(tmp_path))
    assert_exit(no_url, 2)
    assert "no service URL: pass --url or set PREVIEW_URL" in no_url.stderr


def test_verify_names_the_failing_step_when_the_worker_is_stopped(tmp_path: Path) -> None:
    # The worker thread is off; the enqueue kick still runs the worker function (as in Lambda)
    emulator = start_emulator(tmp_path, IDLE)
    try:
        result = preview(keyed_args(emulator, "verify", "--timeout", "30"), client_env(tmp_path))
    finally:
        emulator.stop()
    assert_exit(result, 1)
    lines = result.stdout.splitlines()
    print("\n" + result.stdout)
    assert lines[1].startswith("FAIL  health   unhealthy: no worker heartbeat in the last 900 s")
    assert lines[-1] == "verify: FAILED at health"


def test_verify_names_the_failing_step_when_no_job_is_picked_up(tmp_path: Path) -> None:
    emulator = start_emulator(tmp_path, IDLE, **NO_KICK)
    try:
        started = time.monotonic()
        result = preview(keyed_args(emulator, "verify", "--timeout", "2"), client_env(tmp_path))
        took = time.monotonic() - started
    finally:
        emulator.stop()
    assert_exit(result, 1)
    print(f"\n{result.stdout}(verify took {took:.1f} s)")
    lines = result.stdout.splitlines()
    assert lines[1].startswith("FAIL  health ")
    assert lines[2].startswith("FAIL  dry-run  job verify-")
    assert "is still waiting (0%) after 2 s (is a worker running?)" in lines[2]
    assert lines[3].startswith("skip  render   skipped: the dry run did not complete")
    assert lines[4].startswith("ok    invalid  refused with 400")
    assert lines[-1] == "verify: FAILED at health, dry-run (render skipped)"
