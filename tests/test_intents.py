"""The intent model: trained on the shipped lines, measured on held-out ones, saved and reloaded."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from dialogue.corpora import load_rasa_nlu
from dialogue.defaults import INTENT_TRAIN
from dialogue.intents import (
    FeatureSet,
    IntentConfig,
    IntentDataError,
    IntentModel,
    _in_scope_score,
    _Novelty,
    _vote,
    read_examples,
)
from dialogue.types import OUT_OF_SCOPE

from .conftest import FIXTURES, shared_text

INTENT_TEST = FIXTURES / "intents" / "test.jsonl"  # held-out lines: test data, not shipped
# Hand-written out-of-scope lines, never used for training or for setting the threshold.
OOS_HELD_OUT = FIXTURES / "intents" / "oos_heldout.jsonl"


def _norm(text: str) -> str:
    return re.sub(r"[\W_]+", "", text.lower())


def test_default_model_generalises_to_held_out_lines(intent_model):
    texts, labels = read_examples(INTENT_TEST)
    report = intent_model.evaluate(texts, labels)
    # Held-out phrasings written apart from the training lines, zh and en together.
    assert report.accuracy >= 0.85, report.confusions
    assert report.macro_f1 >= 0.85
    assert report.oos_recall is not None and report.oos_false_rejects is not None
    assert report.oos_false_rejects <= 0.10
    assert set(report.per_class) == set(intent_model.labels)


def test_held_out_out_of_scope_set_is_apart():
    rows = [json.loads(line) for line in OOS_HELD_OUT.read_text(encoding="utf-8").splitlines()]
    assert len(rows) >= 150
    assert {r["label"] for r in rows} == {OUT_OF_SCOPE}
    by_lang = {lang: sum(r["lang"] == lang for r in rows) for lang in ("en", "zh")}
    assert by_lang["en"] + by_lang["zh"] == len(rows) and min(by_lang.values()) >= 75, by_lang
    elsewhere = {_norm(t) for path in (INTENT_TRAIN, INTENT_TEST) for t in read_examples(path)[0]}
    texts = [_norm(r["text"]) for r in rows]
    assert len(set(texts)) == len(texts) and not set(texts) & elsewhere


def test_default_model_rejects_out_of_scope_lines(intent_model):
    """Threshold set on training lines only (5% of their out-of-fold scores). Measured: 7.2% of
    the 180 in-scope test lines rejected; caught 70.0% of oos_heldout.jsonl (en 77.5%, zh 62.5%)
    and 67.5% of test.jsonl's 40 out-of-scope lines (the probability threshold before: 58.8% and
    55.0% at 11.1% rejected)."""
    test = intent_model.evaluate(*read_examples(INTENT_TEST))
    assert test.oos_false_rejects is not None and test.oos_false_rejects <= 0.10
    assert test.oos_recall is not None and test.oos_recall >= 0.575
    rows = [json.loads(line) for line in OOS_HELD_OUT.read_text(encoding="utf-8").splitlines()]
    for lang in ("en", "zh"):
        lines = [r["text"] for r in rows if r["lang"] == lang]
        caught = intent_model.evaluate(lines, [OUT_OF_SCOPE] * len(lines)).oos_recall
        assert caught is not None and caught >= 0.55, (lang, caught)
    report = intent_model.evaluate([r["text"] for r in rows], [OUT_OF_SCOPE] * len(rows))
    assert report.oos_recall is not None and report.oos_recall >= 0.62


@pytest.mark.parametrize(("text", "label"), [
    ("别再给我打电话了", "stop_calling"),
    ("please put me through to a real person", "ask_for_human"),
    ("我的卡丢了，赶紧帮我挂失", "card_lost"),
    ("how much is the late fee on my account", "late_fee"),
    ("我现在在开车，晚点再打给我", "call_back_later"),
])
def test_clear_customer_lines(intent_model, text, label):
    prediction = intent_model.predict(text)
    assert prediction.label == label, prediction
    assert prediction.top[0][0] == label and prediction.in_scope


def test_empty_text_is_out_of_scope(intent_model):
    assert intent_model.predict("   ").label == OUT_OF_SCOPE


def test_save_and_load_give_the_same_probabilities(intent_model, tmp_path):
    intent_model.save(tmp_path / "m")
    loaded = IntentModel.load(tmp_path / "m")
    lines = ["我想分期还款", "who is this", "no thanks"]
    np.testing.assert_allclose(loaded.probabilities(lines), intent_model.probabilities(lines),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded.scores(lines)[1], intent_model.scores(lines)[1],
                               rtol=1e-5, atol=1e-6)
    assert loaded.threshold == intent_model.threshold
    assert loaded.features == intent_model.features


def test_ngram_features_round_trip(tmp_path):
    texts, labels = read_examples(INTENT_TRAIN)
    config = IntentConfig(candidates=[FeatureSet(encoders=["e5"], ngram_weight=0.5)],
                          threshold=0.3)
    model = IntentModel.train(texts[::3], labels[::3], config)
    loaded = IntentModel.load(model.save(tmp_path / "m"))
    assert loaded.ngrams is not None and loaded.threshold == 0.3
    line = ["我要投诉"]
    np.testing.assert_allclose(loaded.probabilities(line), model.probabilities(line),
                               rtol=1e-5, atol=1e-6)


def test_distance_detectors_and_vote_on_toy_vectors():
    """Two tight clusters: a line near one ranks it first; a line far from both scores low."""
    rng = np.random.default_rng(0)
    centres = np.eye(8)[:2]
    bank = np.vstack([c + 0.05 * rng.standard_normal((20, 8)) for c in centres])
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    y = np.repeat([0, 1], 20)
    novelty = _Novelty.fit(bank, y, 2)
    queries = np.vstack([centres[1], np.eye(8)[5]]).astype(np.float32)
    knn = novelty.knn(queries, np.array([1, 1]))
    assert knn[0] > 0.95 and knn[1] < 0.2
    maha = novelty.mahalanobis(queries)
    assert maha[0] > maha[1]
    vote = _vote(queries[:1], bank, y, 2, k=5)
    assert vote.shape == (1, 2) and vote[0, 1] > 0.99
    references = np.sort(np.stack([knn, maha]), axis=1)  # two detectors, two reference lines
    score = _in_scope_score(np.stack([knn, maha], 1), references)
    assert score[0] > score[1] and 0.0 <= score.min() and score.max() <= 1.0


def test_bad_training_data_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "hi", "label": "greet"}\n{"text": "oops"}\n')
    with pytest.raises(IntentDataError, match=r"bad.jsonl:2"):
        read_examples(bad)
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text("utterance,label\nhello,greet\n")
    with pytest.raises(IntentDataError, match="text"):
        read_examples(csv_file)
    with pytest.raises(IntentDataError, match=OUT_OF_SCOPE):
        IntentModel.train(["a", "b"], ["x", OUT_OF_SCOPE])
    with pytest.raises(IntentDataError, match=r"no intent_model\.json"):
        IntentModel.load(tmp_path)


def test_banking77_csv_columns_are_read():
    texts, labels = read_examples(shared_text("banking77/test.csv"))
    assert len(texts) == 3080 and len(set(labels)) == 77


def test_chinese_collection_intents_cross_validated():
    """The Chinese debt-collection set: a user's own intents, trained through the same code."""
    from sklearn.model_selection import StratifiedKFold

    texts, labels = load_rasa_nlu(shared_text("zh_collection_rasa"))
    keep = [i for i, lab in enumerate(labels) if labels.count(lab) >= 3]
    texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    right = 0
    config = IntentConfig(threshold=0.0)
    for tr, te in StratifiedKFold(3, shuffle=True, random_state=0).split(texts, labels):
        model = IntentModel.train([texts[i] for i in tr], [labels[i] for i in tr], config)
        preds = model.predict_batch([texts[i] for i in te])
        right += sum(p.label == labels[i] for p, i in zip(preds, te, strict=True))
    accuracy = right / len(texts)
    # 108 distinct lines over 19 intents (2-7 training lines each per fold), several of them
    # near-synonyms (affirm / affirm_know / affirm_self): chance is about 0.05; measured 0.56.
    assert accuracy >= 0.5, accuracy


def test_jsonl_and_report_are_json_serialisable(intent_model):
    report = intent_model.evaluate(["余额还有多少"], ["check_balance"])
    json.loads(report.model_dump_json())
