"""/dashboard in a real browser against a real emulator process (IAM, the template's default:
the page signs every API call itself with the local credentials typed in). The render worker
runs when the test fires its schedule, so a job waits until then: a real render (a red step,
then a blue one) is listed, opened and played with its captions, and the frame at 3 s is blue;
a job whose asset is missing fails for real, is retried from the page once the asset is there
and completes with its failure in its history; a waiting job is cancelled from the page. The
counts the page shows are the API's."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from local.redis_server import RedisServer
from tests.emulator.conftest import Emulator, child_env
from tests.sigv4 import SigV4

pytestmark = [pytest.mark.process, pytest.mark.slow]

KEY, SECRET, REGION = "AKIDDASHBOARD", "dashboard-secret-example", "eu-west-1"
RED, BLUE = (220, 30, 30), (30, 40, 220)


def png(colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(out, format="PNG")
    return out.getvalue()


def data_uri(colour: tuple[int, int, int]) -> str:
    return "data:image/png;base64," + base64.b64encode(png(colour)).decode()


def job(job_id: str, **request: Any) -> dict[str, Any]:
    return {"jobId": job_id, "projectId": "proj-dashboard", "requestId": f"req-{job_id}", "dryRun": False,
            "attempts": 1, "previewRequest": {"title": f"Dashboard {job_id}", "audio": {},
                                              "options": {"resolution": "160x120", "format": "webm", "fps": 10},
                                              **request}}


RENDER = job("dash-render", steps=[
    {"title": "Red", "text": "The red step", "durationSec": 2, "asset": "red"},
    {"title": "Blue", "text": "The blue step", "durationSec": 2, "asset": "blue"},
], assets=[{"id": "red", "type": "image", "uri": data_uri(RED)},
           {"id": "blue", "type": "image", "uri": data_uri(BLUE)}])
BROKEN = job("dash-broken", steps=[{"title": "Missing", "text": "Its image is not there yet", "durationSec": 1,
                                    "asset": "later"}],
             assets=[{"id": "later", "type": "image", "uri": "images/dashboard-later.png"}])
WAITING = {"jobId": "dash-waiting", "projectId": "proj-dashboard", "requestId": "req-wait", "dryRun": True,
           "previewRequest": {"steps": [], "assets": [], "audio": {}}}


@pytest.fixture
def emulator(tmp_path: Path, redis_server: RedisServer) -> Any:
    import redis as redis_py

    redis_py.Redis.from_url(redis_server.url).flushall()
    # No worker thread and no kick: jobs wait until the test fires the worker's schedule.
    env = child_env(AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET, AWS_REGION=REGION,
                    REDIS_URL=redis_server.url, RENDER_WORKER_FUNCTION="")
    env.pop("AWS_DEFAULT_REGION", None)
    process = Emulator(tmp_path, ["--data-dir", str(tmp_path / "data"), "--no-worker", "--no-schedules"], env)
    process.start()
    yield process
    process.stop()


def api(emulator: Emulator) -> httpx.Client:
    return httpx.Client(base_url=emulator.url, timeout=60, auth=SigV4(KEY, SECRET, region=REGION))


def run_worker(client: httpx.Client) -> dict[str, Any]:
    answer = client.post("/_emulator/schedules/RenderWorkerFunction/fire")
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()["result"]
    return result


def count(page: Any, state: str) -> str:
    return str(page.locator(f'[data-count="{state}"]').inner_text())


def wait_counts(page: Any, **expected: int) -> None:
    for state, value in expected.items():
        page.wait_for_function(f"document.querySelector('[data-count=\"{state}\"]').textContent === '{value}'")


FRAME_AT = """async (seconds) => {
  const video = document.getElementById("player");
  video.muted = true;
  if (video.readyState < 2) await new Promise((done) => video.addEventListener("loadeddata", done, {once: true}));
  await video.play();
  video.pause();
  await new Promise((done) => { video.addEventListener("seeked", done, {once: true}); video.currentTime = seconds; });
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  const context = canvas.getContext("2d");
  context.drawImage(video, 0, 0);
  const [r, g, b] = context.getImageData(canvas.width / 2, Math.floor(canvas.height / 5), 1, 1).data;
  return {r, g, b, width: canvas.width, height: canvas.height, time: video.currentTime};
}"""

CUES = """async () => {
  const video = document.getElementById("player");
  const track = video.querySelector("track");
  video.textTracks[0].mode = "showing";
  if (track.readyState !== 2) await new Promise((done) => track.addEventListener("load", done, {once: true}));
  return Array.from(video.textTracks[0].cues, (cue) => [cue.startTime, cue.endTime, cue.text]);
}"""


def close_to(pixel: dict[str, int], colour: tuple[int, int, int]) -> bool:
    return all(abs(pixel[c] - v) <= 40 for c, v in zip("rgb", colour, strict=True))


def test_the_dashboard_lists_plays_retries_and_cancels(emulator: Emulator, page: Any, tmp_path: Path) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    with api(emulator) as client:
        # Given a finished render and a dead letter (its asset missing), then a job left waiting
        for document in (RENDER, BROKEN):
            assert client.post("/api/preview/job", json=document).status_code == 202
        assert run_worker(client)["processed"] == 2
        assert client.post("/api/preview/job", json=WAITING).status_code == 202

        # The page carries no data: without credentials its calls are refused
        page.goto(f"{emulator.url}/dashboard")
        page.wait_for_function("document.getElementById('notice').textContent.includes('403')")
        assert count(page, "completed") == "–"
        # With the emulator's local credentials it signs its calls and shows every count
        page.fill("#credentials", f"{KEY}:{SECRET}")
        page.click("#authorize")
        wait_counts(page, waiting=1, completed=1, failed=1, total=3)
        page.locator('tr[data-job="dash-waiting"]').wait_for()

        # The finished preview plays in the page, with its captions: red first, blue at 3 s
        page.click('button[data-state="completed"]')
        page.click('tr[data-job="dash-render"] a.job')
        page.locator("#player").wait_for()
        assert page.locator("#detail-state").inner_text() == "completed"
        cues = page.evaluate(CUES)
        assert [text for _, _, text in cues] == ["Red\nThe red step", "Blue\nThe blue step"], cues
        red, blue = page.evaluate(FRAME_AT, 1.0), page.evaluate(FRAME_AT, 3.0)
        print(f"\nframe at 1 s: {red}, at 3 s: {blue}")
        assert (blue["width"], blue["height"]) == (160, 120)
        assert close_to(red, RED) and close_to(blue, BLUE), (red, blue)

        # The dead letter: its reason, a retry button, no cancel button
        page.click('button[data-state="failed"]')
        page.click('tr[data-job="dash-broken"] a.job')
        page.wait_for_function("document.getElementById('detail-id').textContent === 'dash-broken'")
        assert "dashboard-later.png" in page.locator("#detail-reason").inner_text()
        assert page.locator("#retry").is_visible() and not page.locator("#cancel").is_visible()

        # The waiting job is cancelled from the page: failed, "cancelled by request"
        page.click('button[data-state="waiting"]')
        page.click('tr[data-job="dash-waiting"] a.job')
        page.wait_for_function("document.getElementById('detail-id').textContent === 'dash-waiting'")
        page.click("#cancel")
        page.wait_for_function("document.getElementById('detail-state').textContent === 'failed'")
        assert page.locator("#detail-reason").inner_text() == "cancelled by request"
        wait_counts(page, waiting=0, failed=2, completed=1)

        # The cause fixed (the asset where the job says), the dead letter is retried from the page
        asset = tmp_path / "data" / "assets" / "images" / "dashboard-later.png"
        asset.parent.mkdir(parents=True)
        asset.write_bytes(png(RED))
        page.click('button[data-state="failed"]')
        page.click('tr[data-job="dash-broken"] a.job')
        page.wait_for_function("document.getElementById('detail-id').textContent === 'dash-broken'")
        page.click("#retry")
        page.wait_for_function("document.getElementById('detail-state').textContent === 'waiting'")
        assert "queued again" in page.locator("#notice").inner_text()
        history = page.locator("#detail-history li")
        assert history.count() == 1
        assert history.first.inner_text().startswith("failed after 1 attempt(s) at ")
        assert "dashboard-later.png" in history.first.inner_text()
        wait_counts(page, waiting=1, failed=1)
        # It runs again and completes; the page follows by itself, its history kept
        assert run_worker(client)["processed"] == 1
        page.wait_for_function("document.getElementById('detail-state').textContent === 'completed'",
                               timeout=10_000)
        page.locator("#player").wait_for()
        assert page.locator("#detail-history li").count() == 1
        wait_counts(page, waiting=0, completed=2, failed=1, total=3)

        # The counts on the page are the API's, and the job's own status says the same
        counts = client.get("/api/preview/queue/metrics").json()
        shown = {state: int(count(page, state)) for state in ("waiting", "active", "delayed", "completed", "failed",
                                                              "total")}
        assert shown == {k: counts[k] for k in shown} == {"waiting": 0, "active": 0, "delayed": 0, "completed": 2,
                                                          "failed": 1, "total": 3}
        status = client.get("/api/preview/job/dash-broken/status").json()
        assert (status["state"], status["attemptsMade"], len(status["history"])) == ("completed", 1, 1)
        failed = client.get("/api/preview/jobs", params={"state": "failed"}).json()["jobs"]
        assert [(j["jobId"], j["failedReason"]) for j in failed] == [("dash-waiting", "cancelled by request")]
    assert errors == []
    print(json.dumps(shown))
