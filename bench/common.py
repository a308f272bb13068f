"""Shared helpers for the benchmarks: where the data is, and a one-line machine description."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CALLWISE_SHARED", ROOT.parent / "shared"))
AUDIO = SHARED / "data" / "audio"


def require_shared() -> None:
    if not AUDIO.is_dir():
        sys.exit(f"bench: {AUDIO} is missing; these benchmarks run on ../shared/data/audio")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) if values else float("nan")
