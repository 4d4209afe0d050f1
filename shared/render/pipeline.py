"""render_preview: plan, load and check assets, compose and encode, write the side files."""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from shared.artifacts import layout
from shared.contract import JobRequest
from shared.render import outputs
from shared.render.assets import AssetLoader, decode_image
from shared.render.audio import AudioMix, PcmSource
from shared.render.encode import AUDIO_WAIT_SECONDS, Delivered, PreviewEncoder
from shared.render.frames import compose, letterbox
from shared.render.plan import PlannedStep, RenderPlan, plan_preview
from shared.settings import Settings

# Fitted step images kept in memory between the asset check and the encode. Past this budget
# images are decoded again when their step comes (slower, but memory stays bounded even for
# 100 distinct 1080p images).
IMAGE_CACHE_BYTES = 256 * 1024 * 1024
IMAGE_THREADS = 4
PREFETCH_STEPS = 4
MAX_LANES = 4  # video encoders at once (each single-threaded)

ProgressCallback = Callable[[int], None]
_DONE: Future[Any] = Future()  # stands for a picture handed to its encoder


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
    """Step images, fitted to the frame. Every image is fetched and decoded once as early as
    possible (so a bad asset fails the job at once, not when its step comes): before anything
    else in a dry run, alongside the encoding of the first steps in a render. Those that fit the
    memory budget are fitted and kept; the others are only decoded (the proof they load) and are
    loaded again shortly before their step, in background threads, while earlier steps encode.

    Thread-safe between one `preload` and one consumer of `in_step_order`.
    """

    def __init__(self, plan: RenderPlan, loader: AssetLoader) -> None:
        self.plan = plan
        self.loader = loader
        self.cost = plan.width * plan.height * 3  # a fitted image is always frame-sized RGB
        self.cache: dict[str, Image.Image] = {}
        self.budget = IMAGE_CACHE_BYTES  # less the cached and reserved images
        self.remaining_uses: dict[str, int] = {}
        for step in plan.steps:
            if step.asset_id is not None:
                self.remaining_uses[step.asset_id] = self.remaining_uses.get(step.asset_id, 0) + 1
        self.checked = 0  # images the preload has proved, in order
        self._passed: set[str] = set()
        self._failure: BaseException | None = None
        self._state = threading.Condition()

    def _load(self, asset_id: str) -> Image.Image:
        plan = self.plan
        return letterbox(self._decode(asset_id), plan.width, plan.height)

    def _decode(self, asset_id: str) -> Image.Image:
        plan = self.plan
        data = self.loader.fetch(plan.assets[asset_id])
        return decode_image(data, asset_id, (plan.width, plan.height))

    def _reserve(self) -> bool:
        with self._state:
            if self.cost > self.budget:
                return False
            self.budget -= self.cost
            return True

    def _unreserve(self) -> None:
        with self._state:
            self.budget += self.cost

    def _keep(self, asset_id: str, fitted: Image.Image) -> None:
        """Cache `fitted` if the budget allows (the caller holds the lock)."""
        if asset_id not in self.cache and self.cost <= self.budget:
            self.cache[asset_id] = fitted
            self.budget -= self.cost

    def _release(self, asset_id: str) -> None:
        if self.cache.pop(asset_id, None) is not None:
            self.budget += self.cost

    def preload(self, asset_ids: list[str], on_loaded: Callable[[int], None] | None = None,
                stop: threading.Event | None = None) -> None:
        """Fetch and decode every image, a few at a time in threads: Pillow's decoders and
        resampling run without the GIL, so this uses every core. Results are taken in order, so
        the first bad asset (in payload order) is the error reported (also to a consumer waiting
        in `in_step_order`), and at most `window` images wait in memory beyond the cache. Ends
        early, quietly, once `stop` is set."""
        if not asset_ids:
            return
        workers = _threads(len(asset_ids))
        window = workers * 2
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="render-assets") as pool:
            pending: deque[tuple[str, bool, Future[Image.Image]]] = deque()
            upcoming = iter(asset_ids)
            try:
                while stop is None or not stop.is_set():
                    while len(pending) < window and (asset_id := next(upcoming, None)) is not None:
                        keep = self._reserve()  # fitted only when it will be kept
                        pending.append((asset_id, keep, pool.submit(self._load if keep else self._decode, asset_id)))
                    if not pending:
                        break
                    asset_id, keep, future = pending.popleft()
                    try:
                        image = future.result()
                    except BaseException:
                        pending.appendleft((asset_id, keep, future))
                        raise
                    with self._state:
                        if keep:
                            self.cache[asset_id] = image
                        self._passed.add(asset_id)
                        self.checked += 1
                        self._state.notify_all()
                    if on_loaded is not None:
                        on_loaded(self.checked)
            except BaseException as exc:
                with self._state:
                    self._failure = exc
                    self._state.notify_all()
                raise
            finally:
                for _, keep, future in pending:
                    future.cancel()
                    if keep:
                        self._unreserve()

    def failure(self) -> BaseException | None:
        """The preload's error, once it has failed."""
        return self._failure

    def abandon(self) -> None:
        """Wake a consumer waiting on a preload that will not finish (the render is stopping)."""
        with self._state:
            if self._failure is None:
                self._failure = RuntimeError("render stopped")
            self._state.notify_all()

    def _checked_image(self, asset_id: str) -> Image.Image | None:
        """Once the preload has proved `asset_id`: its cached image, or None (load it again)."""
        with self._state:
            while asset_id not in self._passed:
                if self._failure is not None:
                    raise self._failure
                self._state.wait()
            return self.cache.get(asset_id)

    def _needs_reload(self, asset_id: str) -> bool:
        with self._state:
            return asset_id in self._passed and asset_id not in self.cache

    def in_step_order(self, pool: ThreadPoolExecutor) -> Generator[Image.Image | None, None, None]:
        """The fitted image of each step (None for steps without one), in timeline order, as
        soon as the preload has proved it. Images not cached are loaded on `pool` a few steps
        ahead of their use."""
        steps = self.plan.steps
        loading: dict[str, Future[Image.Image]] = {}
        for index, step in enumerate(steps):
            for ahead in steps[index:index + PREFETCH_STEPS]:
                wanted = ahead.asset_id
                if wanted is not None and wanted not in loading and self._needs_reload(wanted):
                    loading[wanted] = pool.submit(self._load, wanted)
            asset_id = step.asset_id
            if asset_id is None:
                yield None
                continue
            image = self._checked_image(asset_id)
            if image is None:
                future = loading.pop(asset_id, None)
                image = future.result() if future is not None else self._load(asset_id)
            with self._state:
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


