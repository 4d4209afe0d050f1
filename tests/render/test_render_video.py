"""Real renders, decoded back with PyAV: duration, resolution, pictures, audio, side files."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from render_testkit import (
    COLORS,
    centre,
    colour_job,
    data_uri,
    decode,
    frame_at,
    make_job,
    parse_vtt,
    png_bytes,
    png_uri,
    request,
    wav_uri,
)

from shared.errors import InvalidAsset
from shared.render import RenderResult, render_preview
from shared.settings import Settings

DURATIONS = [1.0, 1.5, 0.7]
FPS = 10
TOLERANCE = 14  # 8-bit levels; lossy 4:2:0 coding of flat colour stays well within this


def render(job: dict, out: Path, settings: Settings) -> tuple[RenderResult, list[int]]:
    seen: list[int] = []
    return render_preview(request(job, settings), out, settings, seen.append), seen


@pytest.mark.parametrize(("fmt", "with_audio"), [("mp4", True), ("webm", True), ("gif", False), ("mp4", False)])
def test_render_formats(settings: Settings, tmp_path: Path, fmt: str, with_audio: bool) -> None:
    job = colour_job(DURATIONS, fmt, audio_seconds=5.0 if with_audio else None, fps=FPS)
    result, progress = render(job, tmp_path / "out", settings)
    total = sum(DURATIONS)

    assert result.files == sorted(["container.json", "captions.vtt", "poster.png", "preview.json", f"preview.{fmt}"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == result.files
    assert progress[0] == 0 and progress[-1] == 100
    assert progress == sorted(progress) and len(set(progress)) >= len(DURATIONS) + 2

    decoded = decode(tmp_path / "out" / f"preview.{fmt}")
    assert (decoded.width, decoded.height) == (320, 240)
    assert abs(decoded.duration - total) <= 1 / FPS + 1e-6, decoded.duration
    last_frame_time = decoded.frames[-1][0]
    assert total - 1 / FPS - 0.75 <= last_frame_time < total  # the last picture starts inside the video

    start = 0.0
    for i, duration in enumerate(DURATIONS):
        for moment in (start + 0.15, start + duration - 0.15):
            pixel = centre(frame_at(decoded, moment))
            assert np.abs(pixel - COLORS[i]).max() <= TOLERANCE, (fmt, i, moment, pixel)
        start += duration

    assert decoded.has_audio is (with_audio and fmt != "gif")
    if decoded.has_audio:
        assert decoded.audio_rate == 48_000
        assert abs(decoded.audio_seconds - total) < 0.05  # 5 s narration trimmed to the video
        assert np.sqrt(np.mean(decoded.audio_samples[4800:9600] ** 2)) > 0.1

    summary = json.loads((tmp_path / "out" / "preview.json").read_text())
    assert summary["durationSec"] == total and summary["resolution"] == "320x240" and summary["fps"] == FPS
    assert summary["format"] == fmt
    assert summary["videoCodec"] == {"mp4": "h264", "webm": "vp9", "gif": "gif"}[fmt]
    assert summary["audioCodec"] == ({"mp4": "aac", "webm": "opus"}[fmt] if decoded.has_audio else None)
    assert summary["hasAudio"] is decoded.has_audio
    assert [(s["start"], s["duration"], s["asset"]) for s in summary["steps"]] == [
        (0.0, 1.0, "img-0"), (1.0, 1.5, "img-1"), (2.5, 0.7, "img-2")]
    assert result.summary == summary and result.duration == total


def test_captions_poster_and_container(settings: Settings, tmp_path: Path) -> None:
    job = colour_job(DURATIONS, "mp4", fps=FPS)
    job["previewRequest"]["steps"].append({"durationSec": 1})  # no words: no cue
    job["previewRequest"]["steps"].append({"text": "a < b & c\n\nnext line", "durationSec": 0.5})
    out = tmp_path / "out"
    render(job, out, settings)

    cues = parse_vtt((out / "captions.vtt").read_text(encoding="utf-8"))
    assert [(c.start, c.end) for c in cues] == [(0.0, 1.0), (1.0, 2.5), (2.5, 3.2), (4.2, 4.7)]
    assert cues[0].text == ["Step 1", "Do thing number 1"]
    assert cues[3].text == ["a &lt; b &amp; c", "next line"]

    from PIL import Image

    with Image.open(out / "poster.png") as poster:
        assert poster.size == (320, 240)
        assert np.abs(np.array(poster.getpixel((160, 120))) - COLORS[0]).max() <= 2

    manifest = json.loads((out / "container.json").read_text())
    assert manifest["jobId"] == "job-1" and manifest["projectId"] == "proj-1"
    names = [f["name"] for f in manifest["files"]]
    assert names == sorted(names) == ["captions.vtt", "poster.png", "preview.json", "preview.mp4"]
    for entry in manifest["files"]:
        data = (out / entry["name"]).read_bytes()
        assert entry["bytes"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    types = {f["name"]: f["contentType"] for f in manifest["files"]}
    assert types == {"captions.vtt": "text/vtt", "poster.png": "image/png", "preview.json": "application/json",
                     "preview.mp4": "video/mp4"}


def test_audio_is_mixed_and_padded(settings: Settings, tmp_path: Path) -> None:
    job = colour_job([1.0, 1.0], "mp4", fps=FPS)
    job["previewRequest"]["assets"] += [
        {"id": "voice", "type": "audio", "uri": wav_uri(0.8, rate=16_000)},
        {"id": "bed", "type": "audio", "uri": wav_uri(0.4, rate=44_100, channels=2, freq=220)},
    ]
    job["previewRequest"]["audio"] = {"narration": "voice", "music": "bed", "musicVolume": 0.5}
    render(job, tmp_path / "out", settings)
    decoded = decode(tmp_path / "out" / "preview.mp4")
    assert abs(decoded.audio_seconds - 2.0) < 0.05
    samples = decoded.audio_samples
    rate = decoded.audio_rate

    def level(a: float, b: float) -> float:
        return float(np.sqrt(np.mean(samples[int(a * rate):int(b * rate)] ** 2)))

    both, narration_only, silence = level(0.1, 0.3), level(0.5, 0.7), level(1.0, 1.9)
    assert both > narration_only > 0.2  # music adds energy while it lasts
    assert silence < 0.01  # padded with silence after the narration ends


def test_dry_run_writes_only_json(settings: Settings, tmp_path: Path) -> None:
    job = colour_job(DURATIONS, "webm", audio_seconds=1.0)
    job["dryRun"] = True
    result, progress = render(job, tmp_path / "out", settings)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["container.json", "preview.json"]
    assert result.files == ["container.json", "preview.json"] and result.dry_run
    summary = json.loads((tmp_path / "out" / "preview.json").read_text())
    assert summary["dryRun"] is True and summary["files"] is None and summary["hasAudio"] is True
    manifest = json.loads((tmp_path / "out" / "container.json").read_text())
    assert [f["name"] for f in manifest["files"]] == ["preview.json"]
    assert progress[0] == 0 and progress[-1] == 100


def test_dry_run_still_checks_assets(settings: Settings, tmp_path: Path) -> None:
    job = colour_job([1.0], "mp4")
    job["dryRun"] = True
    # the header reads (admission's check passes), the picture data does not
    job["previewRequest"]["assets"][0]["uri"] = data_uri(png_bytes(COLORS[0], (64, 64))[:-40], "image/png")
    with pytest.raises(InvalidAsset, match="img-0"):
        render_preview(request(job, settings), tmp_path / "out", settings)
    assert not (tmp_path / "out" / "preview.json").exists()


def test_title_card_without_steps(settings: Settings, tmp_path: Path) -> None:
    job = make_job([], title="How to build a Mobius demo", description="Auto-generated preview",
                   options={"format": "gif"})
    result, _ = render(job, tmp_path / "out", settings)
    decoded = decode(tmp_path / "out" / "preview.gif")
    assert abs(decoded.duration - 3.0) <= 0.1 and result.duration == 3.0
    picture = decoded.frames[0][1]
    background = picture[5, 5].astype(int)
    assert background.max() < 60  # dark card
    assert picture.max() > 200  # with light text on it
    cues = parse_vtt((tmp_path / "out" / "captions.vtt").read_text())
    assert cues[0].text == ["How to build a Mobius demo", "Auto-generated preview"]
    assert json.loads((tmp_path / "out" / "preview.json").read_text())["titleCard"] is True


def test_captions_can_be_left_out(settings: Settings, tmp_path: Path) -> None:
    with_caps = colour_job([1.0], "mp4", fps=FPS)
    without = colour_job([1.0], "mp4", fps=FPS, includeCaptions=False)
    render(with_caps, tmp_path / "a", settings)
    render(without, tmp_path / "b", settings)
    from PIL import Image

    with Image.open(tmp_path / "a" / "poster.png") as a, Image.open(tmp_path / "b" / "poster.png") as b:
        bottom_a = np.array(a)[-20:, 160]
        bottom_b = np.array(b)[-20:, 160]
    assert np.abs(bottom_b.astype(int) - COLORS[0]).max() <= 2  # image all the way down
    assert np.median(bottom_a.astype(int).sum(axis=1)) < sum(COLORS[0]) * 0.6  # darkened band (text aside)


def test_same_job_renders_identically(settings: Settings, tmp_path: Path) -> None:
    for fmt in ("mp4", "webm", "gif"):
        job = colour_job([0.5, 0.6], fmt, audio_seconds=0.5 if fmt != "gif" else None, fps=FPS)
        first, _ = render(job, tmp_path / f"{fmt}-1", settings)
        second, _ = render(job, tmp_path / f"{fmt}-2", settings)
        a = (tmp_path / f"{fmt}-1" / "preview.json").read_bytes()
        assert a == (tmp_path / f"{fmt}-2" / "preview.json").read_bytes()
        files_a = {f["name"]: f for f in first.manifest["files"]}
        files_b = {f["name"]: f for f in second.manifest["files"]}
        assert files_a == files_b, fmt  # video bytes included: the encoders are deterministic here


def test_progress_exception_stops_render(settings: Settings, tmp_path: Path) -> None:
    class LeaseGone(Exception):
        pass

    def progress(pct: int) -> None:
        if pct >= 40:
            raise LeaseGone()

    out = tmp_path / "out"
    with pytest.raises(LeaseGone):
        render_preview(request(colour_job([0.5] * 6, "mp4"), settings), out, settings, progress)
    assert not [p.name for p in out.iterdir() if p.name.startswith(("preview.", ".preview"))]


def test_stale_outputs_are_replaced(settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "preview.webm").write_bytes(b"old attempt")
    (out / ".preview.mp4.part").write_bytes(b"half")
    result, _ = render(colour_job([0.5], "mp4"), out, settings)
    assert sorted(p.name for p in out.iterdir()) == result.files


def test_image_free_steps_and_odd_sizes(settings: Settings, tmp_path: Path) -> None:
    long_text = "word " * 400 + "Supercalifragilisticexpialidocious" * 5
    steps = [{"title": "Only words " * 20, "text": long_text, "durationSec": 0.5},
             {"title": "Portrait", "asset": "tall", "durationSec": 0.5},
             {"text": "Caf\u00e9 \u2014 \u201cquotes\u201d \u65e5\u672c", "asset": "wide", "durationSec": 0.5}]
    assets = [{"id": "tall", "type": "image", "uri": png_uri((0, 255, 0), (30, 400))},
              {"id": "wide", "type": "image", "uri": png_uri((255, 0, 255), (900, 20))}]
    job = make_job(steps, assets, options={"resolution": "480x270", "fps": 4})
    render(job, tmp_path / "out", settings)
    decoded = decode(tmp_path / "out" / "preview.mp4")
    tall = frame_at(decoded, 0.6)
    assert np.abs(tall[135, 240].astype(int) - (0, 255, 0)).max() <= TOLERANCE
    assert tall[135, 20].max() < 20  # black bars left and right
    wide = frame_at(decoded, 1.1)
    assert wide[20, 240].max() < 20  # black bars top and bottom


def test_render_leaves_the_gil_to_other_threads(settings: Settings, tmp_path: Path) -> None:
    """The worker's heartbeat thread must keep running while a render is busy."""
    gaps: list[float] = []
    stop = threading.Event()

    def heartbeat() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            time.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    thread = threading.Thread(target=heartbeat)
    thread.start()
    try:
        render_preview(request(colour_job([1.0, 1.0], "webm", audio_seconds=2.0, resolution="1280x720"), settings),
                       tmp_path / "out", settings)
    finally:
        stop.set()
        thread.join()
    assert max(gaps) < 0.5, max(gaps)


