"""One model cache: core.paths.model_cache_dir() decides it, and every package asks it."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.paths import model_cache_dir


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("CALLWISE_MODEL_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_precedence(home, monkeypatch):
    assert model_cache_dir() == home / ".cache" / "callwise" / "models"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "xdg"))
    assert model_cache_dir() == home / "xdg" / "callwise" / "models"
    monkeypatch.setenv("CALLWISE_MODEL_CACHE", "~/models")
    assert model_cache_dir() == home / "models"
    monkeypatch.setenv("CALLWISE_MODEL_CACHE", "")  # empty counts as unset
    assert model_cache_dir() == home / "xdg" / "callwise" / "models"


@pytest.mark.parametrize("explicit", [False, True])
def test_speech_dialogue_and_llm_agree(home, monkeypatch, explicit):
    from dialogue import defaults, llm_models
    from speech.settings import SpeechSettings

    if explicit:
        monkeypatch.setenv("CALLWISE_MODEL_CACHE", str(home / "elsewhere"))
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", str(home / "xdg"))
    expected = model_cache_dir()
    assert SpeechSettings(_env_file=None).model_cache == expected
    assert defaults.intent_model_folder().parent == expected
    seen = []
    monkeypatch.setattr(llm_models, "packaged_gguf", lambda cache, model: seen.append(cache))
    llm_models.resolve_model_path()
    assert seen == [expected]
