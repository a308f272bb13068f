"""Reading call recordings (WAV, FLAC, MP3, OGG, ...) into float32 channels at their own rate."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .codecs import TARGET_RATE, resample
from .errors import AudioFormatError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AudioClip:
    samples: np.ndarray  # (channels, frames) float32 in [-1, 1]
    sample_rate: int

    @property
    def channels(self) -> int:
        return self.samples.shape[0]

    @property
    def duration(self) -> float:
        return self.samples.shape[1] / self.sample_rate

    def to_16k(self) -> AudioClip:
        return AudioClip(resample(self.samples, self.sample_rate, TARGET_RATE), TARGET_RATE)


def load_audio(path: str | Path) -> AudioClip:
    """Decode a file with libsndfile, falling back to FFmpeg (PyAV) for what it cannot read."""
    path = Path(path)
    if not path.is_file():
        raise AudioFormatError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioFormatError(f"{path}: the file is empty")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        clip = AudioClip(np.ascontiguousarray(data.T), int(rate))
    except (sf.LibsndfileError, RuntimeError) as sf_error:
        try:
            clip = _load_with_av(path)
        except AudioFormatError as av_error:
            raise AudioFormatError(
                f"{path}: not a readable audio file ({sf_error}; {av_error})"
            ) from None
    if clip.samples.shape[1] == 0:
        raise AudioFormatError(f"{path}: the file holds no audio samples")
    return clip


def _load_with_av(path: Path) -> AudioClip:
    import av

    chunks: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioFormatError("no audio stream")
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate
            channels = stream.codec_context.channels
            resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=rate)
            try:
                for frame in container.decode(stream):
                    for out in resampler.resample(frame):
                        chunks.append(out.to_ndarray())
            except av.error.InvalidDataError as exc:
                # A truncated or damaged tail: keep what decoded before it.
                log.warning("%s: decoding stopped early (%s); keeping %d frames", path, exc,
                            sum(c.shape[1] for c in chunks))
    except av.error.FFmpegError as exc:
        raise AudioFormatError(str(exc)) from None
    if not chunks:
        raise AudioFormatError("no decodable audio frames")
    samples = np.concatenate(chunks, axis=1).astype(np.float32)
    return AudioClip(samples.reshape(channels, -1) if samples.shape[0] != channels else samples,
                     int(rate))
