"""Render benchmark: our full pipeline against the ffmpeg CLI making the same constant-rate video.

    python -m bench.render_bench [--runs 3] [--quick] [--ffmpeg PATH] [--keep DIR]

Exit status 0 when every target is met (or cannot be measured without ffmpeg), else 1.

Each case is a job of captioned steps (one distinct source screenshot per step, PNG, a quarter
larger than the frame as real screenshots are) rendered by `render_preview` to MP4 and WebM.
The baseline is the ffmpeg binary imageio-ffmpeg ships, given the very pictures our renderer
composes (PNG files and a concat list with each step's duration) and asked for the same
output: same resolution, fps, codec and encoder settings (taken from shared/render/encode.py),
a keyframe at every step start and none but the encoder's own limit elsewhere, BT.709 tags.
ffmpeg converts each picture to YUV once and its fps filter repeats it, as ours does. The
frame counts and keyframe times of both files are printed side by side (a ratio whose files
differ is marked not comparable). One thing differs on purpose, how the encoding is spread:
ours gives the steps to one single-threaded encoder per CPU (shared/render/encode.py), the
CLI runs one encoder with the threads it picks itself.

Ours runs in a fresh interpreter per run (imports done before the clock starts, as in the
worker); its time is the `render_preview` call: asset decode, letterboxing, captions, encode,
poster, captions file, JSON and hashes. ffmpeg's is its process from start to exit (PNG
decode, conversion, encode). Rounds alternate ours and ffmpeg; the median and min-max are
printed, with each process's peak RSS (its own: VmHWM for ours, ru_maxrss of ffmpeg spawned
from a small launcher) and CPU time. MoviePy (ImageClip per step, concatenated,
libx264 ultrafast: what a Python user would otherwise write) renders the MP4 for contrast.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from bench import harness  # noqa: E402

# Our wall time over ffmpeg's, per case and format.
TARGET = harness.Target("<=", 1.0)
PALETTE = [((20, 40, 90), (90, 160, 230)), ((90, 20, 40), (240, 150, 80)), ((20, 80, 40), (150, 230, 120)),
           ((60, 20, 90), (200, 140, 240)), ((30, 30, 30), (220, 220, 220))]
COMPARED = ("mp4", "webm")
OURS = "ours (PyAV)"
CODECS = {"mp4": "libx264", "webm": "libvpx-vp9"}


@dataclass(frozen=True)
class Case:
    width: int
    height: int
    steps: int
    step_seconds: float
    fps: int = 30

    @property
    def name(self) -> str:
        return f"{self.height}p {self.steps}x{self.step_seconds:g}s"

    @property
    def seconds(self) -> float:
        return self.steps * self.step_seconds

    @property
    def frames(self) -> int:
        return round(self.seconds * self.fps)

    @property
    def source_size(self) -> tuple[int, int]:
        return self.width * 5 // 4, self.height * 5 // 4

    @property
    def long(self) -> bool:
        return self.seconds > 60


CASES = (Case(1280, 720, 10, 3.0), Case(1920, 1080, 10, 3.0), Case(1280, 720, 100, 6.0), Case(1920, 1080, 100, 6.0))
QUICK_CASES = (Case(320, 180, 3, 1.0),)


@dataclass
class Output:
    """What a video file holds, read back: frames, keyframe times, duration, bytes."""

    frames: int
    keyframes: tuple[float, ...]
    duration: float
    size: int

    @classmethod
    def read(cls, path: Path) -> Output:
        import av

        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            packets = [p for p in container.demux(stream) if p.size]
            keys = tuple(round(float(p.pts * p.time_base), 3) for p in packets if p.is_keyframe and p.pts is not None)
            duration = (container.duration or 0) / 1_000_000
        return cls(len(packets), keys, duration, path.stat().st_size)


@dataclass
class Row:
    case: Case
    fmt: str
    who: str
    seconds: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)  # peak RSS of each run, each process
    process_seconds: list[float] = field(default_factory=list)  # ours: the child from spawn to exit
    cpu_seconds: list[float] = field(default_factory=list)  # each process's user + system time
    note: str = ""
    output: Output | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None


# -- the job and its pictures ---------------------------------------------------------------


def gradient(index: int, size: tuple[int, int]) -> Image.Image:
    """A screenshot-like picture: a two-colour ramp with a few light "UI" boxes on it."""
    start, end = (np.array(c, np.float32) for c in PALETTE[index % len(PALETTE)])
    w, h = size
    small = (max(2, w // 8), max(2, h // 8))  # the ramp is smooth: made small, scaled up
    across = np.linspace(0, 1, small[0], dtype=np.float32)[None, :]
    down = np.linspace(0, 1, small[1], dtype=np.float32)[:, None]
    ramp = across * 0.7 + down * 0.3
    pixels = (start + (end - start) * ramp[..., None]).astype(np.uint8)
    image = Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    unit = h / 900
    for k in range(4):
        y0, x0 = round((120 + k * 170) * unit), round((100 + (index * 37 + k * 90) % 600) * unit)
        draw.rectangle((x0, y0, x0 + round(500 * unit), y0 + round(90 * unit)), fill=(245, 245, 245))
        draw.rectangle((x0 + round(20 * unit), y0 + round(30 * unit), x0 + round(300 * unit), y0 + round(60 * unit)),
                       fill=(40, 40, 40))
    return image


def make_job(case: Case, fmt: str, with_audio: bool = False) -> dict[str, Any]:
    steps = [{"title": f"Step {i + 1}: open the settings panel",
              "text": "Click the gear icon in the top-right corner, then choose Preferences and scroll "
                      "down to the section about previews.",
              "durationSec": case.step_seconds, "asset": f"shot-{i}"} for i in range(case.steps)]
    assets = [{"id": f"shot-{i}", "type": "image", "uri": f"shot-{i}.png"} for i in range(case.steps)]
    audio: dict[str, str] = {}
    if with_audio:
        assets.append({"id": "voice", "type": "audio", "uri": "voice.wav"})
        audio = {"narration": "voice"}
    return {"jobId": f"bench-{fmt}", "projectId": "bench", "requestId": "bench", "dryRun": False,
            "previewRequest": {"title": "Benchmark", "steps": steps, "assets": assets, "audio": audio,
                               "options": {"resolution": f"{case.width}x{case.height}", "format": fmt,
                                           "fps": case.fps}}}


def write_assets(case: Case, folder: Path) -> None:
    """One source PNG per step (zlib level 6, as screenshots usually are) and a narration WAV."""
    folder.mkdir(parents=True, exist_ok=True)

    def one(i: int) -> None:
        gradient(i, case.source_size).save(folder / f"shot-{i}.png", compress_level=6)

    with ThreadPoolExecutor(max_workers=harness.cpu_count()) as pool:
        list(pool.map(one, range(case.steps)))
    rate = 44_100
    t = np.arange(int(case.seconds * rate)) / rate
    tone = (np.sin(2 * np.pi * 220 * t) * 0.3 * 32767).astype("<i2")
    with wave.open(str(folder / "voice.wav"), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(tone.tobytes())


def settings_env(work: Path, assets: Path) -> dict[str, str]:
    return {"DATA_DIR": str(work / "data"), "PREVIEW_ASSET_DIR": str(assets)}


def write_frames(case: Case, assets: Path, folder: Path) -> list[float]:
    """The exact pictures our renderer composes, as PNGs (level 6: they decode faster than at
    level 1), and a concat list with each step's duration; returns the step start times."""
    from shared.contract import JobRequest
    from shared.render import plan_preview
    from shared.render.assets import AssetLoader, decode_image
    from shared.render.frames import compose, letterbox
    from shared.settings import Settings

    plan = plan_preview(JobRequest.from_payload(make_job(case, "mp4")))
    loader = AssetLoader(Settings.from_env(settings_env(folder, assets)))
    folder.mkdir(parents=True, exist_ok=True)

    def one(index: int) -> None:
        step = plan.steps[index]
        assert step.asset_id is not None
        image = letterbox(decode_image(loader.fetch(plan.assets[step.asset_id]), step.asset_id,
                                       (case.width, case.height)), case.width, case.height)
        compose(case.width, case.height, image, step.title, step.text, True).save(
            folder / f"frame-{index:03d}.png", compress_level=6)

    with ThreadPoolExecutor(max_workers=harness.cpu_count()) as pool:
        list(pool.map(one, range(len(plan.steps))))
    lines = ["ffconcat version 1.0"]
    for step in plan.steps:
        lines += [f"file 'frame-{step.index:03d}.png'", f"duration {step.duration}"]
    (folder / "steps.ffconcat").write_text("\n".join(lines) + "\n")
    return [step.start_frame / case.fps for step in plan.steps]


