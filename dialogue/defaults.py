"""The shipped defaults: an intent model, a playbook, the policy text and the example flows.

Their inputs are package data (`dialogue/data/`, declared in pyproject.toml and installed with the
wheel), so an installed callwise finds them without a checkout. The intent model and the playbook
are not committed as weights: both are rebuilt from that text on first use (seconds on a CPU) and
cached under the model cache (`core.paths.model_cache_dir()`), keyed by a hash of their inputs, so
editing a data file or a setting rebuilds them and nothing stale is ever loaded.

Test and benchmark data (held-out intent lines, labelled guardrail and redaction sets, sample
calls) and the generators that write the data stay in the repository's `fixtures/`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from core.paths import model_cache_dir

from .facts import FactBook
from .intents import FORMAT_VERSION as INTENT_FORMAT
from .intents import IntentConfig, IntentModel, read_examples
from .playbook import FORMAT_VERSION as PLAYBOOK_FORMAT
from .playbook import Playbook, read_calls
from .types import IntentClassifier

DATA = Path(__file__).with_name("data")
INTENT_TRAIN = DATA / "intents" / "train.jsonl"
PLAYBOOK_CALLS = DATA / "playbook" / "calls.jsonl"
POLICY = DATA / "playbook" / "policy.md"
FACTS = DATA / "playbook" / "facts.toml"
FLOWS = DATA / "flows"

def _key(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()[:12]


def _need(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing from callwise's package data (dialogue/data); "
                                "reinstall callwise, or pass your own files")
    return path


def flow_path(name: str) -> Path:
    """A shipped example flow, by file name (`installment_offer_en.yaml`) or flow file stem."""
    return _need(FLOWS / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"))


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


def intent_model_folder(config: IntentConfig | None = None) -> Path:
    """Where the default intent model for `config` is cached: keyed by the training lines, the
    settings and the model format, so a change to any of them builds a new one."""
    config = config or IntentConfig()
    key = _key(_need(INTENT_TRAIN).read_bytes(), config.model_dump_json().encode(),
               bytes([INTENT_FORMAT]))
    return model_cache_dir() / f"intents-default-{key}"


def playbook_folder(classifier: IntentClassifier) -> Path:
    """Where the default playbook mined with `classifier` is cached: keyed by the call corpus,
    the classifier's labels and provenance, and the playbook format."""
    labels = getattr(classifier, "labels", [])
    fingerprint = getattr(classifier, "provenance", {})
    key = _key(_need(PLAYBOOK_CALLS).read_bytes(), json.dumps([labels, fingerprint]).encode(),
               bytes([PLAYBOOK_FORMAT]))
    return model_cache_dir() / f"playbook-default-{key}"


def default_intent_model(config: IntentConfig | None = None) -> IntentModel:
    config = config or IntentConfig()
    folder = intent_model_folder(config)
    if not (folder / "intent_model.json").exists():
        texts, labels = read_examples(INTENT_TRAIN)
        # `source` is relative to the data folder, so the provenance (and the playbook's key,
        # which includes it) does not depend on where callwise is installed.
        model = IntentModel.train(texts, labels, config,
                                  source=INTENT_TRAIN.relative_to(DATA).as_posix())
        _build_into(folder, model.save)
        return model
    return IntentModel.load(folder)


def default_playbook(classifier: IntentClassifier | None = None) -> Playbook:
    """The shipped call corpus' playbook; intents come from `classifier` (default intent model)."""
    if classifier is None:
        classifier = default_intent_model()
    folder = playbook_folder(classifier)
    if not (folder / "playbook.json").exists():
        playbook = Playbook.build(read_calls(PLAYBOOK_CALLS), classifier=classifier)
        _build_into(folder, playbook.save)
        return playbook
    return Playbook.load(folder)


def current_playbook(classifier: IntentClassifier | None, versions_root: Path) -> Playbook:
    """The version `callwise playbook refresh` last published there, else the shipped one."""
    from .playbook_versions import PlaybookVersions

    return PlaybookVersions(versions_root).load() or default_playbook(classifier)


def policy_text() -> str:
    return _need(POLICY).read_text(encoding="utf-8")


def default_facts() -> FactBook:
    """The shipped policy's answers (`facts.toml`, kept in step with `policy.md`)."""
    return FactBook.load(_need(FACTS))