@pytest.mark.parametrize("cache_bytes", [0, 320 * 240 * 3])
def test_images_beyond_the_memory_budget_are_reloaded(settings: Settings, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch, cache_bytes: int) -> None:
    import shared.render.pipeline as pipeline

    monkeypatch.setattr(pipeline, "IMAGE_CACHE_BYTES", cache_bytes)
    job = colour_job([0.5, 0.5, 0.5], "mp4", fps=FPS)
    steps = job["previewRequest"]["steps"]
    steps += [dict(steps[0], durationSec=0.5), dict(steps[1], durationSec=0.5), dict(steps[0], durationSec=0.5)]
    render(job, tmp_path / "out", settings)
    decoded = decode(tmp_path / "out" / "preview.mp4")
    for index, colour in enumerate([0, 1, 2, 0, 1, 0]):
        pixel = centre(frame_at(decoded, index * 0.5 + 0.25))
        assert np.abs(pixel - COLORS[colour]).max() <= TOLERANCE, (index, pixel)


def test_bad_image_found_while_audio_encodes(settings: Settings, tmp_path: Path) -> None:
    job = colour_job([1.0, 1.0, 1.0], "webm", audio_seconds=3.0)
    job["previewRequest"]["assets"][2]["uri"] = "missing.png"
    out = tmp_path / "out"
    with pytest.raises(InvalidAsset, match="'img-2'.*not found"):
        render_preview(request(job, settings), out, settings)
    assert list(out.iterdir()) == []
    assert not [t.name for t in threading.enumerate() if t.name.startswith("render-")]


