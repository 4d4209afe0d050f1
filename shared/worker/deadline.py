"""How long a job may take: the Lambda worker's estimate of a render (never start what cannot
finish), and each render's deadline (past it the render is stopped and its job failed).

A deadline is a few times the estimate, scaled by the pixels per second the job encodes, never
under a floor that leaves room for fetching assets, never over PREVIEW_RENDER_DEADLINE_SECONDS.
"""

from __future__ import annotations

import math
from typing import Any

from shared.contract import JobRequest
from shared.errors import InvalidPayload
from shared.settings import Settings

# A dry run only plans and checks its assets.
DRY_RUN_MS = 2000
# Start-up of a render (imports, opening the encoder) before the first frame.
RENDER_START_MS = 3000
# What PREVIEW_RENDER_MS_PER_VIDEO_SECOND is a second of: 1280x720 at 30 frames a second.
REFERENCE_PIXEL_RATE = 1280 * 720 * 30
# A render may take this many times its estimate (itself conservative: a 1080p second of video
# took about 50 ms on 2 shared cores, against an estimate of 500 ms for 720p)...
DEADLINE_FACTOR = 3
# ...and never less than this: room for the slowest S3 asset read its timeouts allow (about
# 165 s, see shared/render/assets.py).
DEADLINE_FLOOR_S = 180
# Past its deadline a render gets this long to stop by itself (at its next progress report)
# before the lease renewer gives up on it and records the failure.
OVERRUN_GRACE_S = 2.0


def read_request(payload: dict[str, Any]) -> JobRequest | None:
    """The stored job as the renderer reads it; None when it breaks the contract (such a job
    fails at once when processed, with the reason)."""
    try:
        return JobRequest.from_payload(payload)
    except InvalidPayload:
        return None


def request_estimate_ms(request: JobRequest | None, ms_per_video_second: int) -> int:
    """A conservative render budget: fixed start-up plus a cost per second of video."""
    if request is None or request.dry_run:
        return DRY_RUN_MS
    return int(RENDER_START_MS + request.video_ms / 1000 * ms_per_video_second)


def estimate_ms(payload: dict[str, Any], ms_per_video_second: int) -> int:
    return request_estimate_ms(read_request(payload), ms_per_video_second)


def deadline_for(request: JobRequest | None, settings: Settings) -> int:
    """Whole seconds the job's render may take (from the claim to the last file written)."""
    estimate_s = request_estimate_ms(request, settings.render_ms_per_video_second) / 1000
    if request is not None and not request.dry_run:
        estimate_s *= max(1.0, request.width * request.height * request.fps / REFERENCE_PIXEL_RATE)
    own = max(DEADLINE_FLOOR_S, math.ceil(DEADLINE_FACTOR * estimate_s))
    return min(settings.render_deadline_seconds, own)


def render_deadline_s(payload: dict[str, Any], settings: Settings) -> int:
    return deadline_for(read_request(payload), settings)


def deadline_reason(seconds: float) -> str:
    """The failure reason a job records when its render ran out of time."""
    return f"render deadline exceeded ({seconds:g}s)"
