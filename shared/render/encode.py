"""Encode slides (and mixed audio) with PyAV.

A slideshow has very few distinct pictures, so each step is encoded as ONE frame whose
timestamp is the step start and whose duration is the step length (a variable-frame-rate
stream on the `fps` grid), instead of re-encoding the same picture `fps` times a second. For
MP4/WebM the last picture is repeated on the final frame slot so the stream's last timestamp
(which some players use as the duration) lands within one frame of the real end.
GIF stores a delay per frame natively, so each step is just one frame with its delay.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace
from PIL import Image

from shared.render.plan import AUDIO_RATE, RenderPlan

# AVCOL_* values for BT.709 (primaries, transfer, matrix) and limited ("tv") range
_BT709 = 1
_RANGE_TV = 1

# Measured on 1280x720 slides (bench/render_bench.py): with a keyframe forced at every step,
# x264 ultrafast + stillimage is the fastest preset AND gives files no larger than veryfast at
# the same quality (every step is a scene change anyway). VP9 in realtime mode over-spends on
# forced keyframes (3x the bytes for +0.7 dB), so it picks its own and uses a lower CRF instead.
_VIDEO_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"preset": "ultrafast", "tune": "stillimage", "crf": "21"},
    "libvpx-vp9": {
        "deadline": "realtime", "cpu-used": "8", "row-mt": "1", "tile-columns": "2",
        "crf": "24", "b": "0", "lag-in-frames": "0",
    },
    "gif": {},
}
_FORCE_KEYFRAMES = {"libx264": True, "libvpx-vp9": False, "gif": True}
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


class PreviewEncoder:
    """Writes one preview file. Call `add_step` in timeline order, then `finish` (or `abort`).

    Audio, when present, must be encoded concurrently on another thread with `encode_audio`:
    each stream has its own codec context, and only the `add_step` thread touches the
    container. Audio packets reach it through a queue and are muxed strictly in time order
    with the video (a video packet waits for the audio up to its timestamp), so the file is
    well interleaved and byte-identical from run to run whatever the thread timing.
    """

    def __init__(self, path: Path, plan: RenderPlan, with_audio: bool,
                 waiting: Callable[[], None] | None = None) -> None:
        self.plan = plan
        self.waiting = waiting  # called about every AUDIO_WAIT_SECONDS while the audio lags
        spec = plan.spec
        self.is_gif = spec.name == "gif"
        self.force_keyframes = _FORCE_KEYFRAMES[spec.video_encoder]
        self.container: Any = av.open(str(path), mode="w", format=spec.name,
                                      options=_CONTAINER_OPTIONS[spec.name])
        try:
            self.video = self._add_video(spec.video_encoder)
            self.audio = self._add_audio(spec.audio_encoder) if with_audio and spec.audio_encoder else None
            # open both encoders and write the header now, before any thread starts encoding
            self.container.start_encoding()
        except BaseException:
            self.container.close()
            raise
        self._durations: dict[int, int] = {}
        self._audio_packets: queue.SimpleQueue[av.Packet | None] = queue.SimpleQueue()  # None: the end
        self._audio_next: av.Packet | None = None
        self._audio_done = self.audio is None

    def _add_video(self, encoder: str) -> Any:
        plan = self.plan
        if self.is_gif:
            stream = self.container.add_stream(encoder, rate=100)
            stream.pix_fmt = "pal8"
            stream.codec_context.time_base = GIF_TIME_BASE
        else:
            stream = self.container.add_stream(encoder, rate=plan.fps, options=dict(_VIDEO_OPTIONS[encoder]))
            stream.pix_fmt = "yuv420p"
            ctx = stream.codec_context
            ctx.time_base = Fraction(1, plan.fps)
            ctx.max_b_frames = 0  # no reordering: pts map 1:1 to the durations we assign
            ctx.color_primaries = _BT709
            ctx.color_trc = _BT709
            ctx.colorspace = _BT709
            ctx.color_range = _RANGE_TV
        stream.width = plan.width
        stream.height = plan.height
        return stream

    def _add_audio(self, encoder: str) -> Any:
        stream = self.container.add_stream(encoder, rate=AUDIO_RATE, layout="stereo")
        stream.bit_rate = _AUDIO_BITRATE.get(encoder, 128_000)
        return stream

    def _ticks(self, frame_index: int) -> int:
        """A frame-grid position in the video codec's time base."""
        if self.is_gif:
            fps = self.plan.fps
            return (frame_index * 200 + fps) // (2 * fps)
        return frame_index

    def add_step(self, image: Image.Image, start_frame: int, end_frame: int, is_last: bool) -> None:
        start, end = self._ticks(start_frame), self._ticks(end_frame)
        if end <= start:
            return  # shorter than one frame at this fps: nothing can show it
        if self.is_gif:
            self._encode_video(to_pal8(image), start, end - start, key=True)
            return
        repeat = is_last and end - start > 1
        self._encode_video(to_yuv(image), start, end - start - (1 if repeat else 0), key=self.force_keyframes)
        if repeat:
            self._encode_video(to_yuv(image), end - 1, 1, key=False)

    def _encode_video(self, frame: av.VideoFrame | None, pts: int = 0, duration: int = 0, key: bool = False) -> None:
        if frame is not None:
            frame.pts = pts
            frame.time_base = self.video.codec_context.time_base
            if key:
                frame.pict_type = av.video.frame.PictureType.I
            self._durations[pts] = duration
        for packet in self.video.encode(frame):
            # encoders leave the duration of a VFR frame unset; the muxer needs it for the last
            # sample (MP4 sample table, GIF delay, Matroska block duration)
            if packet.pts is not None and self._durations.get(packet.pts):
                packet.duration = self._durations[packet.pts]
            self._mux_audio_until(_packet_time(packet))
            self.container.mux(packet)

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
        """Flush the video encoder, write the rest of the audio (waiting for the audio thread to
        end), close the file."""
        self._encode_video(None)
        self._mux_audio_until(None)
        self.container.close()

    def abort(self) -> None:
        # the file is discarded anyway; the original error is what matters
        with contextlib.suppress(av.FFmpegError, OSError, ValueError):
            self.container.close()


def _packet_time(packet: av.Packet) -> Fraction:
    stamp = packet.dts if packet.dts is not None else packet.pts
    return Fraction(stamp or 0) * packet.time_base