# -- the contenders -------------------------------------------------------------------------


@dataclass(frozen=True)
class Finished:
    wall: float  # seconds from spawn to exit
    cpu: float  # user + system seconds
    rss_mb: float  # the process's peak resident set
    report: dict[str, Any]  # what the child printed as JSON on its last line (ours, MoviePy)


# Starts a command from a small interpreter and reports its wall time, CPU time and peak RSS.
# Linux counts a child's pre-exec memory (the spawning process's, shared until exec) in its
# ru_maxrss, so a child spawned by this (large) bench would show at least the bench's size;
# spawned from this launcher (about 10 MB) the figure is the child's own.
LAUNCHER = """import json, os, sys, time
started = time.perf_counter()
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ)
_, status, usage = os.wait4(pid, 0)
print(json.dumps({"status": os.waitstatus_to_exitcode(status), "wall": time.perf_counter() - started,
                  "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024}))
"""


def run_process(command: Sequence[str], measured: bool = False, cwd: Path = harness.REPO_ROOT) -> Finished:
    """Run `command` to its end. `measured`: through LAUNCHER, for the command's own wall
    time, CPU and peak RSS; otherwise the process reports its figures itself (the JSON on its
    last line of output)."""
    full = [sys.executable, "-S", "-c", LAUNCHER, *command] if measured else list(command)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        status = subprocess.run(full, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err).returncode
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    lines = stdout.strip().splitlines()
    report = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    status = report.get("status", status) if measured else status
    if status != 0:
        raise RuntimeError(f"{command[0]} exited with {status}: {stderr.strip()[-2000:]}")
    if measured:
        return Finished(report["wall"], report["cpu"], report["rss_mb"], report)
    return Finished(wall, report.get("cpu", 0.0), report.get("rss_mb", 0.0), report)


