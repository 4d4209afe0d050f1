"""plan_preview: defaults, timeline on the frame grid. (What makes a request valid is the
contract's: tests/test_contract.py.)"""

from __future__ import annotations

import json
from typing import Any

from render_testkit import make_job, png_uri, request, wav_uri

from shared.render import RenderPlan
from shared.render import plan_preview as plan_request
from shared.render.plan import frame_at
from shared.settings import Settings


def plan_preview(job: dict[str, Any], settings: Settings) -> RenderPlan:
    return plan_request(request(job, settings))


def minimal_job(**request: object) -> dict[str, Any]:
    job: dict[str, Any] = {"jobId": "preview-job-0001", "projectId": "proj-mobius-123", "requestId": "req-0001",
           "previewRequest": {"steps": [], "assets": [], "audio": {}}, "dryRun": True}
    job["previewRequest"].update(request)
    return job


def test_defaults_applied(settings: Settings) -> None:
    job = minimal_job(steps=[{"title": "One"}, {"text": "Two", "durationSec": 1.5}])
    plan = plan_preview(job, settings)
    assert (plan.width, plan.height, plan.fps, plan.format) == (1280, 720, 30, "mp4")
    assert plan.include_captions is True
    assert plan.music_volume == 0.3
    assert [(s.start, s.duration) for s in plan.steps] == [(0.0, 3.0), (3.0, 1.5)]
    assert plan.duration == 4.5
    assert plan.total_frames == 135
    assert not plan.has_audio


def test_timeline_snaps_to_frame_grid(settings: Settings) -> None:
    job = make_job([{"durationSec": 0.5}, {"durationSec": 1.23}, {"durationSec": 2}], options={"fps": 25})
    plan = plan_preview(job, settings)
    assert [s.start_ms for s in plan.steps] == [0, 500, 1730]
    # 0.5 s at 25 fps = 12.5 frames: half rounds up
    assert [(s.start_frame, s.end_frame) for s in plan.steps] == [(0, 13), (13, 43), (43, 93)]
    assert plan.total_frames == 93
    assert frame_at(1730, 25) == 43


def test_sample_documents_from_spec_plan(settings: Settings) -> None:
    plan = plan_preview(minimal_job(), settings)
    assert plan.title_card and len(plan.steps) == 1 and plan.duration == 3.0
    job = minimal_job(title="How to build a Mobius demo", description="Auto-generated preview",
                      options={"resolution": "1280x720", "format": "webm", "includeCaptions": False},
                      metadata={"author": "automation"})
    plan = plan_preview(job, settings)
    assert plan.format == "webm" and plan.include_captions is False
    assert plan.steps[0].title == "How to build a Mobius demo"
    assert plan.steps[0].text == "Auto-generated preview"


def test_summary_is_json_and_deterministic(settings: Settings) -> None:
    job = make_job([{"title": "A", "asset": "img"}], [{"id": "img", "type": "image", "uri": png_uri((1, 2, 3))},
                                                     {"id": "spare", "type": "audio", "uri": wav_uri(0.1)}])
    first = json.dumps(plan_preview(job, settings).to_summary(), sort_keys=True)
    second = json.dumps(plan_preview(job, settings).to_summary(), sort_keys=True)
    assert first == second
    summary = json.loads(first)
    assert summary["steps"][0] == {"index": 0, "start": 0.0, "duration": 3.0, "title": "A", "text": None,
                                   "asset": "img"}
    assert summary["unusedAssets"] == ["spare"]
    assert summary["hasAudio"] is False and summary["audioCodec"] is None
    assert "no audio stream" in summary["audio"]["note"]


def test_audio_plan(settings: Settings) -> None:
    assets = [{"id": "n", "type": "audio", "uri": wav_uri(0.1)}, {"id": "m", "type": "audio", "uri": wav_uri(0.1)}]
    job = make_job([{"text": "x"}], assets, {"narration": "n", "music": "m", "musicVolume": 0.5},
                   {"format": "webm"})
    plan = plan_preview(job, settings)
    assert plan.has_audio and plan.to_summary()["audioCodec"] == "opus"
    gif = plan_preview(make_job([{"text": "x"}], assets, {"narration": "n"}, {"format": "gif"}), settings)
    assert not gif.has_audio and "cannot carry audio" in gif.to_summary()["audio"]["note"]


def test_the_longest_preview_plans(settings: Settings) -> None:
    plan = plan_preview(make_job([{"durationSec": 30}] * 20), settings)
    assert plan.duration == 600
