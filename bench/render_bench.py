"""Render benchmark: our full pipeline against an ffmpeg binary encoding the same frames.

    python -m bench.render_bench [--runs 3] [--quick] [--ffmpeg PATH] [--keep DIR]

Exit status 0 when the target ratio is met (or cannot be measured without ffmpeg), else 1.

Renders a 1280x720, 10-step, 30 s preview (gradient image per step, captions on) through
`render_preview` for mp4, webm and gif, then has ffmpeg encode the very same composed frames
(PNG files + concat demuxer with per-frame durations):
  * "CFR": the usual way, every one of the 900 frames encoded at 30 fps;
  * "VFR": the same trick we use, each distinct frame encoded once with its duration.
Our time includes everything (asset decode, letterboxing, caption drawing, encode, poster,
side files, hashes); ffmpeg's covers PNG decode and encode only. ffmpeg comes from --ffmpeg,
$IMAGEIO_FFMPEG_EXE, PATH, or the imageio-ffmpeg package (`pip install imageio-ffmpeg`).
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import av  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from bench import harness  # noqa: E402
from shared.contract import JobRequest  # noqa: E402
from shared.render import plan_preview, render_preview  # noqa: E402
from shared.render.frames import compose  # noqa: E402
from shared.settings import Settings  # noqa: E402

WIDTH, HEIGHT, FPS, STEPS, STEP_SECONDS = 1280, 720, 30, 10, 3.0
# Our mp4 render time over ffmpeg's (CFR, same frames, same x264 settings).
MP4_TARGET = harness.Target("<=", 1.2)
SOURCE_SIZE = (1600, 900)  # larger than the frame, as real screenshots are: exercises the resize
PALETTE = [((20, 40, 90), (90, 160, 230)), ((90, 20, 40), (240, 150, 80)), ((20, 80, 40), (150, 230, 120)),
           ((60, 20, 90), (200, 140, 240)), ((30, 30, 30), (220, 220, 220))]

FFMPEG_ARGS = {
    # the same encoder settings as shared/render/encode.py
    "mp4": ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "stillimage", "-crf", "21",
            "-pix_fmt", "yuv420p", "-movflags", "+faststart"],
    "webm": ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-row-mt", "1",
             "-tile-columns", "2", "-lag-in-frames", "0", "-crf", "24", "-b:v", "0", "-pix_fmt", "yuv420p"],
    "gif": ["-c:v", "gif"],
}


@dataclass
class Row:
    fmt: str
    who: str
    seconds: float | None
    size: int | None = None
    duration: float | None = None


def gradient(index: int) -> Image.Image:
    start, end = (np.array(c, np.float32) for c in PALETTE[index % len(PALETTE)])
    w, h = SOURCE_SIZE
    across = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    down = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    ramp = across * 0.7 + down * 0.3
    pixels = start + (end - start) * ramp[..., None]
    # a few "UI" boxes so frames are not trivially smooth
    for k in range(4):
        y0, x0 = 120 + k * 170, 100 + (index * 37 + k * 90) % 600
        pixels[y0:y0 + 90, x0:x0 + 500] = (245, 245, 245)
        pixels[y0 + 30:y0 + 60, x0 + 20:x0 + 300] = (40, 40, 40)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def make_job(fmt: str, with_audio: bool = False) -> dict[str, Any]:
    steps = [{"title": f"Step {i + 1}: open the settings panel",
              "text": "Click the gear icon in the top-right corner, then choose Preferences and scroll "
                      "down to the section about previews.",
              "durationSec": STEP_SECONDS, "asset": f"shot-{i}"} for i in range(STEPS)]
    assets = [{"id": f"shot-{i}", "type": "image", "uri": f"shot-{i}.png"} for i in range(STEPS)]
    audio: dict[str, str] = {}
    if with_audio:
        assets.append({"id": "voice", "type": "audio", "uri": "voice.wav"})
        audio = {"narration": "voice"}
    return {"jobId": f"bench-{fmt}", "projectId": "bench", "requestId": "bench", "dryRun": False,
            "previewRequest": {"title": "Benchmark", "steps": steps, "assets": assets, "audio": audio,
                               "options": {"resolution": f"{WIDTH}x{HEIGHT}", "format": fmt, "fps": FPS}}}


def write_assets(folder: Path) -> None:
    import wave

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(STEPS):
        gradient(i).save(folder / f"shot-{i}.png", compress_level=6)
    rate = 44_100
    t = np.arange(int(STEPS * STEP_SECONDS * rate)) / rate
    tone = (np.sin(2 * np.pi * 220 * t) * 0.3 * 32767).astype("<i2")
    with wave.open(str(folder / "voice.wav"), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(tone.tobytes())


def find_ffmpeg(explicit: str | None) -> str | None:
    for candidate in (explicit, os.environ.get("IMAGEIO_FFMPEG_EXE"), shutil.which("ffmpeg")):
        if candidate and Path(candidate).exists():
            return candidate
    try:
        import imageio_ffmpeg  # type: ignore[import-not-found]

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError):
        return None


def decoded_duration(path: Path) -> float:
    with av.open(str(path)) as container:
        return (container.duration or 0) / 1_000_000


def bench_ours(fmt: str, work: Path, settings: Settings, runs: int, with_audio: bool = False) -> Row:
    job = make_job(fmt, with_audio)
    out = work / f"ours-{fmt}{'-audio' if with_audio else ''}"
    request = JobRequest.from_payload(job)
    seconds = harness.fastest(runs, lambda: render_preview(request, out, settings))
    video = out / f"preview.{fmt}"
    return Row(fmt, "ours + 30 s narration" if with_audio else "ours (PyAV, VFR)", seconds,
               video.stat().st_size, decoded_duration(video))


def write_frames(work: Path, settings: Settings) -> Path:
    """The exact frames our renderer composes, as PNGs, plus a concat list with durations."""
    from shared.render.assets import AssetLoader, decode_image
    from shared.render.frames import letterbox

    plan = plan_preview(JobRequest.from_payload(make_job("mp4")))
    loader = AssetLoader(settings)
    folder = work / "frames"
    folder.mkdir(exist_ok=True)
    lines = ["ffconcat version 1.0"]
    for step in plan.steps:
        assert step.asset_id is not None
        image = letterbox(decode_image(loader.fetch(plan.assets[step.asset_id]), step.asset_id, (WIDTH, HEIGHT)),
                          WIDTH, HEIGHT)
        frame = compose(WIDTH, HEIGHT, image, step.title, step.text, True)
        name = f"frame-{step.index:02d}.png"
        frame.save(folder / name, compress_level=1)
        lines += [f"file '{name}'", f"duration {step.duration}"]
    (folder / "cfr.ffconcat").write_text("\n".join(lines) + "\n")
    # with -fps_mode vfr the last entry's duration is dropped unless the file is listed again
    lines.append(lines[-2])
    (folder / "vfr.ffconcat").write_text("\n".join(lines) + "\n")
    return folder


def bench_ffmpeg(ffmpeg: str, fmt: str, frames: Path, work: Path, runs: int, cfr: bool) -> Row:
    out = work / f"ffmpeg-{'cfr' if cfr else 'vfr'}.{fmt}"
    timing = ["-vf", f"fps={FPS}"] if cfr else ["-fps_mode", "vfr"]
    command = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0",
               "-i", str(frames / f"{'cfr' if cfr else 'vfr'}.ffconcat"), *timing, *FFMPEG_ARGS[fmt], str(out)]

    def run() -> None:
        subprocess.run(command, check=True, stdin=subprocess.DEVNULL)

    seconds = harness.fastest(runs, run)
    label = f"ffmpeg CFR ({int(STEPS * STEP_SECONDS * FPS)} frames)" if cfr else f"ffmpeg VFR ({STEPS} frames)"
    return Row(fmt, label, seconds, out.stat().st_size, decoded_duration(out))


def format_table(rows: list[Row]) -> str:
    lines = [(row.fmt, row.who, f"{row.seconds:.3f}" if row.seconds is not None else "-",
              f"{row.size / 1024:.0f}" if row.size is not None else "-",
              f"{row.duration:.3f}" if row.duration is not None else "-") for row in rows]
    return harness.grid(("format", "encoder", "wall s", "size KB", "duration s"), lines, right_aligned={2, 3, 4})


def ratio_figures(ratios: dict[tuple[str, bool], float]) -> list[harness.Figure]:
    """Ours over ffmpeg's time per format and frame timing; only mp4 against CFR has a target."""
    figures = []
    for (fmt, cfr), ratio in ratios.items():
        name, value = f"{fmt}: ours / ffmpeg {'CFR' if cfr else 'VFR'}", f"{ratio:.2f}x"
        if (fmt, cfr) == ("mp4", True):
            figures.append(harness.Figure.checked(name, value, ratio, MP4_TARGET))
        else:
            figures.append(harness.Figure(name, value))
    return figures


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 when the target is met or cannot be measured (no ffmpeg), 1 when missed."""
    parser = harness.argument_parser("bench.render_bench", __doc__, quick_help="one run of each: check that it runs")
    parser.add_argument("--runs", type=int, default=3, help="repetitions; the best time is reported")
    parser.add_argument("--ffmpeg", help="ffmpeg binary to compare with")
    parser.add_argument("--keep", type=Path, help="write outputs here instead of a temp folder")
    args = parser.parse_args(argv)
    runs = 1 if args.quick else args.runs

    with harness.scratch_dir("render-bench-", args.keep) as work:
        write_assets(work / "assets")
        settings = Settings.from_env({"DATA_DIR": str(work / "data"), "PREVIEW_ASSET_DIR": str(work / "assets")})
        print(f"render bench: {WIDTH}x{HEIGHT}, {STEPS} steps x {STEP_SECONDS:g} s = {STEPS * STEP_SECONDS:g} s, "
              f"{FPS} fps, captions on, source images {SOURCE_SIZE[0]}x{SOURCE_SIZE[1]} PNG; best of {runs}; "
              f"{harness.cpu_count()} CPUs", flush=True)
        log_step = harness.StepLog()
        rows: list[Row] = []
        for fmt in ("mp4", "webm", "gif"):
            log_step(f"ours, {fmt}")
            rows.append(bench_ours(fmt, work, settings, runs))
        log_step("ours, mp4 with narration")
        rows.append(bench_ours("mp4", work, settings, runs, with_audio=True))
        ours_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        ffmpeg = find_ffmpeg(args.ffmpeg)
        ratios: dict[tuple[str, bool], float] = {}
        if ffmpeg is None:
            print("ffmpeg baseline unavailable: no ffmpeg on PATH and imageio-ffmpeg not installed "
                  "(pip install imageio-ffmpeg, or pass --ffmpeg PATH)")
        else:
            log_step("ffmpeg, the same frames")
            frames = write_frames(work, settings)
            for fmt in ("mp4", "webm", "gif"):
                ours = next(r for r in rows if r.fmt == fmt and r.who.startswith("ours ("))
                for cfr in ((True, False) if fmt != "gif" else (False,)):
                    row = bench_ffmpeg(ffmpeg, fmt, frames, work, runs, cfr)
                    rows.append(row)
                    if ours.seconds and row.seconds:
                        ratios[fmt, cfr] = ours.seconds / row.seconds
        rows.sort(key=lambda r: ("mp4", "webm", "gif").index(r.fmt))
        print()
        print(format_table(rows))
        figures = ratio_figures(ratios)
        if figures:
            print()
            print(harness.figures_table(figures))
            print("(ffmpeg VFR encodes 10 ready-made frames; ours also decodes the 1600x900 sources, "
                  "letterboxes, draws captions, writes poster, captions, JSON and hashes)")
        children_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"peak RSS: this process {ours_rss:.0f} MB (after our renders)"
              + (f"; largest ffmpeg child {children_rss:.0f} MB" if ffmpeg else ""))
        if ffmpeg:
            print(f"ffmpeg: {ffmpeg}")
    return harness.exit_status(figure.passed for figure in figures)


if __name__ == "__main__":
    raise SystemExit(main())
