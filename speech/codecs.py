"""Telephony codecs (G.711 mu-law and A-law, linear PCM) and resampling to 16 kHz."""

from __future__ import annotations

from math import gcd

import numpy as np
from scipy.signal import resample_poly

from .errors import AudioFormatError

TARGET_RATE = 16_000


def _mulaw_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype(np.int16)


def _alaw_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1)
    )
    return np.where(sign != 0, magnitude, -magnitude).astype(np.int16)


MULAW_TO_PCM16 = _mulaw_table()
ALAW_TO_PCM16 = _alaw_table()


def decode_mulaw(payload: bytes) -> np.ndarray:
    return MULAW_TO_PCM16[np.frombuffer(payload, dtype=np.uint8)]


def decode_alaw(payload: bytes) -> np.ndarray:
    return ALAW_TO_PCM16[np.frombuffer(payload, dtype=np.uint8)]


def encode_mulaw(pcm16: np.ndarray) -> bytes:
    """G.711 mu-law encoder, bit-exact with the ITU reference (14-bit magnitude, bias 33)."""
    x = pcm16.astype(np.int32) >> 2
    negative = x < 0
    x = np.minimum(np.where(negative, -x, x), 8159) + 0x21
    raw = np.floor(np.log2(np.maximum(x, 1))).astype(np.int32) - 5
    segment = np.clip(raw, 0, 7)
    # Past the top segment the reference saturates at the largest code.
    value = np.where(raw > 7, 0x7F, (segment << 4) | ((x >> (segment + 1)) & 0x0F))
    return (value ^ np.where(negative, 0x7F, 0xFF)).astype(np.uint8).tobytes()


def decode_pcm16(payload: bytes, channels: int = 1, byteorder: str = "<") -> np.ndarray:
    """Little-endian (or big-endian for L16 over RTP) 16-bit PCM -> int16 array (frames, ch)."""
    if len(payload) % (2 * channels):
        raise AudioFormatError(
            f"PCM16 payload of {len(payload)} bytes is not a whole number of {channels}-channel "
            "16-bit frames"
        )
    samples = np.frombuffer(payload, dtype=np.dtype(f"{byteorder}i2")).astype(np.int16)
    return samples.reshape(-1, channels)


def pcm16_to_float(pcm16: np.ndarray) -> np.ndarray:
    return (pcm16.astype(np.float32) / 32768.0).astype(np.float32)


def resample(audio: np.ndarray, rate: int, target: int = TARGET_RATE) -> np.ndarray:
    """Polyphase resampling along the last axis; exact for the telephony ratios (8k, 44.1k, 48k)."""
    if rate <= 0:
        raise AudioFormatError(f"sample rate must be positive, got {rate}")
    if rate == target:
        return audio.astype(np.float32, copy=False)
    g = gcd(rate, target)
    return resample_poly(audio, target // g, rate // g, axis=-1).astype(np.float32)


class StreamResampler:
    """Resamples a stream chunk by chunk without clicks at chunk borders.

    Polyphase filtering of each chunk alone would ring at every border; we keep a tail of input
    as left context and emit only the samples that context makes exact.
    """

    def __init__(self, rate: int, target: int = TARGET_RATE, context: int = 64) -> None:
        if rate <= 0:
            raise AudioFormatError(f"sample rate must be positive, got {rate}")
        self.rate, self.target = rate, target
        g = gcd(rate, target)
        self.up, self.down = target // g, rate // g
        self.context = context * self.down
        self._history = np.zeros(0, dtype=np.float32)
        self._consumed = 0  # input samples whose output has been emitted
        self._emitted = 0

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        if self.rate == self.target:
            return chunk.astype(np.float32, copy=False)
        self._history = np.concatenate([self._history, chunk.astype(np.float32)])
        total_in = self._consumed + len(self._history)
        # Output samples up to here see enough right context (the filter half-width).
        ready_in = total_in - self.context // 2
        ready_out = max(0, ready_in * self.up // self.down)
        if ready_out <= self._emitted:
            return np.zeros(0, dtype=np.float32)
        base = self._consumed
        out = resample_poly(self._history, self.up, self.down)
        first = self._emitted - base * self.up // self.down
        piece = out[first : first + ready_out - self._emitted]
        self._emitted += len(piece)
        # Drop whole multiples of `down` so the next chunk's output grid lines up with this one's.
        drop = max(0, (len(self._history) - self.context) // self.down * self.down)
        self._consumed += drop
        self._history = self._history[drop:]
        return piece.astype(np.float32)

    def flush(self) -> np.ndarray:
        if self.rate == self.target or not len(self._history):
            return np.zeros(0, dtype=np.float32)
        out = resample_poly(self._history, self.up, self.down)
        first = self._emitted - self._consumed * self.up // self.down
        piece = out[first:]
        self._emitted += len(piece)
        self._history = self._history[:0]
        return piece.astype(np.float32)