@pytest.mark.slow
def test_long_preview_with_audio_is_byte_identical(settings: Settings, tmp_path: Path) -> None:
    """Past the muxer's 10 s interleaving window, thread timing could reorder packets; the
    encoder muxes strictly by time so the bytes stay the same."""
    job = colour_job([9.0, 8.0, 7.0], "mp4", audio_seconds=24.0, resolution="160x120", fps=5)
    digests = set()
    for attempt in range(2):
        result, _ = render(job, tmp_path / f"out-{attempt}", settings)
        digests.add(next(f["sha256"] for f in result.manifest["files"] if f["name"] == "preview.mp4"))
    assert len(digests) == 1
    decoded = decode(tmp_path / "out-0" / "preview.mp4")
    assert abs(decoded.audio_seconds - 24.0) < 0.05 and abs(decoded.duration - 24.0) <= 0.2


def test_waiting_for_audio_consults_the_callback(settings: Settings, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """While the muxer waits on a slow audio thread, the progress callback is still called, so
    a lost lease stops the render instead of waiting the audio out."""
    from shared.render import encode
    from shared.render.plan import plan_preview

    class Stop(Exception):
        pass

    def waiting() -> None:
        raise Stop()

    monkeypatch.setattr(encode, "AUDIO_WAIT_SECONDS", 0.01)
    plan = plan_preview(request(colour_job([1.0], "mp4", audio_seconds=1.0), settings))
    encoder = encode.PreviewEncoder(tmp_path / "x.mp4", plan, with_audio=True, waiting=waiting)
    from PIL import Image

    with pytest.raises(Stop):  # no audio thread ever delivers: the wait must not hang
        encoder.encode_video(lambda _index: encoder.picture(Image.new("RGB", (320, 240))))
    encoder.abort()
