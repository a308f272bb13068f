"""Where callwise keeps files on the machine: one answer, asked by every package.

The model cache holds the assembled packaged weights (whisper, pyannote, the LLM's GGUF file) and
the intent model and playbook built from the package's data. Every package resolves it here, so
speech, the LLM and the built defaults always agree on one folder.
"""

from __future__ import annotations

import os
from pathlib import Path

MODEL_CACHE_ENV = "CALLWISE_MODEL_CACHE"


def model_cache_dir() -> Path:
    """``$CALLWISE_MODEL_CACHE``, else ``$XDG_CACHE_HOME/callwise/models``, else
    ``~/.cache/callwise/models``. Read at every call (not at import), so a test or a caller that
    sets the variable later is honoured; an empty variable counts as unset."""
    explicit = os.environ.get(MODEL_CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "callwise" / "models"
