"""Telephony codecs (G.711 mu-law and A-law, linear PCM) and resampling to 16 kHz."""

from __future__ import annotations

import functools
from math import ceil, gcd

import numpy as np
from scipy.signal import resample_poly

from .errors import AudioFormatError

TARGET_RATE = 16_000
# resample_poly designs a filter of about 20 * max(up, down) taps: cheap for the usual rates
# (44.1 kHz is 160/441), ruinous for a rate like 44,101 Hz (16000/44101). Past this factor we
# resample with a windowed-sinc interpolator whose length depends only on the rate ratio.
MAX_POLY_FACTOR = 1_000
_ZEROS = 32  # zero crossings of the sinc kept on each side of its centre
_CUTOFF = 0.92  # share of the lower rate's Nyquist band kept; the rest is the transition
_KAISER_BETA = 8.6  # about 85 dB stopband
_OVERSAMPLE = 512  # kernel table points per zero crossing, linearly interpolated
_BLOCK = 4_096  # outputs per vectorised step: bounds memory on long files


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
    """Resampling along the last axis: polyphase, exact for the usual ratios (8k, 44.1k, 48k);
    a bounded windowed-sinc interpolator for odd rates whose reduced factors are large."""
    if rate <= 0:
        raise AudioFormatError(f"sample rate must be positive, got {rate}")
    if rate == target:
        return audio.astype(np.float32, copy=False)
    g = gcd(rate, target)
    if max(rate, target) // g <= MAX_POLY_FACTOR:
        return resample_poly(audio, target // g, rate // g, axis=-1).astype(np.float32)
    sinc = _SincResampler(rate, target)
    x = np.asarray(audio, dtype=np.float32)
    return sinc.outputs(x, 0, 0, sinc.count_for(x.shape[-1]))


@functools.cache
def _kernel_table() -> np.ndarray:
    """Kaiser-windowed sinc over [-_ZEROS, _ZEROS] zero crossings, plus one point past the end
    so that linear interpolation never reads outside; both ends are exactly zero."""
    u = np.arange(-_ZEROS * _OVERSAMPLE, _ZEROS * _OVERSAMPLE + 2) / _OVERSAMPLE
    inside = np.clip(1.0 - (u / _ZEROS) ** 2, 0.0, None)
    window = np.i0(_KAISER_BETA * np.sqrt(inside)) / np.i0(_KAISER_BETA)
    table = np.sinc(u) * window
    table[np.abs(u) >= _ZEROS] = 0.0
    return table.astype(np.float32)


class _SincResampler:
    """Output sample n sits at input position n * rate / target (as with resample_poly); it is
    the input convolved with a low-pass sinc at that exact position. Integer arithmetic keeps
    the positions exact however long the stream runs, so no drift builds up."""

    def __init__(self, rate: int, target: int) -> None:
        self.rate, self.target = rate, target
        self.scale = _CUTOFF * min(1.0, target / rate)  # cutoff, in cycles per input sample x2
        self.half = ceil(_ZEROS / self.scale)  # taps on each side of the centre, input samples
        self._offsets = np.arange(-self.half, self.half + 1, dtype=np.int64)
        self._offsets_f = self._offsets.astype(np.float32)

    def count_for(self, n_in: int) -> int:
        """Outputs a signal of n_in samples has in all (resample_poly's length)."""
        return -(-n_in * self.target // self.rate)

    def ready(self, n_in: int) -> int:
        """Outputs whose every tap lies before input sample n_in."""
        last = n_in - 1 - self.half  # the latest centre whose right taps are all present
        return max(0, -(-(last + 1) * self.target // self.rate)) if last >= 0 else 0

    def first_input(self, n: int) -> int:
        """The earliest input sample output n reads."""
        return n * self.rate // self.target - self.half

    def outputs(self, x: np.ndarray, base: int, first: int, count: int) -> np.ndarray:
        """Outputs first..first+count-1 from x (..., m), which holds input samples base..base+m;
        samples outside x count as zeros (the signal's edges)."""
        pieces = [np.zeros((*x.shape[:-1], 0), dtype=np.float32)]
        for start in range(first, first + count, _BLOCK):
            pieces.append(self._block(x, base, start, min(_BLOCK, first + count - start)))
        return np.concatenate(pieces, axis=-1)

    def _block(self, x: np.ndarray, base: int, first: int, count: int) -> np.ndarray:
        n = np.arange(first, first + count, dtype=np.int64) * self.rate
        centre = n // self.target
        frac = ((n - centre * self.target) / self.target).astype(np.float32)
        # Where each tap falls in the kernel table: its distance from the output's position, in
        # zero crossings, shifted and scaled to table points. float32 is ample for the weights.
        pos = (frac[:, None] - self._offsets_f[None, :]) * np.float32(self.scale * _OVERSAMPLE)
        pos += np.float32(_ZEROS * _OVERSAMPLE)
        np.clip(pos, 0.0, 2.0 * _ZEROS * _OVERSAMPLE, out=pos)
        k = pos.astype(np.int32)
        f = pos - k
        table = _kernel_table()
        lo = table[k]
        weights = lo + (table[k + 1] - lo) * f
        rel = centre[:, None] + self._offsets[None, :] - base
        m = x.shape[-1]
        if rel[0, 0] < 0 or rel[-1, -1] >= m:  # only at the signal's edges
            if not m:
                return np.zeros((*x.shape[:-1], count), dtype=np.float32)
            inside = (rel >= 0) & (rel < m)
            weights = np.where(inside, weights, np.float32(0.0))
            rel = np.clip(rel, 0, m - 1)
        out = np.einsum("...ck,ck->...c", x[..., rel], weights)
        return (out * np.float32(self.scale)).astype(np.float32)


class StreamResampler:
    """Resamples a stream chunk by chunk without clicks at chunk borders.

    Filtering each chunk alone would ring at every border; we keep a tail of input as left
    context and emit only the samples that context makes exact, so the stream equals resampling
    the whole signal at once.
    """

    def __init__(self, rate: int, target: int = TARGET_RATE, context: int = 64) -> None:
        if rate <= 0:
            raise AudioFormatError(f"sample rate must be positive, got {rate}")
        self.rate, self.target = rate, target
        g = gcd(rate, target)
        self.up, self.down = target // g, rate // g
        # Odd rates: the sinc interpolator's cost and delay do not grow with the factors.
        self._sinc = (_SincResampler(rate, target)
                      if max(self.up, self.down) > MAX_POLY_FACTOR else None)
        self.context = context * self.down
        self._history = np.zeros(0, dtype=np.float32)
        self._consumed = 0  # input samples whose output has been emitted
        self._emitted = 0

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        if self.rate == self.target:
            return chunk.astype(np.float32, copy=False)
        self._history = np.concatenate([self._history, chunk.astype(np.float32)])
        if self._sinc is not None:
            return self._sinc_step(self._sinc.ready(self._consumed + len(self._history)))
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
        if self._sinc is not None:
            piece = self._sinc_step(self._sinc.count_for(self._consumed + len(self._history)))
            self._history = self._history[:0]
            return piece
        out = resample_poly(self._history, self.up, self.down)
        first = self._emitted - self._consumed * self.up // self.down
        piece = out[first:]
        self._emitted += len(piece)
        self._history = self._history[:0]
        return piece.astype(np.float32)

    def _sinc_step(self, until: int) -> np.ndarray:
        sinc = self._sinc
        assert sinc is not None
        piece = sinc.outputs(self._history, self._consumed, self._emitted,
                             max(0, until - self._emitted))
        self._emitted += len(piece)
        # Keep only the input the next output still reads.
        drop = min(len(self._history), max(0, sinc.first_input(self._emitted) - self._consumed))
        self._consumed += drop
        self._history = self._history[drop:]
        return piece
