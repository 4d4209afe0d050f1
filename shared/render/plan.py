"""Lay out a job's timeline: each step on the frame grid, the title card when there are no
steps, the assets it uses. The request is already valid (`shared.contract`): nothing is
checked here. Free of media libraries, so it stays cheap to import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.artifacts import layout
from shared.contract import Asset, JobRequest

AUDIO_RATE = 48_000


@dataclass(frozen=True)
class FormatSpec:
    """How one output format is encoded; `*_codec` are the names reported in preview.json."""

    name: str
    video_encoder: str
    video_codec: str
    audio_encoder: str | None
    audio_codec: str | None

    @property
    def filename(self) -> str:
        return layout.video_name(self.name)


FORMATS: dict[str, FormatSpec] = {
    "mp4": FormatSpec("mp4", "libx264", "h264", "aac", "aac"),
    "webm": FormatSpec("webm", "libvpx-vp9", "vp9", "libopus", "opus"),
    "gif": FormatSpec("gif", "gif", "gif", None, None),
}


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
    assets: Mapping[str, Asset]
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
                "poster": layout.POSTER,
                "captions": layout.CAPTIONS,
            },
        }


def frame_at(ms: int, fps: int) -> int:
    """Index of the frame boundary nearest to `ms` (half rounds up, integer maths only)."""
    return (ms * fps * 2 + 1000) // 2000


def plan_preview(request: JobRequest) -> RenderPlan:
    """The timeline of a valid request: steps at exact milliseconds (captions) and on the
    `fps` grid (video), or one title card from the title and description."""
    fps = request.fps
    steps: list[PlannedStep] = []
    start_ms = 0
    for step in request.steps:
        end_ms = start_ms + step.duration_ms
        steps.append(PlannedStep(
            index=step.index, start_ms=start_ms, duration_ms=step.duration_ms, title=step.title, text=step.text,
            asset_id=step.asset, start_frame=frame_at(start_ms, fps), end_frame=frame_at(end_ms, fps),
        ))
        start_ms = end_ms
    title_card = not steps
    if title_card:
        steps.append(PlannedStep(
            index=0, start_ms=0, duration_ms=request.video_ms, title=request.title or "Untitled preview",
            text=request.description, asset_id=None, start_frame=0, end_frame=frame_at(request.video_ms, fps),
        ))
    used = {s.asset_id for s in steps if s.asset_id} | {a for a in (request.narration, request.music) if a}
    total_ms = steps[-1].end_ms
    return RenderPlan(
        job_id=request.job_id, project_id=request.project_id, request_id=request.request_id,
        dry_run=request.dry_run, title=request.title, description=request.description,
        width=request.width, height=request.height, fps=fps, format=request.format,
        include_captions=request.include_captions, steps=tuple(steps), title_card=title_card,
        assets={k: v for k, v in request.assets.items() if k in used},
        narration=request.narration, music=request.music, music_volume=request.music_volume,
        total_ms=total_ms, total_frames=frame_at(total_ms, fps),
        unused_assets=tuple(sorted(set(request.assets) - used)),
    )
