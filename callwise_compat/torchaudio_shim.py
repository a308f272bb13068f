"""Lets pyannote.audio and transformers import torchaudio beside a CPU-only torch.

PyPI's torchaudio wheels link a CUDA build of libtorch; beside the CPU torch we pin, loading its
C++ extension fails (`_torchaudio.abi3.so`) and `import torchaudio` fails with it, taking
pyannote.audio down. Everything pyannote needs from torchaudio on our path (kaldi fbank,
resampling, MFCC) is pure Python, so we pre-register `torchaudio._extension` as "no extension
available", which is the state torchaudio itself supports when it was built without one.
On a CUDA machine the real extension loads and this module does nothing.
"""

from __future__ import annotations

import sys
import types


def install() -> None:
    if "torchaudio._extension" in sys.modules or "torchaudio" in sys.modules:
        return
    import torch

    if torch.version.cuda is not None:
        return
    try:  # the real extension may load after all (a CPU torchaudio build); then use it
        import torchaudio  # noqa: F401

        return
    except OSError:
        for name in [n for n in sys.modules if n == "torchaudio" or n.startswith("torchaudio.")]:
            del sys.modules[name]

    shim = types.ModuleType("torchaudio._extension")
    shim._IS_TORCHAUDIO_EXT_AVAILABLE = False  # type: ignore[attr-defined]
    shim._IS_ALIGN_AVAILABLE = False  # type: ignore[attr-defined]

    def fail_if_no_align(func):  # type: ignore[no-untyped-def]
        def unavailable(*args, **kwargs):  # type: ignore[no-untyped-def]
            raise RuntimeError(f"{func.__name__} needs torchaudio's C++ extension (CUDA build)")

        return unavailable

    shim.fail_if_no_align = fail_if_no_align  # type: ignore[attr-defined]
    shim._check_cuda_version = lambda: None  # type: ignore[attr-defined]
    sys.modules["torchaudio._extension"] = shim
