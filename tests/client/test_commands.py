"""Every command of `preview` against a real emulator process: one in API key mode, one checking
SigV4 signatures made with the caller's credentials (environment or profile). Each job renders
for real; downloads are checked against the manifest, and a file changed on the server after it
was published is caught."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from tests.client.conftest import (
    API_KEY,
    KEY,
    REGION,
    SECRET,
    assert_exit,
    client_env,
    data_dir,
    job_file,
    keyed_args,
    preview,
    signing_env,
    start_emulator,
)
from tests.conftest import ROOT
from tests.emulator.conftest import Emulator

pytestmark = [pytest.mark.process, pytest.mark.slow]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- API key mode


def test_enqueue_wait_download_renders_and_checks_every_file(keyed: Emulator, tmp_path: Path) -> None:
    job = job_file(tmp_path, "render", jobId="client-render-1")
    out = tmp_path / "out"
    result = preview(keyed_args(keyed, "enqueue", str(job), "--wait", "--download", str(out)), client_env(tmp_path))
    assert_exit(result, 0)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("admitted client-render-1 (202, waiting): http://127.0.0.1:")
    assert any(line.startswith("completed client-render-1 in ") for line in lines)
    # not a terminal: plain progress lines on stderr, the last one the outcome
    progress = [line for line in result.stderr.splitlines() if line.startswith("client-render-1 ")]
    assert progress and progress[-1].startswith("client-render-1 completed 100%")
    manifest = json.loads((out / "container.json").read_text())
    names = sorted(entry["name"] for entry in manifest["files"])
    assert names == ["captions.vtt", "poster.png", "preview.json", "preview.mp4"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, "container.json"])
    for entry in manifest["files"]:
        assert sha256(out / entry["name"]) == entry["sha256"]
        assert f"downloaded {out / entry['name']} ({entry['bytes']} bytes, sha256 {entry['sha256'][:12]}" \
            in result.stdout
    # The same file again is an identical replay: 200, the job as it is.
    again = preview(keyed_args(keyed, "enqueue", str(job)), client_env(tmp_path))
    assert_exit(again, 0)
    assert again.stdout == "already admitted client-render-1 (200, an identical replay): it is completed\n"


def test_status_and_artifact_in_lines_and_json(keyed: Emulator, tmp_path: Path) -> None:
    job = job_file(tmp_path, "minimal", jobId="client-dry-1")
    env = client_env(tmp_path, PREVIEW_URL=keyed.url, PREVIEW_API_KEY=API_KEY)  # from the environment this time
    assert_exit(preview(["enqueue", str(job), "--wait", "--json"], env), 0)
    status = preview(["status", "client-dry-1"], env)
    assert_exit(status, 0)
    assert status.stdout.startswith("client-dry-1  completed  100%  attempt 1/")
    document = json.loads(preview(["status", "client-dry-1", "--json"], env).stdout)
    assert document["state"] == "completed" and document["jobId"] == "client-dry-1"
    artifact = preview(["artifact", "client-dry-1", "--json", "--download", str(tmp_path / "files")], env)
    assert_exit(artifact, 0)
    answer = json.loads(artifact.stdout)
    assert [f["name"] for f in answer["artifact"]["files"]] == ["preview.json"]
    assert answer["files"][0]["sha256"] == answer["artifact"]["files"][0]["sha256"] == \
        sha256(tmp_path / "files" / "preview.json")


def test_a_file_changed_after_publication_is_caught(keyed: Emulator, tmp_path: Path) -> None:
    job = job_file(tmp_path, "minimal", jobId="client-tampered")
    env = client_env(tmp_path)
    assert_exit(preview(keyed_args(keyed, "enqueue", str(job), "--wait"), env), 0)
    published = data_dir(keyed) / "previews" / "proj-mobius-123" / "client-tampered" / "preview.json"
    original = published.read_bytes()
    changed = original[:20] + (b"X" if original[20:21] != b"X" else b"Y") + original[21:]
    published.write_bytes(changed)  # one byte, the size unchanged: only the digest tells
    out = tmp_path / "out"
    result = preview(keyed_args(keyed, "artifact", "client-tampered", "--download", str(out)), env)
    assert_exit(result, 1)
    assert "downloaded files do not match the manifest: preview.json: got" in result.stderr
    assert not (out / "preview.json").exists() and not list(out.glob(".*part"))
    published.write_bytes(original)
    assert_exit(preview(keyed_args(keyed, "artifact", "client-tampered", "--download", str(out)), env), 0)
    assert (out / "preview.json").read_bytes() == original


def test_a_failed_render_ends_the_wait_with_its_reason(keyed: Emulator, tmp_path: Path) -> None:
    document = json.loads(job_file(tmp_path, "render").read_text())
    document.update(jobId="client-missing-asset", attempts=1)
    document["previewRequest"]["assets"][0]["uri"] = "images/not-there.png"  # admitted, not found when rendering
    path = tmp_path / "missing.json"
    path.write_text(json.dumps(document))
    result = preview(keyed_args(keyed, "enqueue", str(path), "--wait"), client_env(tmp_path))
    assert_exit(result, 1)
    assert "failed client-missing-asset after 1 attempt(s): " in result.stdout
    assert "not-there.png" in result.stdout


def test_unknown_jobs_and_refused_payloads(keyed: Emulator, tmp_path: Path) -> None:
    env = client_env(tmp_path)
    unknown = preview(keyed_args(keyed, "status", "no-such-job"), env)
    assert_exit(unknown, 1)
    assert "GET /api/preview/job/no-such-job/status: 404 no job 'no-such-job'" in unknown.stderr
    refused = preview(keyed_args(keyed, "enqueue", str(job_file(tmp_path, "invalid-payload"))), env)
    assert_exit(refused, 2)
    assert "  /jobId: 42 is not of type 'string'" in refused.stderr
    unreadable = preview(keyed_args(keyed, "enqueue", str(tmp_path / "nothing.json")), env)
    assert_exit(unreadable, 3)
    assert "cannot read" in unreadable.stderr


def test_a_dead_letter_is_listed_fixed_and_retried(keyed: Emulator, tmp_path: Path) -> None:
    """The remedy for a dead letter, as docs/dead-letters.md gives it: find it with `jobs --state
    failed`, read its reason, fix the cause, `retry` it; it runs again with fresh attempts and its
    earlier failure in its history, and the counts move from failed to completed."""
    env = client_env(tmp_path)
    document = json.loads(job_file(tmp_path, "render").read_text())
    document.update(jobId="client-dead-letter", attempts=1)
    inline = document["previewRequest"]["assets"][0]["uri"]
    document["previewRequest"]["assets"][0]["uri"] = "images/operator-fix.png"  # not there yet
    path = tmp_path / "dead-letter.json"
    path.write_text(json.dumps(document))
    failed = preview(keyed_args(keyed, "enqueue", str(path), "--wait"), env)
    assert_exit(failed, 1)
    assert "failed client-dead-letter after 1 attempt(s): " in failed.stdout

    # Given the dead letter, the listing shows it with its reason
    listed = preview(keyed_args(keyed, "jobs", "--state", "failed"), env)
    assert_exit(listed, 0)
    line = next((line for line in listed.stdout.splitlines() if line.startswith("client-dead-letter  ")), listed.stdout)
    assert line.startswith("client-dead-letter  failed  ") and "attempt 1/1  " in line, line
    assert "operator-fix.png" in line, line
    before = json.loads(preview(keyed_args(keyed, "jobs", "--state", "failed", "--json"), env).stdout)["counts"]
    # Re-posting it is a replay of a failed job: its jobId stays taken
    replay = preview(keyed_args(keyed, "enqueue", str(path)), env)
    assert replay.stdout == "already admitted client-dead-letter (200, an identical replay): it is failed\n"

    # When the cause is fixed (the asset put where the job says) and the job retried
    asset = data_dir(keyed) / "assets" / "images" / "operator-fix.png"
    asset.parent.mkdir(parents=True, exist_ok=True)
    asset.write_bytes(base64.b64decode(inline.split(",", 1)[1]))
    retried = preview(keyed_args(keyed, "retry", "client-dead-letter"), env)
    assert_exit(retried, 0)
    assert retried.stdout == ("retried client-dead-letter: waiting with fresh attempts (1 earlier failure(s) in "
                              "its history)\n")
    # Then it runs again and completes, its earlier failure in its history
    followed = preview(keyed_args(keyed, "enqueue", str(path), "--wait"), env)
    assert_exit(followed, 0)
    assert any(line.startswith("completed client-dead-letter in ") for line in followed.stdout.splitlines())
    status = preview(keyed_args(keyed, "status", "client-dead-letter"), env)
    assert status.stdout.startswith("client-dead-letter  completed  100%  attempt 1/1  ")
    assert "  earlier: failed after 1 attempt(s) at " in status.stdout and "operator-fix.png" in status.stdout
    after = json.loads(preview(keyed_args(keyed, "jobs", "--state", "completed", "--json"), env).stdout)
    assert "client-dead-letter" in [job["jobId"] for job in after["jobs"]]
    assert (after["counts"]["failed"], after["counts"]["completed"]) == (before["failed"] - 1, before["completed"] + 1)
    # A job that is not failed is not retried
    again = preview(keyed_args(keyed, "retry", "client-dead-letter"), env)
    assert_exit(again, 1)
    assert "409 job 'client-dead-letter' is completed: only a failed job can be retried" in again.stderr


def test_waiting_jobs_page_by_page_and_one_cancelled(tmp_path: Path) -> None:
    """Against an emulator without a worker: the waiting jobs in pages with a cursor, one of them
    cancelled (a failed job with its reason, the counts moved), then retried after all."""
    # no worker thread, and no kick (the render worker function would drain the queue)
    emulator = start_emulator(tmp_path, ["--api-key", API_KEY, "--no-worker", "--no-schedules"],
                              RENDER_WORKER_FUNCTION="")
    env = client_env(tmp_path)
    try:
        for n in range(3):
            assert_exit(preview(keyed_args(emulator, "enqueue", str(job_file(tmp_path, "minimal",
                                                                             jobId=f"client-wait-{n}"))), env), 0)
        first = preview(keyed_args(emulator, "jobs", "--state", "waiting", "--limit", "2"), env)
        assert_exit(first, 0)
        lines = first.stdout.splitlines()
        assert [line.split()[0] for line in lines[:2]] == ["client-wait-0", "client-wait-1"]
        assert lines[2].startswith("more: --cursor ")
        rest = preview(keyed_args(emulator, "jobs", "--state", "waiting", "--cursor", lines[2].split()[-1]), env)
        assert [line.split()[0] for line in rest.stdout.splitlines()] == ["client-wait-2"]

        cancelled = preview(keyed_args(emulator, "cancel", "client-wait-1"), env)
        assert_exit(cancelled, 0)
        assert cancelled.stdout == "cancelled client-wait-1: failed (cancelled by request)\n"
        twice = preview(keyed_args(emulator, "cancel", "client-wait-1"), env)
        assert_exit(twice, 1)
        assert "409 job 'client-wait-1' is failed: only a waiting or delayed job can be cancelled" in twice.stderr
        page = json.loads(preview(keyed_args(emulator, "jobs", "--state", "failed", "--json"), env).stdout)
        assert [(j["jobId"], j["failedReason"]) for j in page["jobs"]] == [("client-wait-1", "cancelled by request")]
        assert (page["counts"]["waiting"], page["counts"]["failed"], page["counts"]["total"]) == (2, 1, 3)
        unknown = preview(keyed_args(emulator, "cancel", "no-such-job"), env)
        assert_exit(unknown, 1)
        assert "404 no job 'no-such-job'" in unknown.stderr
        # A cancel is undone by a retry: the job waits again in its place
        assert_exit(preview(keyed_args(emulator, "retry", "client-wait-1"), env), 0)
        page = json.loads(preview(keyed_args(emulator, "jobs", "--json"), env).stdout)
        assert [j["jobId"] for j in page["jobs"]] == ["client-wait-0", "client-wait-1", "client-wait-2"]
        assert (page["counts"]["waiting"], page["counts"]["failed"]) == (3, 0)
    finally:
        emulator.stop()


def test_a_missing_or_wrong_key_is_401(keyed: Emulator, tmp_path: Path) -> None:
    env = signing_env(tmp_path)
    wrong = preview(["--url", keyed.url, "--api-key", "not-the-key", "status", "x"], env)
    assert_exit(wrong, 5)
    assert "401 Unauthorized: the API key was refused" in wrong.stderr
    none = preview(["status", "x", "--url", keyed.url], env)  # signed instead: this emulator wants the key
    assert_exit(none, 5)
    assert "the service wants an API key: pass --api-key or set PREVIEW_API_KEY" in none.stderr


def test_verify_passes_against_an_emulator_with_a_worker(keyed: Emulator, tmp_path: Path) -> None:
    result = preview(keyed_args(keyed, "verify", "--timeout", "60"), client_env(tmp_path))
    assert_exit(result, 0)
    lines = result.stdout.splitlines()
    assert lines[0] == f"verify {keyed.url} (with an API key)"
    assert [line.split()[:2] for line in lines[1:5]] == [["ok", "health"], ["ok", "dry-run"], ["ok", "render"],
                                                         ["ok", "invalid"]]
    assert "rendered preview.mp4 (" in lines[3]
    assert "refused with 400, 3 error(s) at /dryRun, /jobId, /previewRequest/steps" in lines[4]
    assert lines[5] == "verify: all 4 steps passed"
    print("\n" + result.stdout)


# --------------------------------------------------------------------------- SigV4


def test_signed_with_the_callers_environment_credentials(signed: Emulator, tmp_path: Path) -> None:
    env = signing_env(tmp_path)
    job = job_file(tmp_path, "minimal", jobId="client-signed-1")
    result = preview(["--url", signed.url, "enqueue", str(job), "--wait", "--download", str(tmp_path / "o")], env)
    assert_exit(result, 0)
    assert (tmp_path / "o" / "preview.json").is_file()
    assert_exit(preview(["--url", signed.url, "status", "client-signed-1"], env), 0)


def test_verify_passes_signed(signed: Emulator, tmp_path: Path) -> None:
    result = preview(["verify", "--url", signed.url, "--timeout", "60"], signing_env(tmp_path))
    assert_exit(result, 0)
    assert result.stdout.splitlines()[0] == (f"verify {signed.url} (signed (SigV4, execute-api, region {REGION}) "
                                             "with AWS credentials)")
    assert result.stdout.splitlines()[-1] == "verify: all 4 steps passed"


def test_signed_with_a_profile(signed: Emulator, tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.write_text(f"[ci]\naws_access_key_id = {KEY}\naws_secret_access_key = {SECRET}\n")
    config = tmp_path / "config"
    config.write_text(f"[profile ci]\nregion = {REGION}\n")
    env = client_env(tmp_path, AWS_SHARED_CREDENTIALS_FILE=str(credentials), AWS_CONFIG_FILE=str(config))
    assert_exit(preview(["--url", signed.url, "--profile", "ci", "status", "client-signed-1"], env), 0)
    missing = preview(["--url", signed.url, "--profile", "nobody", "status", "client-signed-1"], env)
    assert_exit(missing, 2)
    assert "The config profile (nobody) could not be found (check --profile or AWS_PROFILE)" in missing.stderr
    nothing = preview(["--url", signed.url, "status", "client-signed-1"], client_env(tmp_path))
    assert_exit(nothing, 2)
    assert "no AWS credentials found" in nothing.stderr


def test_a_wrong_secret_or_region_is_403_naming_what_was_sent(signed: Emulator, tmp_path: Path) -> None:
    wrong = preview(["--url", signed.url, "status", "x"], signing_env(tmp_path, AWS_SECRET_ACCESS_KEY="wrong"))
    assert_exit(wrong, 5)
    assert "403 The request signature we calculated does not match" in wrong.stderr
    assert f"region {REGION}) with access key AKID…" in wrong.stderr
    region = preview(["--url", signed.url, "--region", "us-east-2", "status", "x"], signing_env(tmp_path))
    assert_exit(region, 5)
    assert "403 Forbidden (request signed (SigV4, execute-api, region us-east-2)" in region.stderr


def test_on_a_terminal_wait_draws_a_progress_bar(keyed: Emulator, tmp_path: Path) -> None:
    job = job_file(tmp_path, "render", jobId="client-tty-1")
    controller, terminal = pty.openpty()
    try:
        process = subprocess.run([sys.executable, "-m", "preview_client", *keyed_args(keyed, "enqueue", str(job),
                                                                                     "--wait")],
                                 cwd=ROOT, env=client_env(tmp_path), stdout=subprocess.PIPE, stderr=terminal,
                                 text=True, timeout=120)
        os.close(terminal)
        drawn = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(controller)
    assert process.returncode == 0, drawn
    screen = drawn.decode()
    assert "\rclient-tty-1 [" in screen and "] 100% completed" in screen
    assert "client-tty-1 completed 100%" not in screen  # no plain lines on a terminal
    assert process.stdout.splitlines()[-1].startswith("completed client-tty-1 in ")
