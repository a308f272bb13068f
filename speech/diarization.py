"""Streaming speaker diarization: pyannote segmentation on a rolling window + online clustering.

Every `step` seconds the last `window` seconds go through the pyannote segmentation model, which
says, frame by frame, which of up to three *local* speakers is talking. Each local speaker gets a
voice print (resemblyzer) from the frames where it speaks alone; voice prints are matched to the
call's *global* speakers (Hungarian assignment on cosine distance, so two local speakers of one
window never merge), creating a new global speaker when none is close enough. Global labels are
never renamed, so "S1" means the same person for the whole call. Frame activities from all the
windows that covered a frame within `latency` of it are averaged; after that it is settled, and
what was reported for it never changes.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import torch
from pydantic import BaseModel, Field
from scipy.optimize import linear_sum_assignment

from callwise_compat import torchaudio_shim

from .codecs import TARGET_RATE
from .embedding import ResemblyzerEmbedding

torchaudio_shim.install()
with warnings.catch_warnings():
    # pyannote warns that torchcodec cannot decode files: we never ask it to.
    warnings.simplefilter("ignore")
    from pyannote.audio import Model
    from pyannote.core import Annotation, Segment

log = logging.getLogger(__name__)
RESOLUTION = 0.02  # seconds per frame of the call-level activity grid


class DiarizationConfig(BaseModel):
    window: float = 5.0
    step: float = 0.5
    latency: float = Field(
        5.0, description="a frame's speaker is settled this long after it: 5 s lets every "
        "window that covers it vote (DER 0.09 on the pyannote sample call, 0.13 at 2 s)"
    )
    active: float = Field(0.5, description="segmentation probability that counts as speech")
    new_speaker: float = Field(0.25, description="cosine distance past which a voice is new")
    update: float = Field(0.2, description="only closer voice prints refine a speaker's centroid")
    max_speakers: int = Field(2, description="a phone call has two parties; a conference more")
    min_clean: float = Field(0.5, description="seconds of solo speech for a voice print")
    onset: float = 0.55
    offset: float = 0.45
    min_gap: float = Field(0.1, description="pauses shorter than this stay inside a turn")
    min_new: float = Field(1.0, description="seconds of solo speech to open a new speaker")
    continuity_weight: float = Field(1.0, description="trust in overlap with the last window")
    min_continuity: float = Field(0.5, description="overlap share that ties a local speaker")


class DiarizationModels:
    """Loaded once per process and shared by all calls."""

    def __init__(self, segmentation_path: str, embedding_path: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Lightning announces at INFO, at every start, that it upgraded the old checkpoint
            # in memory: true and harmless, and not what a user should read first.
            for name in ("lightning", "lightning.pytorch", "pytorch_lightning"):
                logging.getLogger(name).setLevel(logging.WARNING)
            self.segmentation = Model.from_pretrained(segmentation_path).eval()
        self.embedding = ResemblyzerEmbedding(embedding_path).eval()

    @classmethod
    def from_registry(cls, registry) -> DiarizationModels:  # type: ignore[no-untyped-def]
        return cls(registry.segmentation(), registry.embedding())


class StreamingDiarizer:
    """Feed 16 kHz mono audio with `accept`; ask who spoke when with `speaker_at`."""

    def __init__(self, models: DiarizationModels, config: DiarizationConfig | None = None) -> None:
        self.models, self.config = models, config or DiarizationConfig()
        self.window = int(self.config.window * TARGET_RATE)
        self.step = int(self.config.step * TARGET_RATE)
        self._audio = np.zeros(self.window, dtype=np.float32)  # left-padded: zeros before t=0
        self._audio_start = -self.window  # sample index of self._audio[0]
        self._next_window_end = self.step
        self.samples_seen = 0
        self.processed_until = 0.0  # seconds: audio up to here has been through a window
        self._sum = np.zeros((0, 0), dtype=np.float32)  # (frames, speakers) activity sums
        self._count = np.zeros(0, dtype=np.float32)
        self.centroids: list[np.ndarray] = []
        self._centroid_sums: list[np.ndarray] = []
        self._previous: tuple[np.ndarray, int, dict[int, int | None]] | None = None

    @property
    def speakers(self) -> list[str]:
        return [f"S{i + 1}" for i in range(len(self.centroids))]

    def accept(self, audio: np.ndarray) -> None:
        """Runs the model for every step the new audio completes (CPU work: call it off-loop)."""
        self._audio = np.concatenate([self._audio, audio.astype(np.float32, copy=False)])
        self.samples_seen += len(audio)
        while self.samples_seen >= self._next_window_end:
            end = self._next_window_end
            start = end - self.window
            chunk = self._audio[start - self._audio_start : end - self._audio_start]
            self._process(chunk, start)
            self._next_window_end += self.step
            self.processed_until = end / TARGET_RATE
        drop = self._next_window_end - self.window - self._audio_start
        if drop > 0:
            self._audio = self._audio[drop:]
            self._audio_start += drop

    def flush(self) -> None:
        """End of stream: one last window over the tail."""
        if self.samples_seen > self.processed_until * TARGET_RATE:
            pad = self._next_window_end - self.samples_seen
            self.accept(np.zeros(pad, dtype=np.float32))
            self.processed_until = self.samples_seen / TARGET_RATE

    # ---- one window ----------------------------------------------------------------------
    def _process(self, chunk: np.ndarray, start: int) -> None:
        cfg = self.config
        with torch.inference_mode():
            probs = self.models.segmentation(torch.from_numpy(chunk)[None, None])[0].numpy()
        frames = probs.shape[0]
        frame_s = cfg.window / frames
        active = probs > cfg.active
        locals_, prints, solo_seconds = [], [], []
        repeat = int(np.ceil(len(chunk) / frames))
        for k in range(probs.shape[1]):
            if not active[:, k].any():
                continue
            solo = active[:, k] & (active.sum(axis=1) == 1)
            # A voice print from overlapped or very short speech is mostly someone else's.
            mask = solo if solo.sum() * frame_s >= cfg.min_clean else None
            locals_.append(k)
            solo_seconds.append(float(solo.sum() * frame_s))
            if mask is None:
                prints.append(None)
            else:
                idx = np.repeat(mask, repeat)[: len(chunk)]
                prints.append(self.models.embedding.embed(chunk[: len(idx)][idx]))
        continuity = self._continuity(probs, start, locals_)
        mapping = self._assign(prints, continuity, solo_seconds)
        self._previous = (probs, start, dict(zip(locals_, mapping, strict=True)))
        first = round(start / TARGET_RATE / RESOLUTION)
        times = (np.arange(frames) + 0.5) * frame_s
        grid = first + (times / RESOLUTION).astype(int)
        # A frame takes votes only from windows that end within `latency` of it: what a live
        # consumer saw when the frame was settled is then exactly what the call keeps.
        keep = (grid >= 0) & (cfg.window - times <= max(cfg.latency, cfg.step))
        self._grow(grid.max() + 1)
        for k, g in zip(locals_, mapping, strict=True):
            if g is None:
                continue
            np.add.at(self._sum[:, g], grid[keep], probs[keep, k])
        np.add.at(self._count, grid[keep], 1.0)

    def _continuity(self, probs: np.ndarray, start: int, locals_: list[int]) -> np.ndarray:
        """(locals, globals): how much each local speaker's activity over the stretch shared with
        the previous window matches the local speaker that was mapped to each global one."""
        out = np.zeros((len(locals_), self.config.max_speakers), dtype=np.float32)
        if self._previous is None:
            return out
        prev_probs, prev_start, prev_map = self._previous
        frames = probs.shape[0]
        shift = round((start - prev_start) / self.window * frames)
        if shift >= frames:
            return out
        cur = probs[: frames - shift]
        old = prev_probs[shift:]
        for i, k in enumerate(locals_):
            for j, g in prev_map.items():
                if g is None:
                    continue
                both = np.minimum(cur[:, k], old[:, j]).sum()
                either = np.maximum(cur[:, k], old[:, j]).sum()
                if either > 0:
                    out[i, g] = max(out[i, g], both / either)
        return out

    def _assign(self, prints: list[np.ndarray | None], continuity: np.ndarray,
                solo_seconds: list[float]) -> list[int | None]:
        """Local speakers -> global ones: continuity with the previous window first, voice
        prints second; two locals of one window never share a global speaker."""
        cfg = self.config
        n = len(prints)
        mapping: list[int | None] = [None] * n
        if n == 0:
            return mapping
        known = len(self.centroids)
        if known:
            cost = np.full((n, known), 0.5, dtype=np.float32)
            for i, p in enumerate(prints):
                if p is not None:
                    cost[i] = [1.0 - float(p @ c) for c in self.centroids]
            cost -= cfg.continuity_weight * continuity[:, :known]
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols, strict=True):
                tied = continuity[r, c] >= cfg.min_continuity
                close = prints[r] is not None and 1.0 - float(prints[r] @ self.centroids[c]) <= (
                    cfg.new_speaker)
                full = known >= cfg.max_speakers
                if tied or close or (full and prints[r] is not None):
                    mapping[r] = int(c)
                    if prints[r] is not None and 1.0 - float(prints[r] @ self.centroids[c]) <= (
                        cfg.update
                    ):
                        self._refine(int(c), prints[r])  # type: ignore[arg-type]
        for i, p in enumerate(prints):
            if (mapping[i] is None and p is not None and len(self.centroids) < cfg.max_speakers
                    and solo_seconds[i] >= cfg.min_new):
                self._centroid_sums.append(p.copy())
                self.centroids.append(p.copy())
                mapping[i] = len(self.centroids) - 1
        return mapping

    def _refine(self, g: int, vector: np.ndarray) -> None:
        self._centroid_sums[g] = self._centroid_sums[g] + vector
        self.centroids[g] = self._centroid_sums[g] / np.linalg.norm(self._centroid_sums[g])

    def _grow(self, frames: int) -> None:
        speakers = max(self.config.max_speakers, self._sum.shape[1])
        if frames > self._sum.shape[0] or speakers > self._sum.shape[1]:
            grown = np.zeros((max(frames, self._sum.shape[0]), speakers), dtype=np.float32)
            grown[: self._sum.shape[0], : self._sum.shape[1]] = self._sum
            self._sum = grown
            count = np.zeros(grown.shape[0], dtype=np.float32)
            count[: len(self._count)] = self._count
            self._count = count

    # ---- queries -------------------------------------------------------------------------
    def activity(self) -> np.ndarray:
        """(frames, speakers) averaged activity on the RESOLUTION grid."""
        return self._sum / np.maximum(self._count, 1.0)[:, None]

    def speaker_at(self, start: float, end: float) -> str | None:
        """The speaker most active over [start, end]; the nearest one when nobody is."""
        n = len(self._count)
        if not n or not self.centroids:
            return None
        a = max(0, int(start / RESOLUTION))
        b = min(n, max(a + 1, int(np.ceil(end / RESOLUTION))))
        # Called per word: average only the frames around it, never the whole call.
        for radius in range(int(2.0 / RESOLUTION)):
            lo, hi = max(0, a - radius), min(n, b + radius)
            totals = (self._sum[lo:hi] / np.maximum(self._count[lo:hi], 1.0)[:, None]).sum(axis=0)
            if totals.max() > 0:
                return self.speakers[int(np.argmax(totals[: len(self.centroids)]))]
        return None

    def annotation(self, uri: str = "call") -> Annotation:
        """Who spoke when, as a pyannote Annotation (for DER and RTTM).

        Hysteresis (on at `onset`, off below `offset`) and filling gaps shorter than `min_gap`
        keep a speaker's turn whole where the averaged activity hovers around one threshold."""
        cfg = self.config
        act = self.activity()
        ann = Annotation(uri=uri)
        gap = round(cfg.min_gap / RESOLUTION)
        for g, label in enumerate(self.speakers):
            on = False
            turns: list[list[int]] = []
            for i, value in enumerate(act[:, g]):
                if not on and value > cfg.onset:
                    on = True
                    if turns and i - turns[-1][1] <= gap:
                        turns[-1][1] = i + 1
                    else:
                        turns.append([i, i + 1])
                elif on and value < cfg.offset:
                    on = False
                elif on:
                    turns[-1][1] = i + 1
            for a, b in turns:
                ann[Segment(a * RESOLUTION, b * RESOLUTION)] = label
        return ann
