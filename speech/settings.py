"""Speech settings: environment variables (CALLWISE_*) or one settings file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.paths import model_cache_dir


class SpeechSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CALLWISE_", env_file=os.environ.get("CALLWISE_SETTINGS", ".env"),
        extra="ignore", protected_namespaces=(),
    )

    whisper_model: str | None = Field(
        None, description="CTranslate2 Whisper folder or a faster-whisper model name; "
        "unset: the packaged whisper base"
    )
    segmentation_model: str | None = Field(
        None, description="pyannote segmentation checkpoint (.bin/.ckpt); unset: the packaged one"
    )
    embedding_model: str | None = Field(
        None, description="resemblyzer voice-encoder weights (.pt); unset: the packaged one"
    )
    turn_model: str | None = Field(
        None, description="Smart Turn v3 end-of-turn ONNX file; unset: the packaged v3.2"
    )
    end_of_turn: bool = Field(
        True, description="ask the end-of-turn model (Smart Turn) at a short pause whether the "
        "speaker is done, instead of waiting out a fixed silence (StreamingConfig."
        "end_of_turn_after)")
    model_cache: Path = Field(
        default_factory=model_cache_dir, description="where packaged weights are assembled "
        "(CALLWISE_MODEL_CACHE); unset: $XDG_CACHE_HOME or ~/.cache, then callwise/models"
    )
    device: Literal["cpu", "cuda", "auto"] = "auto"
    compute_type: str | None = Field(None, description="default: int8 on CPU, float16 on CUDA")
    cpu_threads: int = Field(0, description="0: all cores")
    asr_batch_size: int = Field(8, description="utterances decoded together across calls")
