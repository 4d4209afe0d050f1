"""render_preview: plan, load and check assets, compose and encode, write the side files."""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from shared.artifacts import layout
from shared.contract import JobRequest
from shared.render import outputs
from shared.render.assets import AssetLoader, decode_image
from shared.render.audio import AudioMix, PcmSource
from shared.render.encode import PreviewEncoder
from shared.render.frames import compose, letterbox
from shared.render.plan import RenderPlan, plan_preview
from shared.settings import Settings

# Fitted step images kept in memory between the asset check and the encode. Past this budget
# images are decoded again when their step comes (slower, but memory stays bounded even for
# 100 distinct 1080p images).
IMAGE_CACHE_BYTES = 256 * 1024 * 1024
IMAGE_THREADS = 4
PREFETCH_STEPS = 4

ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class RenderResult:
    out_dir: Path
    files: list[str]
    format: str
    duration: float
    width: int
    height: int
    fps: int
    video_codec: str
    audio_codec: str | None
    has_audio: bool
    dry_run: bool
    summary: dict[str, Any] = field(repr=False)
    manifest: dict[str, Any] = field(repr=False)

    @property
    def resolution(self) -> str:
        return f"{self.width}x{self.height}"


class _Progress:
    """Forwards percentages that never go down, at least once per step: the callback is also
    how the caller stops a render (it raises when the job's lease is lost or the worker shuts
    down), so it must be consulted regularly even when the number has not moved. Exceptions
    from it propagate."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self.callback = callback
        self.last = -1

    def __call__(self, pct: float) -> None:
        self.last = max(self.last, max(0, min(100, int(pct))))
        if self.callback is not None:
            self.callback(self.last)

    def tick(self) -> None:
        """Consult the callback again without new progress (during long waits)."""
        self(self.last)

    def span(self, start: float, end: float, done: int, total: int) -> None:
        self(start + (end - start) * done / max(1, total))


def _threads(jobs: int) -> int:
    return max(1, min(IMAGE_THREADS, os.cpu_count() or 1, jobs))


class _Images:
    """Step images, fitted to the frame. All are loaded once up front (so a bad asset fails the
    job before any encoding) and kept while they fit the memory budget; the rest are loaded
    again shortly before their step, in background threads, while earlier steps encode."""

    def __init__(self, plan: RenderPlan, loader: AssetLoader) -> None:
        self.plan = plan
        self.loader = loader
        self.cache: dict[str, Image.Image] = {}
        self.budget = IMAGE_CACHE_BYTES
        self.remaining_uses: dict[str, int] = {}
        for step in plan.steps:
            if step.asset_id is not None:
                self.remaining_uses[step.asset_id] = self.remaining_uses.get(step.asset_id, 0) + 1

    def _load(self, asset_id: str) -> Image.Image:
        plan = self.plan
        data = self.loader.fetch(plan.assets[asset_id])
        image = decode_image(data, asset_id, (plan.width, plan.height))
        return letterbox(image, plan.width, plan.height)

    @staticmethod
    def _cost(image: Image.Image) -> int:
        return image.width * image.height * 3

    def _keep(self, asset_id: str, fitted: Image.Image) -> None:
        if asset_id not in self.cache and self._cost(fitted) <= self.budget:
            self.cache[asset_id] = fitted
            self.budget -= self._cost(fitted)

    def _release(self, asset_id: str) -> None:
        image = self.cache.pop(asset_id, None)
        if image is not None:
            self.budget += self._cost(image)

    def preload(self, asset_ids: list[str], on_loaded: Callable[[int], None]) -> None:
        """Fetch, decode and fit every image, a few at a time in threads: Pillow's decoders and
        resampling run without the GIL, so this uses every core. Results are consumed in order,
        so the first bad asset (in payload order) is the error reported, and at most `window`
        fitted images wait in memory beyond the cache."""
        if not asset_ids:
            return
        workers = _threads(len(asset_ids))
        window = workers * 2
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="render-assets") as pool:
            pending: deque[tuple[str, Future[Image.Image]]] = deque()
            upcoming = iter(asset_ids)
            done = 0
            try:
                while True:
                    while len(pending) < window and (asset_id := next(upcoming, None)) is not None:
                        pending.append((asset_id, pool.submit(self._load, asset_id)))
                    if not pending:
                        break
                    asset_id, future = pending.popleft()
                    self._keep(asset_id, future.result())
                    done += 1
                    on_loaded(done)
            except BaseException:
                for _, future in pending:
                    future.cancel()
                raise

    def in_step_order(self, pool: ThreadPoolExecutor) -> Generator[Image.Image | None, None, None]:
        """The fitted image of each step (None for steps without one), in timeline order.
        Images not cached are loaded on `pool` a few steps ahead of their use."""
        steps = self.plan.steps
        loading: dict[str, Future[Image.Image]] = {}
        for index, step in enumerate(steps):
            for ahead in steps[index:index + PREFETCH_STEPS]:
                wanted = ahead.asset_id
                if wanted is not None and wanted not in self.cache and wanted not in loading:
                    loading[wanted] = pool.submit(self._load, wanted)
            asset_id = step.asset_id
            if asset_id is None:
                yield None
                continue
            image = self.cache.get(asset_id)
            if image is None:
                image = loading.pop(asset_id).result()
            self.remaining_uses[asset_id] -= 1
            if self.remaining_uses[asset_id] > 0:
                self._keep(asset_id, image)  # room may have freed up since the preload
            else:
                self._release(asset_id)
            yield image


def _check_audio(plan: RenderPlan, loader: AssetLoader) -> dict[str, bytes]:
    """Fetch narration and music and prove they decode; returns their bytes for the mix."""
    audio: dict[str, bytes] = {}
    for asset_id in plan.audio_asset_ids():
        data = loader.fetch(plan.assets[asset_id])
        source = PcmSource(data, asset_id)
        try:
            # a dry run promises the job will render, so it decodes the whole usable part;
            # a real render decodes it all during the mix anyway and only probes here
            source.check(plan.total_samples if plan.dry_run else None)
        finally:
            source.close()
        audio[asset_id] = data
    return audio


def _encode(plan: RenderPlan, out_dir: Path, images: _Images, audio: dict[str, bytes],
            report: _Progress) -> None:
    """Slides are composed and encoded on this thread while helper threads encode the audio
    and write the poster: all of them spend their time in C code that releases the GIL. The
    audio (the slowest part for long previews: AAC runs ~100x real time) starts first, while
    the step images are still being loaded and checked."""
    spec = plan.spec
    final = out_dir / spec.filename
    partial = out_dir / f".{spec.filename}.part"
    sources: list[PcmSource] = []
    encoder: PreviewEncoder | None = None
    helpers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="render-encode")
    loaders = ThreadPoolExecutor(max_workers=_threads(len(plan.steps)), thread_name_prefix="render-assets")
    cancelled = threading.Event()
    step_images = images.in_step_order(loaders)
    try:
        mix = None
        if plan.has_audio:
            narration = PcmSource(audio[plan.narration], plan.narration) if plan.narration else None
            sources += [narration] if narration else []
            music = PcmSource(audio[plan.music], plan.music) if plan.music else None
            sources += [music] if music else []
            mix = AudioMix(narration, music, plan.music_volume)
        encoder = PreviewEncoder(partial, plan, with_audio=mix is not None, waiting=report.tick)
        audio_job = helpers.submit(encoder.encode_audio, mix.read, plan.total_samples, cancelled) if mix else None
        image_ids = plan.image_asset_ids()
        images.preload(image_ids, lambda done: report.span(2, 15, done, len(image_ids)))
        poster: Future[None] | None = None
        last = len(plan.steps) - 1
        for step, image in zip(plan.steps, step_images, strict=True):
            frame = compose(plan.width, plan.height, image, step.title, step.text,
                            plan.include_captions, title_card=plan.title_card)
            if step.index == 0:
                poster = helpers.submit(frame.save, out_dir / layout.POSTER, format="PNG")
            encoder.add_step(frame, step.start_frame, step.end_frame, is_last=step.index == last)
            report.span(15, 95, step.index + 1, len(plan.steps))
        encoder.finish()
        if audio_job is not None:
            audio_job.result()  # an audio failure (say, a corrupt stretch) surfaces here
        if poster is not None:
            poster.result()
    except BaseException:
        cancelled.set()
        helpers.shutdown(wait=True, cancel_futures=True)  # before the container goes away
        if encoder is not None:
            encoder.abort()
        partial.unlink(missing_ok=True)
        raise
    finally:
        step_images.close()
        loaders.shutdown(wait=True, cancel_futures=True)
        helpers.shutdown(wait=True)
        for source in sources:
            source.close()
    os.replace(partial, final)


def render_preview(request: JobRequest, out_dir: Path, settings: Settings,
                   progress: ProgressCallback | None = None) -> RenderResult:
    """Render the preview `request` describes into `out_dir`.

    Writes preview.<format>, poster.png, captions.vtt, preview.json and container.json; a dry
    run writes only the two JSON files after checking every referenced asset decodes.
    Raises InvalidAsset / PermanentRenderError (retrying cannot help) or TransientRenderError.
    """
    report = _Progress(progress)
    report(0)
    plan = plan_preview(request)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs.remove_stale_outputs(out_dir)

    loader = AssetLoader(settings)
    images = _Images(plan, loader)
    audio = _check_audio(plan, loader)
    report(2)

    summary = plan.to_summary()
    if plan.dry_run:
        image_ids = plan.image_asset_ids()
        images.preload(image_ids, lambda done: report.span(2, 90, done, len(image_ids)))
        names = [layout.SUMMARY]
    else:  # images are checked inside, while the audio already encodes
        _encode(plan, out_dir, images, audio, report)
        outputs.write_text(out_dir / layout.CAPTIONS, outputs.captions_vtt(plan))
        names = [plan.spec.filename, layout.POSTER, layout.CAPTIONS, layout.SUMMARY]
    outputs.write_json(out_dir / layout.SUMMARY, summary)
    manifest = layout.write_manifest(out_dir, plan.project_id, plan.job_id, names)
    report(100)
    return RenderResult(
        out_dir=out_dir,
        files=sorted([*names, layout.MANIFEST]),
        format=plan.format,
        duration=plan.duration,
        width=plan.width,
        height=plan.height,
        fps=plan.fps,
        video_codec=plan.spec.video_codec,
        audio_codec=summary["audioCodec"],
        has_audio=plan.has_audio,
        dry_run=plan.dry_run,
        summary=summary,
        manifest=manifest,
    )
