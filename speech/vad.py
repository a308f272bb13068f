"""Streaming voice activity detection with the Silero VAD v6 that ships inside faster-whisper."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

FRAME = 512  # samples at 16 kHz: 32 ms, the frame size Silero v6 was trained on
CONTEXT = 64


@functools.cache
def _session():  # type: ignore[no-untyped-def]
    import faster_whisper
    import onnxruntime

    path = Path(faster_whisper.__file__).parent / "assets" / "silero_vad_v6.onnx"
    opts = onnxruntime.SessionOptions()
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 4
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"],
                                        sess_options=opts)


class StreamingVad:
    """Speech probability per 32 ms frame, carrying the LSTM state across calls."""

    def __init__(self) -> None:
        self._session = _session()
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """Feed 16 kHz float32 samples; returns one probability per completed frame."""
        self._pending = np.concatenate([self._pending, audio.astype(np.float32)])
        n = len(self._pending) // FRAME
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        frames = self._pending[: n * FRAME].reshape(n, FRAME)
        self._pending = self._pending[n * FRAME :]
        contexts = np.concatenate([self._context[None], frames[:-1, -CONTEXT:]], axis=0)
        self._context = frames[-1, -CONTEXT:].copy()
        batch = np.concatenate([contexts, frames], axis=1)
        out, self._h, self._c = self._session.run(
            None, {"input": batch, "h": self._h, "c": self._c}
        )
        return np.asarray(out, dtype=np.float32).reshape(-1)[:n]
