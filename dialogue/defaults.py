"""The shipped defaults: an intent model and a playbook built from our own fixtures.

Neither is committed as weights: both are rebuilt from the fixture text on first use (seconds on a
CPU) and cached under the model cache, keyed by a hash of their inputs, so editing a fixture or a
setting rebuilds them and nothing stale is ever loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .intents import FORMAT_VERSION as INTENT_FORMAT
from .intents import IntentConfig, IntentModel, read_examples
from .playbook import FORMAT_VERSION as PLAYBOOK_FORMAT
from .playbook import Playbook, read_calls
from .types import IntentClassifier

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
INTENT_TRAIN = FIXTURES / "intents" / "train.jsonl"
INTENT_TEST = FIXTURES / "intents" / "test.jsonl"
PLAYBOOK_CALLS = FIXTURES / "playbook" / "calls.jsonl"
POLICY = FIXTURES / "playbook" / "policy.md"


def cache_root() -> Path:
    return Path(os.environ.get("CALLWISE_MODEL_CACHE", "~/.cache/callwise/models")).expanduser()


def _key(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()[:12]


def _need(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path}: the default models are built from the repository's "
                                "fixtures; run from a callwise checkout or pass your own files")
    return path


def _build_into(folder: Path, build) -> Path:  # type: ignore[no-untyped-def]
    # Build beside the target and rename: a crash mid-build never leaves a half model behind.
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        build(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def default_intent_model(config: IntentConfig | None = None) -> IntentModel:
    config = config or IntentConfig()
    train = _need(INTENT_TRAIN)
    key = _key(train.read_bytes(), config.model_dump_json().encode(), bytes([INTENT_FORMAT]))
    folder = cache_root() / f"intents-default-{key}"
    if not (folder / "intent_model.json").exists():
        texts, labels = read_examples(train)
        model = IntentModel.train(texts, labels, config, source=str(train.relative_to(FIXTURES)))
        _build_into(folder, model.save)
        return model
    return IntentModel.load(folder)


def default_playbook(classifier: IntentClassifier | None = None) -> Playbook:
    """The fixture corpus' playbook; intents come from `classifier` (default intent model)."""
    calls_file = _need(PLAYBOOK_CALLS)
    if classifier is None:
        classifier = default_intent_model()
    labels = getattr(classifier, "labels", [])
    fingerprint = getattr(classifier, "provenance", {})
    key = _key(calls_file.read_bytes(), json.dumps([labels, fingerprint]).encode(),
               bytes([PLAYBOOK_FORMAT]))
    folder = cache_root() / f"playbook-default-{key}"
    if not (folder / "playbook.json").exists():
        playbook = Playbook.build(read_calls(calls_file), classifier=classifier)
        _build_into(folder, playbook.save)
        return playbook
    return Playbook.load(folder)


def policy_text() -> str:
    return _need(POLICY).read_text(encoding="utf-8")
