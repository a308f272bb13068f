"""Has the speaker finished their turn? Smart Turn v3.2, an audio-only end-of-turn classifier.

Silence alone is a poor end-of-turn signal: people pause mid-sentence, and a fixed silence
timeout either cuts them off or makes every reply late. Smart Turn v3.2 (Daily / pipecat, BSD-2-
Clause) is a Whisper-tiny encoder with a small classifier head, ~8M parameters, int8-quantized
ONNX, trained on 23 languages including Mandarin; it reads the prosody of the last 8 s of a turn
and returns the probability that the speaker is done. We take the ONNX file out of the
`pipecat-ai==1.14.0` wheel (speech/models.py, kind "turn") and reproduce pipecat's inference
(pipecat/audio/turn/smart_turn/local_smart_turn_v3.py) here, without pipecat:

- 16 kHz mono float32 only. Audio at another rate goes through the same features without any
  error and the probabilities are then meaningless (8 kHz telephony fed as-is: pipecat issue
  3844), so `predict` takes the rate and refuses anything but 16 kHz: resample first
  (speech.codecs.resample).
- The last 8 s (at most) of the turn, zero-padded at the *start* to exactly 8 s.
- Whisper log-mel features as `transformers.WhisperFeatureExtractor(chunk_length=8)` computes
  them with `do_normalize=True` (80 mels x 800 frames), in numpy as pipecat 1.14 does.
- Input `input_features` (1, 80, 800); output (1, 1), already a sigmoid probability.

One `InferenceSession` serves every call: onnxruntime's `run` is safe to call from several
threads at once (the features are computed in locals), so `predict` can run under
`asyncio.to_thread` from many calls; each call uses one intra-op thread so that parallel calls
do not oversubscribe the cores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import BaseModel, Field

SAMPLE_RATE = 16_000
WINDOW_S = 8  # the model's input is always 8 s (800 frames)
_N_FFT, _HOP, _N_MELS = 400, 160, 80


class EndOfTurnConfig(BaseModel):
    threshold: float = Field(0.5, ge=0.0, le=1.0,
                             description="complete when the probability is above this")
    max_audio_s: float = Field(8.0, gt=0.0, le=WINDOW_S,
                               description="seconds of the turn's end the model hears (<= 8)")


def _slaney_mel_filters() -> np.ndarray:
    """Triangular mel filters, Slaney scale and area norm, (n_fft // 2 + 1, 80): Whisper's."""

    def to_mel(hz: np.ndarray) -> np.ndarray:
        return np.where(hz < 1000.0, 3.0 * hz / 200.0,
                        15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) * 27.0 / np.log(6.4))

    def to_hz(mel: np.ndarray) -> np.ndarray:
        return np.where(mel < 15.0, 200.0 * mel / 3.0,
                        1000.0 * np.exp(np.log(6.4) / 27.0 * (mel - 15.0)))

    edges = to_hz(np.linspace(0.0, to_mel(np.array(SAMPLE_RATE / 2)), _N_MELS + 2))
    fft_hz = np.linspace(0, SAMPLE_RATE // 2, _N_FFT // 2 + 1)
    slopes = edges[None, :] - fft_hz[:, None]
    down = -slopes[:, :-2] / np.diff(edges)[:-1]
    up = slopes[:, 2:] / np.diff(edges)[1:]
    return np.maximum(0.0, np.minimum(down, up)) * (2.0 / (edges[2:] - edges[:-2]))[None, :]


_MEL_FILTERS = _slaney_mel_filters()
_HANN = np.hanning(_N_FFT + 1)[:-1]  # periodic, as torch.hann_window


def log_mel_features(audio_8s: np.ndarray) -> np.ndarray:
    """Whisper log-mel features of exactly 8 s at 16 kHz, normalized waveform: (80, 800) float32."""
    x = audio_8s.astype(np.float32)
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.pad(x.astype(np.float64), _N_FFT // 2, mode="reflect")
    frames = sliding_window_view(padded, _N_FFT)[::_HOP]
    power = np.abs(np.fft.rfft(frames * _HANN, axis=-1)) ** 2  # (frames, bins)
    log_spec = np.log10(np.maximum(power @ _MEL_FILTERS, 1e-10)).T[:, :-1]
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


class EndOfTurnModel:
    """The probability that a speaker has finished, from the audio of their turn so far."""

    def __init__(self, path: str | Path | None = None,
                 config: EndOfTurnConfig | None = None) -> None:
        if path is None:
            from .models import ModelRegistry

            path = ModelRegistry().turn()
        self.path = str(path)
        self.config = config or EndOfTurnConfig()
        options = ort.SessionOptions()  # as pipecat sets them, with one thread per call
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(self.path, sess_options=options,
                                             providers=["CPUExecutionProvider"])

    def predict(self, audio_16k: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
        """Probability in [0, 1] that the turn is complete; mono samples at 16 kHz in [-1, 1]."""
        if sample_rate != SAMPLE_RATE:
            raise ValueError(
                f"the end-of-turn model needs 16 kHz audio, got {sample_rate} Hz: resample first "
                "(speech.codecs.resample); other rates give meaningless probabilities silently"
            )
        audio = np.asarray(audio_16k)
        if audio.ndim != 1:
            raise ValueError(f"the end-of-turn model needs mono 1-D audio, got shape {audio.shape}")
        if audio.size == 0:
            raise ValueError("the end-of-turn model needs audio, got an empty array")
        if not np.isfinite(audio).all():
            raise ValueError("the end-of-turn model got NaN or infinite samples")
        window = int(self.config.max_audio_s * SAMPLE_RATE)
        audio = audio[-window:]
        audio = np.pad(audio, (WINDOW_S * SAMPLE_RATE - audio.size, 0))
        features = log_mel_features(audio)[None]
        (probability,) = self._session.run(None, {"input_features": features})
        return float(probability[0, 0])

    def is_complete(self, audio_16k: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bool:
        return self.predict(audio_16k, sample_rate) > self.config.threshold
