"""Encode slides (and mixed audio) with PyAV.

MP4 and WebM are constant frame rate: every slot of the `fps` grid holds a frame, so players,
editors and `ffmpeg -ss` find the picture that is on screen at any time. A slideshow still has
very few distinct pictures, so each step's picture is converted to YUV once and that one frame
is sent to the encoder for each of the step's slots (new timestamp, same pixels): the encoder
codes the repeats as skipped blocks, which costs a small fraction of a real frame. Every step
starts on a keyframe (forced), and a long step gets one at least every KEYFRAME_SECONDS, so a
seek decodes little; steps are thus independent, and several encoders share them (see
PreviewEncoder). GIF stores a delay per frame natively, so each step is one frame with its
delay (the format's own way to hold a picture).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace
from PIL import Image

from shared.errors import RenderError
from shared.render.plan import AUDIO_RATE, PlannedStep, RenderPlan

# AVCOL_* values for BT.709 (primaries, transfer, matrix) and limited ("tv") range
_BT709 = 1
_RANGE_TV = 1

# Measured with a keyframe forced at every step and every other frame a repeat (the render
# bench's slides; 2 CPUs): x264 ultrafast is the fastest preset by 2x (superfast and veryfast
# analyse the repeats far more for 20% fewer bytes). Constant QP rather than CRF: CRF keeps
# refining a still picture over its repeats (about 3x the bytes for PSNR already past 53 dB)
# and needs x264's lookahead analysis of every frame, 35% of the time; at qp 21 the keyframes
# come out at about 53 dB on captioned slides. Where one encoder does it all (one CPU, or a
# single-frame step) its frame threads are 5% faster than slice threads.
# VP9 realtime at cpu-used 8 (its fastest); static-thresh lets it skip unchanged blocks
# without analysing them (20% faster on the repeats, same pictures), one tile column is the
# fastest at 720p and as fast as more at 1080p; crf 28 keeps keyframes at about 55 dB.
_VIDEO_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"preset": "ultrafast", "tune": "stillimage", "qp": "21"},
    "libvpx-vp9": {
        "deadline": "realtime", "cpu-used": "8", "row-mt": "1", "tile-columns": "0", "static-thresh": "1",
        "crf": "28", "b": "0", "lag-in-frames": "0",
    },
    "gif": {},
}
_THREAD_TYPE = {"libx264": "FRAME"}
KEYFRAME_SECONDS = 10  # the longest stretch without a keyframe inside a step
_CONTAINER_OPTIONS: dict[str, dict[str, str]] = {
    # faststart moves the index to the front so browsers can play while downloading;
    # bitexact leaves out library version strings so identical input gives identical bytes
    "mp4": {"movflags": "+faststart", "fflags": "+bitexact"},
    "webm": {"fflags": "+bitexact"},
    "gif": {"loop": "0"},
}
_AUDIO_BITRATE = {"aac": 128_000, "libopus": 96_000}
GIF_TIME_BASE = Fraction(1, 100)  # GIF delays are in centiseconds
AUDIO_CHUNK = AUDIO_RATE // 2
AUDIO_WAIT_SECONDS = 0.5


def to_yuv(image: Image.Image) -> av.VideoFrame:
    frame = av.VideoFrame.from_image(image)
    return frame.reformat(format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG)


def to_pal8(image: Image.Image) -> av.VideoFrame:
    """Quantise to a per-frame 256-colour palette (Pillow's octree is fast and good enough for
    slides) and wrap it as a PAL8 frame for the GIF encoder."""
    indexed = image.quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    palette = np.zeros((256, 4), np.uint8)
    rgb = np.frombuffer(bytes(indexed.getpalette() or []), np.uint8).reshape(-1, 3)[:256]
    palette[: len(rgb), 1:] = rgb
    palette[:, 0] = 255  # ARGB: opaque
    return av.VideoFrame.from_ndarray((np.asarray(indexed), palette), format="pal8")  # type: ignore[arg-type]


@dataclass(frozen=True)
class Delivered:
    """What the video stream of a finished file holds, read off the packets as they were muxed
    (not what was asked for): reported in preview.json."""

    frames: int
    frame_rate: int | None  # frames per second of a constant-rate stream; None for GIF
    duration: Fraction  # seconds: the last frame's end
    keyframe_times: tuple[Fraction, ...]  # MP4/WebM: where a decoder can start
    frame_delays: tuple[int, ...]  # GIF: each frame's delay in centiseconds

    def summary(self) -> dict[str, Any]:
        if self.frame_rate is None:
            return {
                "constantFrameRate": False,
                "frameRate": None,
                "frames": self.frames,
                "frameDelaysCs": list(self.frame_delays),
                "durationSec": _seconds(self.duration),
            }
        return {
            "constantFrameRate": True,
            "frameRate": self.frame_rate,
            "frames": self.frames,
            "durationSec": _seconds(self.duration),
            "keyframes": len(self.keyframe_times),
            "keyframeTimesSec": [_seconds(t) for t in self.keyframe_times],
        }


def _seconds(value: Fraction) -> float:
    return round(float(value), 6)


class PreviewEncoder:
    """Writes one preview file: `encode_video` once, then `finish` (or `abort`).

    MP4 and WebM video is encoded on `lanes` threads at once, each with an encoder of its own
    taking every `lanes`-th step: every step starts on a keyframe, so its frames depend on no
    other step's, and the steps' packets are muxed in timeline order into one stream (one
    encoder's headers serve all: they are checked to be the same). On repeated frames one
    single-threaded encoder per CPU does far more than one encoder's own threads (their
    synchronisation costs more than such frames take to code). The assignment of steps to
    lanes is fixed, so the bytes do not depend on thread timing.

    Audio, when present, must be encoded concurrently on another thread with `encode_audio`:
    each stream has its own codec context, and only the `encode_video` thread touches the
    container. Audio packets reach it through a queue and are muxed strictly in time order
    with the video (a video packet waits for the audio up to its timestamp), so the file is
    well interleaved and byte-identical from run to run whatever the thread timing.
    """

    def __init__(self, path: Path, plan: RenderPlan, with_audio: bool,
                 waiting: Callable[[], None] | None = None, lanes: int = 1) -> None:
        self.plan = plan
        # called about every AUDIO_WAIT_SECONDS while the muxer waits (on video or audio)
        self.waiting = waiting
        spec = plan.spec
        self.is_gif = spec.name == "gif"
        lanes = 1 if self.is_gif else max(1, lanes)
        self.container: Any = av.open(str(path), mode="w", format=spec.name,
                                      options=_CONTAINER_OPTIONS[spec.name])
        self.lanes: list[Any] = []
        try:
            self.video = self._add_video(spec.video_encoder, threads=1 if lanes > 1 else 0)
            self.audio = self._add_audio(spec.audio_encoder) if with_audio and spec.audio_encoder else None
            # open both encoders and write the header now, before any thread starts encoding
            self.container.start_encoding()
            self.lanes = [self.video.codec_context, *(self._open_lane(spec.video_encoder) for _ in range(lanes - 1))]
        except BaseException:
            self.container.close()
            raise
        self.stopping = threading.Event()  # set when the video encode is abandoned
        self._gif_delays: dict[int, int] = {}  # pts -> delay of each GIF frame sent
        self._frames = 0
        self._last = (0, 0)  # pts and duration of the last video packet
        self._keyframes: list[int] = []  # pts
        self._delays: list[int] = []  # GIF: centiseconds
        self._audio_packets: queue.SimpleQueue[av.Packet | None] = queue.SimpleQueue()  # None: the end
        self._audio_next: av.Packet | None = None
        self._audio_done = self.audio is None

    def _add_video(self, encoder: str, threads: int) -> Any:
        plan = self.plan
        if self.is_gif:
            stream = self.container.add_stream(encoder, rate=100)
            stream.pix_fmt = "pal8"
            stream.codec_context.time_base = GIF_TIME_BASE
        else:
            stream = self.container.add_stream(encoder, rate=plan.fps, options=dict(_VIDEO_OPTIONS[encoder]))
            self._configure(stream.codec_context, encoder, threads)
        stream.width = plan.width
        stream.height = plan.height
        return stream

    def _configure(self, ctx: Any, encoder: str, threads: int) -> None:
        plan = self.plan
        ctx.width = plan.width
        ctx.height = plan.height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = Fraction(1, plan.fps)
        ctx.framerate = Fraction(plan.fps)
        ctx.max_b_frames = 0  # no reordering: packets come out in timeline order
        ctx.gop_size = KEYFRAME_SECONDS * plan.fps
        ctx.thread_count = threads  # 0: the encoder's own choice
        if encoder in _THREAD_TYPE:
            ctx.thread_type = _THREAD_TYPE[encoder]
        ctx.color_primaries = _BT709
        ctx.color_trc = _BT709
        ctx.colorspace = _BT709
        ctx.color_range = _RANGE_TV

    def _open_lane(self, encoder: str) -> Any:
        ctx = av.CodecContext.create(encoder, "w")
        self._configure(ctx, encoder, threads=1)
        ctx.flags = self.video.codec_context.flags  # the container's: global headers for MP4
        ctx.options = dict(_VIDEO_OPTIONS[encoder])
        ctx.open()
        if ctx.extradata != self.video.codec_context.extradata:
            raise RenderError(f"{encoder} made different stream headers for the same settings")
        return ctx

    def _add_audio(self, encoder: str) -> Any:
        stream = self.container.add_stream(encoder, rate=AUDIO_RATE, layout="stereo")
        stream.bit_rate = _AUDIO_BITRATE.get(encoder, 128_000)
        return stream

    def picture(self, image: Image.Image) -> av.VideoFrame:
        """`image` as the encoder takes it (YUV, or a palette for GIF): once per step, on any
        thread."""
        return to_pal8(image) if self.is_gif else to_yuv(image)

    def encode_video(self, picture_of: Callable[[int], av.VideoFrame],
                     step_done: Callable[[int], None] | None = None) -> None:
        """Encode every step of the plan: `picture_of(index)` gives the step's picture (from
        `picture`); it is called on the lane threads, in step order within a lane, and should
        give up (raise) once `stopping` is set. `step_done(index)` follows the muxing of each
        step, on this thread; `waiting` is called every second of video muxed."""
        steps = [step for step in self.plan.steps if step.end_frame > step.start_frame]
        if self.is_gif:
            for step in steps:
                self._gif_step(picture_of(step.index), step.start_frame, step.end_frame)
                if step_done is not None:
                    step_done(step.index)
            self._encode_gif(None)
            return
        count = len(self.lanes)
        outputs: list[queue.SimpleQueue[av.Packet | BaseException | None]] = [queue.SimpleQueue() for _ in range(count)]
        threads = [threading.Thread(target=self._lane, name=f"render-video-{k}", daemon=True,
                                    args=(self.lanes[k], steps[k::count], picture_of, outputs[k]))
                   for k in range(count)]
        for thread in threads:
            thread.start()
        try:
            fps = self.plan.fps
            for position, step in enumerate(steps):
                output = outputs[position % count]
                for expected in range(step.start_frame, step.end_frame):
                    self._mux_video(self._next_packet(output), expected)
                    if self.waiting is not None and (expected - step.start_frame) % fps == fps - 1:
                        self.waiting()  # every second of video: a long step can be stopped too
                if step_done is not None:
                    step_done(step.index)
            for output in outputs:  # each encoder ends with its last frame's packet
                if self._next_packet(output) is not None:
                    raise RenderError("a video encoder made more packets than frames")
        except BaseException:
            self.stopping.set()
            raise
        finally:
            for thread in threads:
                thread.join()

    def _lane(self, ctx: Any, steps: list[PlannedStep], picture_of: Callable[[int], av.VideoFrame],
              output: queue.SimpleQueue[av.Packet | BaseException | None]) -> None:
        """One encoder's share of the steps, its packets into `output`; then None (the end), or
        the error that stopped it."""
        try:
            time_base = ctx.time_base
            for step in steps:
                picture = picture_of(step.index)
                # the encoder keeps its own reference to each frame it is sent (pixels and
                # fields), so the one frame is stamped again for every slot: only pts changes
                picture.time_base = time_base
                picture.duration = 1
                picture.pts = step.start_frame
                picture.pict_type = av.video.frame.PictureType.I  # a keyframe at every step start
                for packet in ctx.encode(picture):
                    output.put(packet)
                picture.pict_type = av.video.frame.PictureType.NONE  # the rest: the encoder's choice
                for index in range(step.start_frame + 1, step.end_frame):
                    if self.stopping.is_set():
                        return
                    picture.pts = index
                    for packet in ctx.encode(picture):
                        output.put(packet)
            for packet in ctx.encode(None):
                output.put(packet)
            output.put(None)
        except BaseException as exc:
            output.put(exc)

    def _next_packet(self, output: queue.SimpleQueue[av.Packet | BaseException | None]) -> av.Packet | None:
        while True:
            try:
                item = output.get(timeout=AUDIO_WAIT_SECONDS)
            except queue.Empty:
                if self.waiting is not None:
                    self.waiting()  # lets the caller stop a long wait (lost lease, shutdown)
                continue
            if isinstance(item, BaseException):
                raise item
            return item

    def _mux_video(self, packet: av.Packet | None, expected: int) -> None:
        if packet is None or packet.pts != expected:
            raise RenderError(f"video packets out of order: {None if packet is None else packet.pts}, "
                              f"expected {expected}")
        if not packet.duration:
            packet.duration = 1  # one slot: the muxer needs it for the last sample
        packet.stream = self.video
        self._count(packet)
        if not self._audio_done:
            self._mux_audio_until(_packet_time(packet))
        self.container.mux(packet)

    def _gif_step(self, picture: av.VideoFrame, start_frame: int, end_frame: int) -> None:
        fps = self.plan.fps
        start, end = ((index * 200 + fps) // (2 * fps) for index in (start_frame, end_frame))  # centiseconds
        if end > start:  # shorter than one centisecond: nothing can show it
            self._gif_delays[start] = end - start
            picture.pts, picture.time_base = start, GIF_TIME_BASE
            picture.pict_type = av.video.frame.PictureType.I
            self._encode_gif(picture)

    def _encode_gif(self, frame: av.VideoFrame | None) -> None:
        for packet in self.video.encode(frame):
            # the GIF encoder leaves the duration unset; the muxer writes it as the delay
            packet.duration = self._gif_delays.get(packet.pts, packet.duration)
            self._delays.append(packet.duration)
            self._count(packet)
            self.container.mux(packet)

    def _count(self, packet: av.Packet) -> None:
        pts = packet.pts or 0
        if packet.is_keyframe and not self.is_gif:
            self._keyframes.append(pts)
        self._frames += 1
        self._last = (pts, packet.duration or 0)

    def delivered(self) -> Delivered:
        """What the file holds, counted off the video packets; complete once `finish` ran."""
        time_base = self.video.codec_context.time_base
        end = Fraction(sum(self._last)) * time_base if self._frames else Fraction(0)
        return Delivered(frames=self._frames, frame_rate=None if self.is_gif else self.plan.fps, duration=end,
                         keyframe_times=tuple(Fraction(pts) * time_base for pts in self._keyframes),
                         frame_delays=tuple(self._delays))

    def _mux_audio_until(self, limit: Fraction | None) -> None:
        """Mux the audio packets earlier than `limit` (all of them when None), waiting for the
        audio thread to produce them."""
        while not self._audio_done:
            if self._audio_next is None:
                try:
                    self._audio_next = self._audio_packets.get(timeout=AUDIO_WAIT_SECONDS)
                except queue.Empty:
                    if self.waiting is not None:
                        self.waiting()  # lets the caller abort a long wait (lost lease, shutdown)
                    continue
                if self._audio_next is None:
                    self._audio_done = True
                    return
            if limit is not None and _packet_time(self._audio_next) >= limit:
                return
            self.container.mux(self._audio_next)
            self._audio_next = None

    def encode_audio(self, read: Callable[[int], np.ndarray], total_samples: int,
                     cancelled: threading.Event | None = None) -> None:
        """Encode `total_samples` of interleaved stereo float32 at 48 kHz pulled from `read`.
        Runs on its own thread (PyAV encodes without the GIL) alongside the video."""
        if self.audio is None:
            return
        try:
            position = 0
            while position < total_samples:
                if cancelled is not None and cancelled.is_set():
                    return
                count = min(AUDIO_CHUNK, total_samples - position)
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(read(count), np.float32).reshape(1, -1), format="flt", layout="stereo")
                frame.sample_rate = AUDIO_RATE
                frame.pts = position
                frame.time_base = Fraction(1, AUDIO_RATE)
                for packet in self.audio.encode(frame):
                    self._audio_packets.put(packet)
                position += count
            for packet in self.audio.encode(None):
                self._audio_packets.put(packet)
        finally:
            self._audio_packets.put(None)  # always: the muxing thread may be waiting for it

    def finish(self) -> None:
        """Write the rest of the audio (waiting for the audio thread to end), close the file."""
        self._mux_audio_until(None)
        self.container.close()

    def abort(self) -> None:
        # the file is discarded anyway; the original error is what matters
        self.stopping.set()
        with contextlib.suppress(av.FFmpegError, OSError, ValueError):
            self.container.close()



def _packet_time(packet: av.Packet) -> Fraction:
    stamp = packet.dts if packet.dts is not None else packet.pts
    return Fraction(stamp or 0) * packet.time_base

