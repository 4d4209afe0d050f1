"""Shared builders for render tests: data: URI assets, job payloads, and small decoders for
what the renderer writes. (Imported by module name: pytest puts this folder on sys.path.)"""

from __future__ import annotations

import base64
import io
import re
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from shared.contract import JobRequest
from shared.settings import Settings


def png_bytes(color: tuple[int, int, int], size: tuple[int, int] = (160, 120)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def png_uri(color: tuple[int, int, int], size: tuple[int, int] = (160, 120)) -> str:
    return data_uri(png_bytes(color, size), "image/png")


def wav_bytes(seconds: float, rate: int = 22_050, channels: int = 1, freq: float = 440.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    mono = (np.sin(2 * np.pi * freq * t) * 0.5 * 32767).astype("<i2")
    samples = np.repeat(mono, channels) if channels > 1 else mono
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return buffer.getvalue()


def wav_uri(seconds: float, **kwargs: Any) -> str:
    return data_uri(wav_bytes(seconds, **kwargs), "audio/wav")


COLORS = [(220, 40, 40), (40, 200, 60), (40, 70, 220), (230, 210, 40)]


def make_job(steps: list[dict[str, Any]], assets: list[dict[str, Any]] | None = None,
             audio: dict[str, Any] | None = None, options: dict[str, Any] | None = None,
             dry_run: bool = False, job_id: str = "job-1", **request: Any) -> dict[str, Any]:
    return {
        "jobId": job_id,
        "projectId": "proj-1",
        "requestId": "req-1",
        "dryRun": dry_run,
        "previewRequest": {
            "steps": steps,
            "assets": assets or [],
            "audio": audio or {},
            "options": {"resolution": "320x240", "fps": 10, **(options or {})},
            **request,
        },
    }


def request(job: dict[str, Any], settings: Settings) -> JobRequest:
    """The typed request of a job payload, as the worker makes it (some render tests go past
    what admission takes, such as a long audio track as a data: URI)."""
    del settings
    return JobRequest.from_payload(job)


def colour_job(durations: list[float], fmt: str = "mp4", audio_seconds: float | None = None,
               **options: Any) -> dict[str, Any]:
    """One solid-colour image step per duration, with title and text; optional narration."""
    steps = [{"title": f"Step {i + 1}", "text": f"Do thing number {i + 1}", "durationSec": d,
              "asset": f"img-{i}"} for i, d in enumerate(durations)]
    assets = [{"id": f"img-{i}", "type": "image", "uri": png_uri(COLORS[i % len(COLORS)])}
              for i in range(len(durations))]
    audio: dict[str, Any] = {}
    if audio_seconds is not None:
        assets.append({"id": "voice", "type": "audio", "uri": wav_uri(audio_seconds)})
        audio = {"narration": "voice"}
    return make_job(steps, assets, audio, {"format": fmt, **options})


@dataclass
class Cue:
    ident: str | None
    start: float
    end: float
    text: list[str]


_TIMING = re.compile(r"^(\d{2}):(\d{2}):(\d{2})\.(\d{3}) --> (\d{2}):(\d{2}):(\d{2})\.(\d{3})$")


def parse_vtt(text: str) -> list[Cue]:
    """Just enough WebVTT: header, blank-line separated cues, optional id line."""
    blocks = [b for b in text.replace("\r\n", "\n").split("\n\n") if b.strip()]
    assert blocks[0].splitlines()[0] == "WEBVTT", "missing WEBVTT header"
    cues = []
    for block in blocks[1:]:
        lines = block.strip("\n").split("\n")
        ident = None
        if "-->" not in lines[0]:
            ident, lines = lines[0], lines[1:]
        match = _TIMING.match(lines[0])
        assert match, f"bad timing line {lines[0]!r}"
        g = [int(x) for x in match.groups()]
        start = g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000
        end = g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000
        cues.append(Cue(ident, start, end, lines[1:]))
    return cues


@dataclass
class Decoded:
    duration: float
    width: int
    height: int
    frames: list[tuple[float, np.ndarray]]  # (time, rgb array)
    has_audio: bool
    audio_seconds: float
    audio_samples: np.ndarray | None  # mono float, for level checks
    audio_rate: int


def decode(path: Path) -> Decoded:
    import av

    with av.open(str(path)) as container:
        duration = container.duration / 1_000_000 if container.duration else 0.0
        video = container.streams.video[0]
        width, height = video.codec_context.width, video.codec_context.height
        frames = [(float(f.time), f.to_ndarray(format="rgb24")) for f in container.decode(video)]
    with av.open(str(path)) as container:
        has_audio = bool(container.streams.audio)
        samples = None
        rate = 0
        if has_audio:
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate
            chunks = [f.to_ndarray().astype(np.float32).reshape(f.layout.nb_channels, -1)
                      if f.format.is_planar else f.to_ndarray().astype(np.float32).reshape(-1, f.layout.nb_channels).T
                      for f in container.decode(stream)]
            samples = np.concatenate(chunks, axis=1).mean(axis=0) if chunks else np.zeros(0, np.float32)
    return Decoded(duration, width, height, frames, has_audio,
                   0.0 if samples is None else len(samples) / rate, samples, rate)


def frame_at(decoded: Decoded, seconds: float) -> np.ndarray:
    """The picture on screen at `seconds` (last frame starting at or before it)."""
    shown = [img for t, img in decoded.frames if t <= seconds + 1e-6]
    assert shown, f"no frame shown at {seconds}s"
    return shown[-1]


def centre(pixel_source: np.ndarray) -> np.ndarray:
    height, width = pixel_source.shape[:2]
    return pixel_source[height // 2, width // 2].astype(int)
