"""MP4 and WebM come out at a constant frame rate with a keyframe at every step start, so a
player or ffmpeg seeking by time lands on the picture of that time; GIF holds each picture
with its own delay. preview.json states what the file holds."""

from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image
from render_testkit import COLORS, centre, colour_job, decode, frame_at, request

from shared.render import render_preview
from shared.settings import Settings

TOLERANCE = 14
STEPS = [1.5, 2.0, 2.5]  # red, green, blue
FPS = 24
SIZE = "160x120"


def render(settings: Settings, out: Path, durations: list[float], fmt: str, fps: int = FPS,
           **options: Any) -> dict[str, Any]:
    job = colour_job(durations, fmt, fps=fps, resolution=SIZE, includeCaptions=False, **options)
    render_preview(request(job, settings), out, settings)
    summary: dict[str, Any] = json.loads((out / "preview.json").read_text())
    return summary


def packets(path: Path) -> tuple[Fraction, list[tuple[Fraction, bool]]]:
    """The video stream's average rate, and each packet's time and keyframe flag."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = Fraction(stream.average_rate or 0)
        found = [(Fraction(p.pts) * p.time_base, bool(p.is_keyframe))
                 for p in container.demux(stream) if p.size and p.pts is not None]
    return rate, found


def step_at(seconds: float, durations: list[float]) -> int:
    start = 0.0
    for index, duration in enumerate(durations):
        if seconds < start + duration:
            return index
        start += duration
    return len(durations) - 1


def ffmpeg() -> str:
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def grab(path: Path, seconds: float, out: Path) -> np.ndarray:
    """The frame ffmpeg's own seeking finds at `seconds` (-ss before -i)."""
    subprocess.run([ffmpeg(), "-v", "error", "-y", "-ss", f"{seconds:.4f}", "-i", str(path), "-frames:v", "1",
                    str(out)], check=True, stdin=subprocess.DEVNULL)
    with Image.open(out) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_every_slot_a_frame_and_a_keyframe_at_every_step(settings: Settings, tmp_path: Path, fmt: str) -> None:
    summary = render(settings, tmp_path / "out", STEPS, fmt)
    rate, found = packets(tmp_path / "out" / f"preview.{fmt}")

    assert rate == FPS
    assert len(found) == 144  # 6 s at 24 fps: no slot left out
    tick = Fraction(1, FPS)
    for index, (time, _) in enumerate(found):  # on the grid (WebM stores milliseconds)
        assert abs(time - index * tick) <= Fraction(1, 1000), (index, time)
    assert [float(t) for t, key in found if key] == [0.0, 1.5, 3.5]
    decoded = decode(tmp_path / "out" / f"preview.{fmt}")
    assert abs(decoded.duration - sum(STEPS)) <= 1 / FPS
    assert summary["delivered"] == {"constantFrameRate": True, "frameRate": 24, "frames": 144, "durationSec": 6.0,
                                    "keyframes": 3, "keyframeTimesSec": [0.0, 1.5, 3.5]}


def test_a_long_step_gets_a_keyframe_every_ten_seconds(settings: Settings, tmp_path: Path) -> None:
    summary = render(settings, tmp_path / "out", [12.0, 1.0], "mp4", fps=5)
    _, found = packets(tmp_path / "out" / "preview.mp4")
    assert len(found) == 65
    assert [float(t) for t, key in found if key] == [0.0, 10.0, 12.0] == summary["delivered"]["keyframeTimesSec"]


@pytest.mark.process
@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_ffmpeg_seeking_finds_the_step_on_screen(settings: Settings, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "out"
    render(settings, out, STEPS, fmt)
    video = out / f"preview.{fmt}"
    frame = 1 / FPS
    start = 0.0
    for index, duration in enumerate(STEPS):
        end = start + duration
        # ffmpeg starts at the first frame at or after the time asked: at a step's start, just
        # after it, inside, and in the step's last-but-one frame slot
        for seconds in (start, start + frame / 2, start + duration / 2, end - 1.5 * frame):
            pixel = centre(grab(video, seconds, tmp_path / "grab.png"))
            assert np.abs(pixel - COLORS[index]).max() <= TOLERANCE, (fmt, seconds, pixel)
        start = end
    # the case from the issue: a thumbnail at 0.7 s is red
    assert np.abs(centre(grab(video, 0.7, tmp_path / "thumb.png")) - COLORS[0]).max() <= TOLERANCE


@pytest.mark.process
@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_ffmpeg_trim_keeps_the_first_half_second_of_red(settings: Settings, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "out"
    render(settings, out, STEPS, fmt)
    clip = tmp_path / f"clip.{fmt}"
    subprocess.run([ffmpeg(), "-v", "error", "-y", "-ss", "1", "-i", str(out / f"preview.{fmt}"), "-t", "2",
                    str(clip)], check=True, stdin=subprocess.DEVNULL)
    decoded = decode(clip)
    assert abs(decoded.duration - 2.0) <= 1 / FPS
    colours = [step_at(1 + time, STEPS) for time, _ in decoded.frames]
    assert colours.count(0) == 12 and colours.count(1) == len(colours) - 12  # 0.5 s red, then green
    for (time, picture), expected in zip(decoded.frames, colours, strict=True):
        assert np.abs(centre(picture) - COLORS[expected]).max() <= TOLERANCE, (time, expected)


def test_gif_holds_each_picture_with_its_delay(settings: Settings, tmp_path: Path) -> None:
    summary = render(settings, tmp_path / "out", STEPS, "gif")
    _, found = packets(tmp_path / "out" / "preview.gif")
    assert [float(t) for t, _ in found] == [0.0, 1.5, 3.5]
    assert summary["delivered"] == {"constantFrameRate": False, "frameRate": None, "frames": 3,
                                    "frameDelaysCs": [150, 200, 250], "durationSec": 6.0}
    decoded = decode(tmp_path / "out" / "preview.gif")
    for seconds in (0.0, 0.7, 1.45, 1.55, 3.45, 3.55, 5.9):
        pixel = centre(frame_at(decoded, seconds))
        assert np.abs(pixel - COLORS[step_at(seconds, STEPS)]).max() <= TOLERANCE, (seconds, pixel)


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
@pytest.mark.parametrize("lanes", [1, 3])
def test_steps_shared_by_several_encoders(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          fmt: str, lanes: int) -> None:
    """However many encoders share the steps, the stream is whole, in order, the same every time."""
    import shared.render.pipeline as pipeline

    monkeypatch.setattr(pipeline, "_lanes", lambda _plan: lanes)
    durations = [0.5, 1.0, 0.5, 1.5, 0.5]
    digests = set()
    for attempt in range(2):
        out = tmp_path / f"out-{attempt}"
        summary = render(settings, out, durations, fmt, fps=10, audio_seconds=4.0)
        digests.add(json.dumps(json.loads((out / "container.json").read_text())["files"]))
    assert len(digests) == 1
    assert summary["delivered"]["frames"] == 40 and summary["delivered"]["keyframeTimesSec"] == [0, 0.5, 1.5, 2, 3.5]
    decoded = decode(tmp_path / "out-0" / f"preview.{fmt}")
    assert len(decoded.frames) == 40 and decoded.has_audio
    for index, (time, picture) in enumerate(decoded.frames):
        assert abs(time - index / 10) < 0.002
        assert np.abs(centre(picture) - COLORS[step_at(time + 0.001, durations) % len(COLORS)]).max() <= TOLERANCE
