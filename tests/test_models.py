import json
import subprocess
import sys
from pathlib import Path

import pytest

from speech.errors import ModelNotAvailableError
from speech.models import WHISPER_BASE, ModelRegistry, sha256_of
from speech.settings import SpeechSettings


def test_packaged_whisper_is_assembled_and_checked():
    path = ModelRegistry().whisper()
    from pathlib import Path

    model = Path(path) / "model.bin"
    assert model.stat().st_size == WHISPER_BASE.size
    assert (Path(path) / "model.bin.sha256").read_text() == WHISPER_BASE.sha256


def test_a_tampered_cache_is_rebuilt_from_the_packages(tmp_path):
    registry = ModelRegistry(SpeechSettings(model_cache=tmp_path))
    path = registry.whisper()
    model = tmp_path / "whisper-base-ct2" / "model.bin"
    with model.open("r+b") as fh:
        fh.seek(1000)
        fh.write(b"\x00" * 16)
    (tmp_path / "whisper-base-ct2" / "model.bin.sha256").unlink()
    assert registry.whisper() == path
    assert sha256_of(model) == WHISPER_BASE.sha256


def test_an_explicit_setting_wins(tmp_path):
    settings = SpeechSettings(whisper_model=str(tmp_path), model_cache=tmp_path / "cache")
    assert ModelRegistry(settings).whisper() == str(tmp_path)
    rows = {r.kind: r for r in ModelRegistry(settings).describe()}
    assert rows["whisper"].source == "setting"


def test_an_end_of_turn_setting_wins_and_a_missing_one_is_reported(tmp_path):
    onnx = tmp_path / "turn.onnx"
    settings = SpeechSettings(turn_model=str(onnx), model_cache=tmp_path / "cache")
    assert ModelRegistry(settings).turn() == str(onnx)
    rows = {r.kind: r for r in ModelRegistry(SpeechSettings(model_cache=tmp_path)).describe()}
    assert rows["turn"].source == "missing" and "end-of-turn" in rows["turn"].detail


def test_missing_weights_are_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr("speech.models._package_dir", lambda name: None)
    with pytest.raises(ModelNotAvailableError, match="CALLWISE_WHISPER_MODEL"):
        ModelRegistry(SpeechSettings(model_cache=tmp_path)).whisper()


def test_models_command_lists_every_model_and_its_source():
    out = subprocess.run([sys.executable, "-m", "callwise", "models", "--json"],
                         capture_output=True, text=True, check=True)
    rows = {r["kind"]: r for r in json.loads(out.stdout)}
    assert set(rows) == {"whisper", "segmentation", "embedding", "turn", "intent-en",
                         "multilingual", "llm"}
    assert all(r["source"] == "packaged" and r["path"] for r in rows.values())


def test_a_wrong_model_setting_is_a_clear_error_not_a_traceback(tmp_path):
    import os

    env = {**os.environ, "CALLWISE_WHISPER_MODEL": str(tmp_path / "no-such-model")}
    out = subprocess.run([sys.executable, "-m", "callwise", "transcribe",
                          "fixtures/calls/demo_call_stereo.flac"], capture_output=True, text=True,
                         env=env, cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert out.returncode == 2
    assert "no such CTranslate2 model folder" in out.stderr and "Traceback" not in out.stderr
