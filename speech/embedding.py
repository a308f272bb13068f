"""The resemblyzer voice encoder as a pyannote.audio embedding `Model`.

pyannote pipelines take any `Model` whose task is a chunk-level representation; wrapping the
encoder this way lets both our streaming diarizer and pyannote's own `SpeakerDiarization` use it
without patching either library.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from callwise_compat import torchaudio_shim

torchaudio_shim.install()

import warnings  # noqa: E402

with warnings.catch_warnings():
    # pyannote warns at import that torchcodec cannot decode files; we always pass it arrays.
    warnings.simplefilter("ignore")
    from pyannote.audio import Model
    from pyannote.audio.core.task import Problem, Resolution, Specifications

SAMPLE_RATE = 16_000
MIN_SAMPLES = SAMPLE_RATE // 4  # below a quarter second a voice print is noise


class ResemblyzerEmbedding(Model):
    """256-d d-vectors; `weights` (batch, frames) select the samples of one speaker."""

    def __init__(self, weights_path: str) -> None:
        super().__init__(sample_rate=SAMPLE_RATE, num_channels=1)
        from resemblyzer import VoiceEncoder

        self.encoder = VoiceEncoder(device="cpu", verbose=False, weights_fpath=weights_path)
        self.specifications = Specifications(
            problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=5.0
        )

    @property
    def dimension(self) -> int:
        return 256

    def forward(self, waveforms: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        batch = waveforms.shape[0]
        out = torch.full((batch, self.dimension), float("nan"))
        for i in range(batch):
            wav = waveforms[i, 0].detach().cpu().numpy().astype(np.float32)
            if weights is not None:
                w = weights[i].detach().cpu().float()[None, None]
                mask = F.interpolate(w, size=len(wav), mode="nearest")[0, 0].numpy() > 0.5
                wav = wav[mask]
            vector = self.embed(wav)
            if vector is not None:
                out[i] = torch.from_numpy(vector)
        return out

    def embed(self, wav: np.ndarray) -> np.ndarray | None:
        """L2-normalised voice print of 16 kHz speech, or None when there is too little."""
        if len(wav) < MIN_SAMPLES:
            return None
        peak = float(np.abs(wav).max())
        if peak < 1e-4:
            return None
        return self.encoder.embed_utterance(wav / peak * 0.5).astype(np.float32)