def _lanes(plan: RenderPlan) -> int:
    """How many encoders share the video: one per CPU (up to MAX_LANES), fewer for few steps;
    one when a step is a single frame (H.264 forbids two keyframes in a row from encoders that
    number them each from zero)."""
    if plan.spec.name == "gif" or any(step.frames == 1 for step in plan.steps):
        return 1
    return max(1, min(MAX_LANES, os.cpu_count() or 1, sum(1 for step in plan.steps if step.frames > 0)))


def _encode(plan: RenderPlan, out_dir: Path, images: _Images, audio: dict[str, bytes],
            report: _Progress) -> Delivered:
    """Everything runs at once, mostly in C code that releases the GIL: the audio encode (it
    starts first), the check of every step image, the composing of the next steps' pictures on
    one thread, the video encoders on theirs (`_lanes`), the poster on the side; this thread
    muxes and reports progress."""
    spec = plan.spec
    final = out_dir / spec.filename
    partial = out_dir / f".{spec.filename}.part"
    sources: list[PcmSource] = []
    encoder: PreviewEncoder | None = None
    helpers = ThreadPoolExecutor(max_workers=3, thread_name_prefix="render-encode")  # audio, checks, poster
    composer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="render-compose")
    loaders = ThreadPoolExecutor(max_workers=_threads(len(plan.steps)), thread_name_prefix="render-assets")
    cancelled = threading.Event()
    step_images = images.in_step_order(loaders)
    image_ids = plan.image_asset_ids()
    lanes = _lanes(plan)
    steps_done = 0
    pictures: dict[int, Future[Any]] = {}
    composing = threading.Lock()
    poster: list[Future[None]] = []

    def poll() -> None:
        """During long work: the caller may stop the render; a bad image stops it at once."""
        failure = images.failure()
        if failure is not None:
            raise failure
        report(2 + 13 * images.checked / max(1, len(image_ids)) + 80 * steps_done / len(plan.steps))

    def step_done(index: int) -> None:
        nonlocal steps_done
        steps_done = index + 1
        poll()

    def prepare(step: PlannedStep) -> Any:
        assert encoder is not None
        frame = compose(plan.width, plan.height, next(step_images), step.title, step.text,
                        plan.include_captions, title_card=plan.title_card)
        if step.index == 0:
            poster.append(helpers.submit(frame.save, out_dir / layout.POSTER, format="PNG"))
        return encoder.picture(frame)

    def picture_of(index: int) -> Any:
        """Step `index`'s picture, composed in step order a few steps ahead of the encoders."""
        assert encoder is not None
        with composing:
            for ahead in range(len(pictures), min(len(plan.steps), index + lanes + 1)):
                pictures[ahead] = composer.submit(prepare, plan.steps[ahead])
            future = pictures[index]
        while True:
            try:
                picture = future.result(timeout=AUDIO_WAIT_SECONDS)
            except FutureTimeout:
                if encoder.stopping.is_set():
                    raise
                continue
            with composing:
                pictures[index] = _DONE  # the frame now belongs to its encoder
            return picture

    try:
        mix = None
        if plan.has_audio:
            narration = PcmSource(audio[plan.narration], plan.narration) if plan.narration else None
            sources += [narration] if narration else []
            music = PcmSource(audio[plan.music], plan.music) if plan.music else None
            sources += [music] if music else []
            mix = AudioMix(narration, music, plan.music_volume)
        encoder = PreviewEncoder(partial, plan, with_audio=mix is not None, waiting=poll, lanes=lanes)
        audio_job = helpers.submit(encoder.encode_audio, mix.read, plan.total_samples, cancelled) if mix else None
        checks = helpers.submit(images.preload, image_ids, None, cancelled)
        encoder.encode_video(picture_of, step_done)
        checks.result()
        encoder.finish()
        delivered = encoder.delivered()
        if audio_job is not None:
            audio_job.result()  # an audio failure (say, a corrupt stretch) surfaces here
        for job in poster:
            job.result()
    except BaseException:
        cancelled.set()
        images.abandon()  # wakes the composer if it waits on a check that will not come
        composer.shutdown(wait=True, cancel_futures=True)
        helpers.shutdown(wait=True, cancel_futures=True)  # before the container goes away
        if encoder is not None:
            encoder.abort()
        partial.unlink(missing_ok=True)
        (out_dir / layout.POSTER).unlink(missing_ok=True)  # a failed render leaves nothing
        raise
    finally:
        composer.shutdown(wait=True)
        step_images.close()
        loaders.shutdown(wait=True, cancel_futures=True)
        helpers.shutdown(wait=True)
        for source in sources:
            source.close()
    os.replace(partial, final)
    return delivered


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
    summary["delivered"] = None  # what the video file holds, read off the encoded stream
    if plan.dry_run:
        image_ids = plan.image_asset_ids()
        images.preload(image_ids, lambda done: report.span(2, 90, done, len(image_ids)))
        names = [layout.SUMMARY]
    else:  # images are checked inside, while the audio already encodes
        summary["delivered"] = _encode(plan, out_dir, images, audio, report).summary()
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
