"""Decode narration and music with PyAV, resample to 48 kHz stereo, mix.

Audio is streamed block by block rather than decoded whole: a 10-minute track as float32
stereo is ~230 MB, and only a window of it is ever needed at once.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import av
import numpy as np

from shared.errors import InvalidAsset
from shared.render.plan import AUDIO_RATE

# Demuxers an audio asset may use. Playlist and concat demuxers are excluded on purpose: they
# open further URLs/files named inside the data (server-side request forgery, local file reads).
AUDIO_DEMUXERS = "wav,w64,mp3,ogg,flac,mov,mp4,m4a,matroska,webm,aac,aiff,caf"
_OPEN_OPTIONS = {"format_whitelist": AUDIO_DEMUXERS, "protocol_whitelist": "none"}

Samples = np.ndarray  # float32, shape (n, 2), interleaved stereo in [-1, 1]


class PcmSource:
    """An audio asset as a stream of 48 kHz stereo float32 samples; silence after its end."""

    def __init__(self, data: bytes, asset_id: str) -> None:
        self.asset_id = asset_id
        self._container = self._open(data)
        self._blocks = self._decode()
        self._pending: list[Samples] = []
        self._pending_count = 0
        self._exhausted = False

    def _fail(self, exc: Exception) -> InvalidAsset:
        return InvalidAsset(f"asset {self.asset_id!r} is not decodable audio: {exc}")

    def _open(self, data: bytes) -> av.container.InputContainer:
        try:
            container = av.open(io.BytesIO(data), mode="r", options=_OPEN_OPTIONS)
        except (av.FFmpegError, ValueError, OSError) as exc:
            raise self._fail(exc) from None
        if not container.streams.audio:
            container.close()
            raise InvalidAsset(f"asset {self.asset_id!r} has no audio stream")
        return container

    def _decode(self) -> Iterator[Samples]:
        stream = self._container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="stereo", rate=AUDIO_RATE)
        try:
            for frame in self._container.decode(stream):
                for out in resampler.resample(frame):
                    yield out.to_ndarray().reshape(-1, 2)
            for out in resampler.resample(None):
                yield out.to_ndarray().reshape(-1, 2)
        except (av.FFmpegError, ValueError, OSError) as exc:
            raise self._fail(exc) from None

    def read(self, count: int) -> Samples:
        """The next `count` samples, zero-padded once the track has ended."""
        while self._pending_count < count and not self._exhausted:
            block = next(self._blocks, None)
            if block is None:
                self._exhausted = True
                self.close()
                break
            self._pending.append(block)
            self._pending_count += len(block)
        joined = np.concatenate(self._pending) if self._pending else np.zeros((0, 2), np.float32)
        out = np.zeros((count, 2), np.float32)
        take = min(count, len(joined))
        out[:take] = joined[:take]
        rest = joined[take:]
        self._pending = [rest] if len(rest) else []
        self._pending_count = len(rest)
        return out

    def check(self, max_samples: int | None = None) -> None:
        """Decode (up to `max_samples`) to prove the asset is usable; at least one block."""
        first = next(self._blocks, None)
        if first is None:
            raise InvalidAsset(f"asset {self.asset_id!r} contains no decodable audio")
        self._pending.append(first)
        self._pending_count += len(first)
        if max_samples is not None:
            seen = len(first)
            while seen < max_samples:
                block = next(self._blocks, None)
                if block is None:
                    break
                seen += len(block)
            self._exhausted = True
            self.close()

    def close(self) -> None:
        self._container.close()


class AudioMix:
    """Narration plus music at `music_volume`, hard-limited to [-1, 1]."""

    def __init__(self, narration: PcmSource | None, music: PcmSource | None, music_volume: float) -> None:
        self.narration = narration
        self.music = music
        self.music_volume = np.float32(music_volume)

    def read(self, count: int) -> Samples:
        out = np.zeros((count, 2), np.float32)
        if self.narration is not None:
            out += self.narration.read(count)
        if self.music is not None and self.music_volume > 0:
            out += self.music.read(count) * self.music_volume
        np.clip(out, -1.0, 1.0, out=out)
        return out