def peak_rss_mb() -> float:
    """This process's own peak resident set (VmHWM: its memory since exec, nothing inherited)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ours_command(job: dict[str, Any], env: dict[str, str], out: Path, spec: Path) -> list[str]:
    spec.write_text(json.dumps({"job": job, "env": env, "out": str(out)}))
    return [sys.executable, "-m", "bench.render_bench", "--child-ours", str(spec)]


def child_ours(spec_path: str) -> int:
    """In a fresh interpreter: import what the worker imports, then time one render."""
    import resource

    from shared.contract import JobRequest
    from shared.render import render_preview
    from shared.settings import Settings

    spec = json.loads(Path(spec_path).read_text())
    request = JobRequest.from_payload(spec["job"])
    settings = Settings.from_env(spec["env"])
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    result = render_preview(request, Path(spec["out"]), settings)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(json.dumps({"seconds": seconds, "cpu": cpu, "delivered": result.summary["delivered"],
                      "rss_mb": peak_rss_mb()}))
    return 0


def ffmpeg_command(ffmpeg: str, case: Case, fmt: str, frames: Path, starts: list[float], out: Path) -> list[str]:
    """ffmpeg making what we make from the same pictures: each picture converted to BT.709
    limited-range YUV once, repeated on the fps grid, a keyframe forced at each step start,
    the encoder options of shared/render/encode.py."""
    from shared.render import encode

    codec = CODECS[fmt]
    options: list[str] = []
    for name, value in encode._VIDEO_OPTIONS[codec].items():
        options += [f"-{name}:v", value]
    if codec in encode._THREAD_TYPE:
        options += ["-thread_type:v", encode._THREAD_TYPE[codec].lower()]
    container_args: list[str] = []
    for name, value in encode._CONTAINER_OPTIONS[fmt].items():
        container_args += [f"-{name}", value]
    keyframes = ",".join(f"{t:.6g}" for t in starts)
    return [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-f", "concat", "-safe", "0", "-i", str(frames / "steps.ffconcat"),
            "-vf", f"scale=out_color_matrix=bt709:out_range=tv,format=yuv420p,fps={case.fps}",
            "-t", f"{case.frames / case.fps:.6f}",
            "-c:v", codec, *options, "-bf:v", "0", "-g:v", str(encode.KEYFRAME_SECONDS * case.fps),
            "-force_key_frames:v", keyframes,
            "-colorspace:v", "bt709", "-color_primaries:v", "bt709", "-color_trc:v", "bt709", "-color_range:v", "tv",
            *container_args, str(out)]


def moviepy_command(case: Case, frames: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "bench.render_bench", "--child-moviepy",
            json.dumps({"frames": str(frames), "steps": case.steps, "seconds": case.step_seconds,
                        "fps": case.fps, "out": str(out)})]


def child_moviepy(spec_json: str) -> int:
    """What a Python user would write with MoviePy: an ImageClip per step, concatenated."""
    import resource

    from moviepy import ImageClip, concatenate_videoclips  # type: ignore[import-untyped]

    spec = json.loads(spec_json)
    frames = Path(spec["frames"])
    started = time.perf_counter()
    clips = [ImageClip(str(frames / f"frame-{i:03d}.png"), duration=spec["seconds"]) for i in range(spec["steps"])]
    concatenate_videoclips(clips).write_videofile(spec["out"], fps=spec["fps"], codec="libx264",
                                                  preset="ultrafast", audio=False, logger=None)
    seconds = time.perf_counter() - started
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime  # its ffmpeg's too
    print(json.dumps({"seconds": seconds, "cpu": cpu, "rss_mb": peak_rss_mb(),
                      # an upper bound: the child's figure includes what it shared with this
                      # process before its exec (see LAUNCHER)
                      "ffmpeg_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
    return 0


def moviepy_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("moviepy") is not None


def find_ffmpeg(explicit: str | None) -> str | None:
    """--ffmpeg, else the binary imageio-ffmpeg ships (it has libx264 and libvpx-vp9; it also
    honours $IMAGEIO_FFMPEG_EXE), else one on PATH."""
    if explicit:
        return explicit if Path(explicit).exists() else None
    try:
        import imageio_ffmpeg  # type: ignore[import-untyped]

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError):
        return shutil.which("ffmpeg")


# -- one case -------------------------------------------------------------------------------


@dataclass
class CaseResult:
    case: Case
    rows: list[Row]
    ratios: dict[str, tuple[float, float, float]]  # format -> median, min, max of ours/ffmpeg per round
    same_output: dict[str, bool]


def bench_case(case: Case, work: Path, runs: int, ffmpeg: str | None, extras: bool,
               log: Callable[[str], None]) -> CaseResult:
    folder = work / case.name.replace(" ", "-")
    assets = folder / "assets"
    log(f"{case.name}: writing {case.steps} source pictures")
    write_assets(case, assets)
    env = settings_env(folder, assets)
    rows: list[Row] = []
    ratios: dict[str, tuple[float, float, float]] = {}
    same: dict[str, bool] = {}
    frames_dir = folder / "frames"
    starts: list[float] = []
    if ffmpeg is not None or extras:
        starts = write_frames(case, assets, frames_dir)

    for fmt in COMPARED:
        ours = Row(case, fmt, OURS)
        ours_out = folder / f"ours-{fmt}"
        command = ours_command(make_job(case, fmt), env, ours_out, folder / f"job-{fmt}.json")
        contenders: dict[str, Callable[[int], float]] = {}

        def measure_ours(_round: int, row: Row = ours, command: list[str] = command) -> float:
            finished = run_process(command)
            row.seconds.append(finished.report["seconds"])
            row.rss_mb.append(finished.rss_mb)
            row.process_seconds.append(finished.wall)
            row.cpu_seconds.append(finished.cpu)
            return float(finished.report["seconds"])

        contenders["ours"] = measure_ours
        theirs: Row | None = None
        if ffmpeg is not None:
            theirs = Row(case, fmt, "ffmpeg CLI")
            ff_out = folder / f"ffmpeg.{fmt}"
            ff_command = ffmpeg_command(ffmpeg, case, fmt, frames_dir, starts, ff_out)

            def measure_ffmpeg(_round: int, row: Row = theirs, command: list[str] = ff_command) -> float:
                finished = run_process(command, measured=True)
                row.seconds.append(finished.wall)
                row.rss_mb.append(finished.rss_mb)
                row.cpu_seconds.append(finished.cpu)
                return finished.wall

            contenders["ffmpeg"] = measure_ffmpeg
        log(f"{case.name}, {fmt}: {runs} alternating rounds of {' and '.join(contenders)}")
        figures = harness.alternate(runs, contenders)
        ours.output = Output.read(ours_out / f"preview.{fmt}")
        rows.append(ours)
        if theirs is not None:
            theirs.output = Output.read(folder / f"ffmpeg.{fmt}")
            rows.append(theirs)
            per_round = [a / b for a, b in zip(figures["ours"], figures["ffmpeg"], strict=True)]
            ratios[fmt] = (statistics.median(figures["ours"]) / statistics.median(figures["ffmpeg"]),
                           min(per_round), max(per_round))
            same[fmt] = (ours.output.frames, ours.output.keyframes) == (theirs.output.frames, theirs.output.keyframes)

    if extras and moviepy_available():
        row = Row(case, "mp4", "MoviePy (ImageClip, libx264 ultrafast)")
        out = folder / "moviepy.mp4"
        moviepy_runs = 1 if case.long else runs
        log(f"{case.name}, mp4: MoviePy, {moviepy_runs} run{'s' if moviepy_runs > 1 else ''}")
        for _ in range(moviepy_runs):
            finished = run_process(moviepy_command(case, frames_dir, out))
            row.seconds.append(finished.report["seconds"])
            row.cpu_seconds.append(finished.cpu)
            row.rss_mb.append(finished.report["rss_mb"])
            row.note = (f"peak RSS is its Python process's; its ffmpeg child's is at most "
                        f"{finished.report['ffmpeg_rss_mb']:.0f} MB")
        row.output = Output.read(out)
        rows.append(row)
    elif extras:
        log("MoviePy not installed (pip install -e '.[dev]'): no contrast row")

    if extras and not case.long:  # ours only: the other format and audio, for the record
        for fmt, with_audio, who in (("gif", False, "ours (GIF, a frame per step)"),
                                     ("mp4", True, f"ours + {case.seconds:g} s narration")):
            row = Row(case, fmt, who)
            out = folder / f"ours-{fmt}{'-audio' if with_audio else ''}"
            command = ours_command(make_job(case, fmt, with_audio), env, out, folder / "job-extra.json")
            log(f"{case.name}: {who}")
            for _ in range(runs):
                finished = run_process(command)
                row.seconds.append(finished.report["seconds"])
                row.cpu_seconds.append(finished.cpu)
                row.rss_mb.append(finished.rss_mb)
            row.output = Output.read(out / f"preview.{fmt}")
            rows.append(row)
    shutil.rmtree(folder, ignore_errors=True)
    return CaseResult(case, rows, ratios, same)


# -- tables ---------------------------------------------------------------------------------


def spread(values: Sequence[float], digits: int = 2) -> str:
    if not values:
        return "-"
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.{digits}f}"
    return f"{median:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def format_table(results: Sequence[CaseResult]) -> str:
    lines = []
    for result in results:
        for row in result.rows:
            out = row.output
            lines.append((row.case.name, row.fmt, row.who, spread(row.seconds),
                          f"{statistics.median(row.cpu_seconds):.2f}" if row.cpu_seconds else "-",
                          f"{statistics.median(row.rss_mb):.0f}" if row.rss_mb else "-",
                          f"{out.size / 1024:.0f}" if out else "-", str(out.frames) if out else "-",
                          str(len(out.keyframes)) if out else "-", f"{out.duration:.3f}" if out else "-"))
    return harness.grid(("case", "format", "encoder", "wall s, median (min-max)", "CPU s", "peak RSS MB", "size KB",
                         "frames", "keyframes", "duration s"), lines, right_aligned={3, 4, 5, 6, 7, 8, 9})


def notes(results: Sequence[CaseResult]) -> list[str]:
    lines = []
    processes = [f"{row.case.name} {row.fmt} {statistics.median(row.process_seconds):.2f} s"
                 for result in results for row in result.rows if row.process_seconds and row.who == OURS]
    if processes:
        lines.append("ours as a whole process (interpreter start and imports too), median: " + ", ".join(processes))
    lines += [f"{row.case.name} {row.who}: {row.note}" for result in results for row in result.rows if row.note]
    return lines


def ratio_figures(results: Sequence[CaseResult]) -> list[harness.Figure]:
    figures = []
    for result in results:
        for fmt, (median, low, high) in result.ratios.items():
            name = f"{result.case.name} {fmt}: ours / ffmpeg"
            value = f"{median:.2f}x ({low:.2f}-{high:.2f})"
            if not result.same_output[fmt]:
                figures.append(harness.Figure(name + " (outputs differ: not comparable)", value, TARGET, False))
            else:
                figures.append(harness.Figure.checked(name, value, median, TARGET))
    return figures


def run(cases: Sequence[Case], runs: int, ffmpeg: str | None, work: Path, extras: bool = True,
        log: Callable[[str], None] = harness.progress) -> list[CaseResult]:
    step_log = harness.StepLog(log)
    return [bench_case(case, work, runs, ffmpeg, extras, step_log) for case in cases]


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 when every target is met or cannot be measured (no ffmpeg), 1 when one is missed."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child-ours"]:
        return child_ours(argv[1])
    if argv[:1] == ["--child-moviepy"]:
        return child_moviepy(argv[1])
    parser = harness.argument_parser("bench.render_bench", __doc__,
                                     quick_help="one small case, one run of each: check that it runs")
    parser.add_argument("--runs", type=int, default=3, help="alternating rounds per case and format")
    parser.add_argument("--ffmpeg", help="ffmpeg binary to compare with (default: imageio-ffmpeg's)")
    parser.add_argument("--keep", type=Path, help="work in this folder instead of a temp folder")
    args: argparse.Namespace = parser.parse_args(argv)
    runs = 1 if args.quick else args.runs
    cases = QUICK_CASES if args.quick else CASES
    ffmpeg = find_ffmpeg(args.ffmpeg)

    print(f"render bench: {', '.join(c.name for c in cases)} at 30 fps; captioned steps, one source PNG a "
          f"quarter larger than the frame per step; median of {runs} alternating round{'s' * (runs > 1)}; "
          f"{harness.cpu_count()} CPUs", flush=True)
    if ffmpeg is None:
        print("ffmpeg baseline unavailable: imageio-ffmpeg not installed and no ffmpeg on PATH "
              "(pip install imageio-ffmpeg, or pass --ffmpeg PATH)")
    with harness.scratch_dir("render-bench-", args.keep) as work:
        results = run(cases, runs, ffmpeg, work)
    print()
    print(format_table(results))
    figures = ratio_figures(results)
    if figures:
        print()
        print(harness.figures_table(figures))
    print("\nours: the render_preview call in a fresh interpreter (asset decode, letterbox, captions, encode, "
          "poster, captions file, JSON, hashes), the steps shared by one single-threaded encoder per CPU; "
          "ffmpeg: its whole process (PNG decode, conversion, encode), one encoder with its own threads; "
          "same encoder options otherwise; peak RSS and CPU are each process's own")
    for line in notes(results):
        print(line)
    if ffmpeg:
        print(f"ffmpeg: {ffmpeg}")
    return harness.exit_status(figure.passed for figure in figures)


if __name__ == "__main__":
    raise SystemExit(main())
