"""Turn a job payload into a render plan: defaults applied, timeline laid out on the frame grid,
asset references and the limits a JSON schema cannot express checked.

Deliberately free of media libraries so it stays cheap to import (dry runs, API handlers).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.errors import InvalidAsset, PermanentRenderError
from shared.settings import Settings

DEFAULT_STEP_MS = 3000
TITLE_CARD_MS = 3000
MIN_STEP_MS, MAX_STEP_MS = 500, 30_000
MAX_TOTAL_MS = 600_000
MAX_STEPS = 100
MAX_WIDTH, MAX_HEIGHT = 1920, 1080
MIN_SIDE = 16
DEFAULT_RESOLUTION = "1280x720"
DEFAULT_FORMAT = "mp4"
DEFAULT_FPS = 30
DEFAULT_MUSIC_VOLUME = 0.3
AUDIO_RATE = 48_000

_RESOLUTION = re.compile(r"^([1-9][0-9]{1,3})x([1-9][0-9]{1,3})$")


@dataclass(frozen=True)
class FormatSpec:
    """How one output format is encoded; `*_codec` are the names reported in preview.json."""

    name: str
    video_encoder: str
    video_codec: str
    audio_encoder: str | None
    audio_codec: str | None
    content_type: str

    @property
    def filename(self) -> str:
        return f"preview.{self.name}"


FORMATS: dict[str, FormatSpec] = {
    "mp4": FormatSpec("mp4", "libx264", "h264", "aac", "aac", "video/mp4"),
    "webm": FormatSpec("webm", "libvpx-vp9", "vp9", "libopus", "opus", "video/webm"),
    "gif": FormatSpec("gif", "gif", "gif", None, None, "image/gif"),
}


@dataclass(frozen=True)
class AssetRef:
    id: str
    type: str
    uri: str


@dataclass(frozen=True)
class PlannedStep:
    """One slide. Times are exact milliseconds from the payload (captions use them); frames are
    the same times snapped to the `fps` grid (the video uses them)."""

    index: int
    start_ms: int
    duration_ms: int
    title: str | None
    text: str | None
    asset_id: str | None
    start_frame: int
    end_frame: int

    @property
    def start(self) -> float:
        return self.start_ms / 1000

    @property
    def duration(self) -> float:
        return self.duration_ms / 1000

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.duration_ms

    @property
    def frames(self) -> int:
        return self.end_frame - self.start_frame

    def summary(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "start": self.start,
            "duration": self.duration,
            "title": self.title,
            "text": self.text,
            "asset": self.asset_id,
        }


@dataclass(frozen=True)
class RenderPlan:
    job_id: str
    project_id: str
    request_id: str
    dry_run: bool
    title: str | None
    description: str | None
    width: int
    height: int
    fps: int
    format: str
    include_captions: bool
    steps: tuple[PlannedStep, ...]
    title_card: bool
    assets: Mapping[str, AssetRef]
    narration: str | None
    music: str | None
    music_volume: float
    total_ms: int
    total_frames: int
    unused_assets: tuple[str, ...] = field(default=())

    @property
    def spec(self) -> FormatSpec:
        return FORMATS[self.format]

    @property
    def resolution(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def duration(self) -> float:
        return self.total_ms / 1000

    @property
    def has_audio(self) -> bool:
        """Whether the rendered file carries an audio stream."""
        return self.spec.audio_encoder is not None and (self.narration or self.music) is not None

    @property
    def audio_note(self) -> str | None:
        if self.narration is None and self.music is None:
            return "no narration or music asset given; the video has no audio stream"
        if self.spec.audio_encoder is None:
            return f"{self.format} cannot carry audio; narration and music were checked but not included"
        return None

    @property
    def total_samples(self) -> int:
        return self.total_frames * AUDIO_RATE // self.fps

    def image_asset_ids(self) -> list[str]:
        """Image assets the steps use, in first-use order, each once."""
        seen: dict[str, None] = {}
        for step in self.steps:
            if step.asset_id is not None:
                seen.setdefault(step.asset_id, None)
        return list(seen)

    def audio_asset_ids(self) -> list[str]:
        return [ref for ref in (self.narration, self.music) if ref is not None]

    def to_summary(self) -> dict[str, Any]:
        """The content of preview.json: everything here derives from the payload, so rendering
        the same job twice yields byte-identical summaries (no timestamps, no host details)."""
        spec = self.spec
        return {
            "jobId": self.job_id,
            "projectId": self.project_id,
            "requestId": self.request_id,
            "dryRun": self.dry_run,
            "title": self.title,
            "description": self.description,
            "durationSec": self.duration,
            "resolution": self.resolution,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "format": self.format,
            "videoCodec": spec.video_codec,
            "audioCodec": spec.audio_codec if self.has_audio else None,
            "hasAudio": self.has_audio,
            "audio": {
                "narration": self.narration,
                "music": self.music,
                "musicVolume": self.music_volume,
                "note": self.audio_note,
            },
            "includeCaptions": self.include_captions,
            "titleCard": self.title_card,
            "steps": [step.summary() for step in self.steps],
            "unusedAssets": list(self.unused_assets),
            "files": None if self.dry_run else {
                "video": spec.filename,
                "poster": "poster.png",
                "captions": "captions.vtt",
            },
        }


def frame_at(ms: int, fps: int) -> int:
    """Index of the frame boundary nearest to `ms` (half rounds up, integer maths only)."""
    return (ms * fps * 2 + 1000) // 2000


def _text(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise PermanentRenderError(f"{where} must be a string")
    return value if value.strip() else None


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PermanentRenderError(f"{where} must be a number")
    return float(value)


def parse_resolution(value: Any) -> tuple[int, int]:
    match = _RESOLUTION.match(value) if isinstance(value, str) else None
    if match is None:
        raise PermanentRenderError(f"resolution {value!r} must look like 1280x720")
    width, height = int(match.group(1)), int(match.group(2))
    if width % 2 or height % 2:
        raise PermanentRenderError(f"resolution {value} must have even width and height (H.264/VP9 4:2:0)")
    if width > MAX_WIDTH or height > MAX_HEIGHT:
        raise PermanentRenderError(f"resolution {value} exceeds the maximum {MAX_WIDTH}x{MAX_HEIGHT}")
    if width < MIN_SIDE or height < MIN_SIDE:
        raise PermanentRenderError(f"resolution {value} is below the minimum {MIN_SIDE}x{MIN_SIDE}")
    return width, height


def _assets(raw: Any) -> dict[str, AssetRef]:
    if not isinstance(raw, list):
        raise PermanentRenderError("previewRequest.assets must be a list")
    assets: dict[str, AssetRef] = {}
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise PermanentRenderError(f"assets[{i}] must be an object")
        asset_id, kind, uri = item.get("id"), item.get("type"), item.get("uri")
        if not isinstance(asset_id, str) or not asset_id:
            raise PermanentRenderError(f"assets[{i}].id must be a non-empty string")
        if kind not in ("image", "audio"):
            raise InvalidAsset(f"asset {asset_id!r}: type must be 'image' or 'audio', not {kind!r}")
        if not isinstance(uri, str) or not uri:
            raise InvalidAsset(f"asset {asset_id!r}: uri must be a non-empty string")
        if asset_id in assets:
            raise InvalidAsset(f"asset id {asset_id!r} is used by more than one asset")
        assets[asset_id] = AssetRef(asset_id, kind, uri)
    return assets


def _resolve(ref: Any, kind: str, where: str, assets: Mapping[str, AssetRef]) -> str:
    if not isinstance(ref, str):
        raise PermanentRenderError(f"{where} must be an asset id string")
    asset = assets.get(ref)
    if asset is None:
        raise InvalidAsset(f"{where} refers to unknown asset id {ref!r}")
    if asset.type != kind:
        raise InvalidAsset(f"{where}: asset {ref!r} is of type {asset.type!r}, expected {kind!r}")
    return ref


def plan_preview(payload: Mapping[str, Any], settings: Settings) -> RenderPlan:
    """Validate what the schema cannot and lay out the timeline. Raises `InvalidAsset` for bad
    asset references, `PermanentRenderError` for anything else that no retry can fix."""
    del settings  # where assets may come from is checked when they are loaded
    request = payload.get("previewRequest")
    if not isinstance(request, Mapping):
        raise PermanentRenderError("previewRequest must be an object")
    options = request.get("options") or {}
    if not isinstance(options, Mapping):
        raise PermanentRenderError("previewRequest.options must be an object")

    width, height = parse_resolution(options.get("resolution", DEFAULT_RESOLUTION))
    fmt = options.get("format", DEFAULT_FORMAT)
    if fmt not in FORMATS:
        raise PermanentRenderError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    fps = options.get("fps", DEFAULT_FPS)
    if isinstance(fps, bool) or not isinstance(fps, int) or not 1 <= fps <= 60:
        raise PermanentRenderError(f"fps {fps!r} must be an integer from 1 to 60")
    include_captions = options.get("includeCaptions", True)
    if not isinstance(include_captions, bool):
        raise PermanentRenderError("includeCaptions must be true or false")

    assets = _assets(request.get("assets", []))
    raw_steps = request.get("steps", [])
    if not isinstance(raw_steps, list):
        raise PermanentRenderError("previewRequest.steps must be a list")
    if len(raw_steps) > MAX_STEPS:
        raise PermanentRenderError(f"{len(raw_steps)} steps exceed the maximum of {MAX_STEPS}")

    title = _text(request.get("title"), "title")
    description = _text(request.get("description"), "description")

    steps: list[PlannedStep] = []
    start_ms = 0
    for i, raw in enumerate(raw_steps):
        where = f"steps[{i}]"
        if not isinstance(raw, Mapping):
            raise PermanentRenderError(f"{where} must be an object")
        seconds = _number(raw.get("durationSec", DEFAULT_STEP_MS / 1000), f"{where}.durationSec")
        duration_ms = round(seconds * 1000)
        if not MIN_STEP_MS <= duration_ms <= MAX_STEP_MS:
            raise PermanentRenderError(f"{where}.durationSec {seconds:g} must be between 0.5 and 30 seconds")
        asset_ref = raw.get("asset")
        asset_id = None if asset_ref is None else _resolve(asset_ref, "image", f"{where}.asset", assets)
        end_ms = start_ms + duration_ms
        steps.append(PlannedStep(
            index=i, start_ms=start_ms, duration_ms=duration_ms,
            title=_text(raw.get("title"), f"{where}.title"), text=_text(raw.get("text"), f"{where}.text"),
            asset_id=asset_id, start_frame=frame_at(start_ms, fps), end_frame=frame_at(end_ms, fps),
        ))
        start_ms = end_ms
    if start_ms > MAX_TOTAL_MS:
        raise PermanentRenderError(
            f"total duration {start_ms / 1000:g} s exceeds the maximum of {MAX_TOTAL_MS // 1000} s")

    title_card = not steps
    if title_card:
        steps.append(PlannedStep(
            index=0, start_ms=0, duration_ms=TITLE_CARD_MS, title=title or "Untitled preview",
            text=description, asset_id=None, start_frame=0, end_frame=frame_at(TITLE_CARD_MS, fps),
        ))

    audio = request.get("audio") or {}
    if not isinstance(audio, Mapping):
        raise PermanentRenderError("previewRequest.audio must be an object")
    narration = None if audio.get("narration") is None else _resolve(
        audio["narration"], "audio", "audio.narration", assets)
    music = None if audio.get("music") is None else _resolve(audio["music"], "audio", "audio.music", assets)
    volume = _number(audio.get("musicVolume", DEFAULT_MUSIC_VOLUME), "audio.musicVolume")
    if not 0 <= volume <= 1:
        raise PermanentRenderError(f"audio.musicVolume {volume:g} must be between 0 and 1")

    used = {s.asset_id for s in steps if s.asset_id} | {a for a in (narration, music) if a}
    total_ms = steps[-1].end_ms
    return RenderPlan(
        job_id=str(payload.get("jobId", "")), project_id=str(payload.get("projectId", "")),
        request_id=str(payload.get("requestId", "")), dry_run=bool(payload.get("dryRun", False)),
        title=title, description=description, width=width, height=height, fps=fps, format=fmt,
        include_captions=include_captions, steps=tuple(steps), title_card=title_card,
        assets={k: v for k, v in assets.items() if k in used},
        narration=narration, music=music, music_volume=volume,
        total_ms=total_ms, total_frames=frame_at(total_ms, fps),
        unused_assets=tuple(sorted(set(assets) - used)),
    )
