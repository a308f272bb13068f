"""Intent model: frozen transformer sentence encoders + character n-grams -> a linear classifier.

Why this shape: a contact center must retrain on its own intents in minutes on a CPU, with a few
dozen examples per intent. Frozen encoders carry meaning (MiniLM for English wording, e5 for
Mandarin and cross-lingual paraphrase); character n-grams carry the exact words an intent hinges
on (余额 vs 逾期, "late fee" vs "fee"); a multinomial logistic regression on top trains in
seconds and gives calibrated-enough probabilities for an out-of-scope threshold.

Which features a dataset needs depends on its size (see `_default_candidates`), so training tries
a few feature sets and keeps the best by cross-validated accuracy. A trained model is a folder of
plain files (no pickles): `intent_model.json` (labels, features, threshold, how it was trained),
`head.npz` (weights), `ngrams.json` (n-gram vocabulary, when n-grams were chosen).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field
from scipy import sparse

from .encoders import get_encoder
from .types import OUT_OF_SCOPE, IntentPrediction

FORMAT_VERSION = 1


class IntentDataError(ValueError):
    """A training or test file cannot be read as (text, label) rows."""


class FeatureSet(BaseModel):
    encoders: list[str] = Field(description="sentence encoders whose vectors are concatenated")
    ngram_weight: float = Field(0.0, ge=0, description="weight of character n-grams; 0 = none")

    def describe(self) -> str:
        grams = f" + char n-grams x{self.ngram_weight:g}" if self.ngram_weight else ""
        return "+".join(self.encoders) + grams


def _default_candidates() -> list[FeatureSet]:
    # Few examples per intent favour the multilingual encoder alone (n-grams then overfit to
    # surface words); thousands favour everything together. Cross-validation picks per dataset.
    return [FeatureSet(encoders=["e5"]), FeatureSet(encoders=["e5"], ngram_weight=0.5),
            FeatureSet(encoders=["minilm", "e5"]),
            FeatureSet(encoders=["minilm", "e5"], ngram_weight=1.0)]


class IntentConfig(BaseModel):
    candidates: list[FeatureSet] = Field(
        default_factory=_default_candidates,
        description="feature sets tried; the best by cross-validated accuracy is kept")
    ngram_range: tuple[int, int] = (1, 4)
    ngram_min_df: int = 2
    C: float = 10.0
    threshold: float | None = Field(
        None, description="out-of-scope below this probability; None = calibrate by CV")
    target_in_scope_recall: float = Field(
        0.95, description="calibration keeps this share of correct in-scope predictions")
    cv_folds: int = 3


class ClassReport(BaseModel):
    precision: float
    recall: float
    f1: float
    support: int


class IntentReport(BaseModel):
    n: int
    accuracy: float = Field(description="in-scope test lines whose best intent is right")
    accuracy_with_threshold: float = Field(
        description="all lines, counting an in-scope line rejected as out of scope as wrong")
    macro_f1: float
    oos_recall: float | None = Field(None, description="out-of-scope lines rejected")
    oos_false_rejects: float | None = Field(None, description="in-scope lines rejected")
    threshold: float
    ms_per_utterance: float
    per_class: dict[str, ClassReport]
    confusions: list[tuple[str, str, int]] = Field(
        default_factory=list, description="(true, predicted, count), most frequent first")


def read_examples(path: Path) -> tuple[list[str], list[str]]:
    """(texts, labels) from JSONL (`text`, `label`) or CSV with a text column and a label column
    named label, intent or category (banking77's)."""
    path = Path(path)
    if not path.exists():
        raise IntentDataError(f"{path}: no such file")
    texts: list[str] = []
    labels: list[str] = []
    if path.suffix in (".jsonl", ".ndjson", ".json"):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                texts.append(str(row["text"]).strip())
                labels.append(str(row.get("label") or row["intent"]).strip())
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise IntentDataError(f"{path}:{n}: expected a JSON object with text and label "
                                      f"({exc})") from exc
    else:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = reader.fieldnames or []
            label_col = next((c for c in ("label", "intent", "category") if c in fields), None)
            if "text" not in fields or label_col is None:
                raise IntentDataError(f"{path}: CSV needs a 'text' column and a 'label', "
                                      f"'intent' or 'category' column (found {fields})")
            for row in reader:
                texts.append((row["text"] or "").strip())
                labels.append((row[label_col] or "").strip())
    bad = [i for i, (t, lab) in enumerate(zip(texts, labels, strict=True)) if not t or not lab]
    if bad:
        raise IntentDataError(f"{path}: {len(bad)} rows with empty text or label "
                              f"(first at row {bad[0] + 1})")
    if not texts:
        raise IntentDataError(f"{path}: no examples")
    return texts, labels


class _Ngrams:
    """Character n-grams with sublinear tf-idf; the vocabulary is saved as JSON, not pickled."""

    def __init__(self, vocabulary: dict[str, int], idf: np.ndarray, ngram_range: tuple[int, int]):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vocabulary = vocabulary
        self.idf = idf
        self.ngram_range = ngram_range
        self._vec = TfidfVectorizer(analyzer="char_wb", ngram_range=ngram_range,
                                    sublinear_tf=True, vocabulary=vocabulary, lowercase=True)
        self._vec.idf_ = idf

    @classmethod
    def fit(cls, texts: list[str], ngram_range: tuple[int, int], min_df: int) -> _Ngrams:
        from sklearn.feature_extraction.text import TfidfVectorizer

        vec = TfidfVectorizer(analyzer="char_wb", ngram_range=ngram_range, sublinear_tf=True,
                              min_df=min_df, lowercase=True)
        vec.fit(texts)
        vocab = {k: int(v) for k, v in vec.vocabulary_.items()}
        return cls(vocab, vec.idf_.astype(np.float64), ngram_range)

    def transform(self, texts: list[str]) -> sparse.csr_matrix:
        return self._vec.transform(texts).tocsr()


def _assemble(features: FeatureSet, blocks: dict[str, np.ndarray],
              grams: sparse.csr_matrix | None) -> sparse.csr_matrix:
    parts = [sparse.csr_matrix(blocks[spec]) for spec in features.encoders]
    if features.ngram_weight and grams is not None:
        parts.append(grams * features.ngram_weight)
    return sparse.hstack(parts, format="csr")


def _fit(X: sparse.csr_matrix, y: np.ndarray, C: float):  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression

    # Folds never lack a class: there are at most as many folds as the rarest intent's examples.
    return LogisticRegression(C=C, max_iter=2000).fit(X, y)


class IntentModel:
    """A trained intent classifier; `predict` is what a live call uses."""

    def __init__(self, labels: list[str], config: IntentConfig, features: FeatureSet,
                 coef: np.ndarray, intercept: np.ndarray, ngrams: _Ngrams | None,
                 threshold: float, provenance: dict[str, object] | None = None) -> None:
        self.labels = labels
        self.config = config
        self.features = features
        self.coef = coef.astype(np.float32)
        self.intercept = intercept.astype(np.float32)
        self.ngrams = ngrams
        self.threshold = threshold
        self.provenance = provenance or {}

    def _matrix(self, texts: list[str]) -> sparse.csr_matrix:
        blocks = {spec: get_encoder(spec).encode(texts) for spec in self.features.encoders}
        grams = self.ngrams.transform(texts) if self.ngrams is not None else None
        return _assemble(self.features, blocks, grams)

    # -- training -------------------------------------------------------------------------------
    @classmethod
    def train(cls, texts: Sequence[str], labels: Sequence[str],
              config: IntentConfig | None = None, source: str = "") -> IntentModel:
        from sklearn.model_selection import StratifiedKFold

        config = config or IntentConfig()
        texts, labels = list(texts), list(labels)
        if OUT_OF_SCOPE in labels:
            raise IntentDataError(f"training data must not contain the label {OUT_OF_SCOPE!r}: "
                                  "out of scope is what falls below the threshold")
        classes = sorted(set(labels))
        if len(classes) < 2:
            raise IntentDataError("need at least two intents to train")
        if not config.candidates:
            raise IntentDataError("the config lists no feature sets to try")
        started = time.perf_counter()
        y = np.array([classes.index(lab) for lab in labels])
        specs = sorted({e for c in config.candidates for e in c.encoders})
        blocks = {spec: get_encoder(spec).encode(texts) for spec in specs}
        use_grams = any(c.ngram_weight for c in config.candidates)
        ngrams = (_Ngrams.fit(texts, config.ngram_range, config.ngram_min_df)
                  if use_grams else None)
        grams = ngrams.transform(texts) if ngrams is not None else None

        folds = min(config.cv_folds, int(np.bincount(y).min()))
        splits = (list(StratifiedKFold(folds, shuffle=True, random_state=0).split(texts, y))
                  if folds >= 2 else [])
        trials: list[tuple[float, int, np.ndarray]] = []
        for n, candidate in enumerate(config.candidates):
            X = _assemble(candidate, blocks, grams)
            oof = np.zeros((len(y), len(classes)), np.float32)
            for tr, te in splits:
                oof[te] = _fit(X[tr], y[tr], config.C).predict_proba(X[te])
            accuracy = float((oof.argmax(1) == y).mean()) if splits else 0.0
            trials.append((accuracy, -n, oof))
        accuracy, neg_n, oof = max(trials, key=lambda t: (t[0], t[1]))
        chosen = config.candidates[-neg_n]

        threshold = config.threshold
        if threshold is None:
            # Out-of-fold confidences of correct predictions: the threshold keeps
            # `target_in_scope_recall` of them, so it is set on data the head did not see.
            right = oof.argmax(1) == y
            kept = oof.max(1)[right] if splits else np.array([])
            threshold = (float(np.quantile(kept, 1 - config.target_in_scope_recall))
                         if len(kept) else 0.0)
        clf = _fit(_assemble(chosen, blocks, grams), y, config.C)
        provenance = {
            "source": source, "examples": len(texts), "intents": len(classes),
            "features": chosen.describe(),
            "cv_accuracy": {config.candidates[-t[1]].describe(): round(t[0], 4) for t in trials},
            "train_seconds": round(time.perf_counter() - started, 1)}
        return cls(classes, config, chosen, clf.coef_, clf.intercept_,
                   ngrams if chosen.ngram_weight else None, threshold, provenance)

    # -- inference ------------------------------------------------------------------------------
    def probabilities(self, texts: list[str]) -> np.ndarray:
        X = self._matrix(texts)
        logits = np.asarray(X @ self.coef.T) + self.intercept
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(1, keepdims=True)

    def predict_batch(self, texts: list[str]) -> list[IntentPrediction]:
        if not texts:
            return []
        out = []
        for row in self.probabilities(texts):
            order = np.argsort(-row)[:3]
            best = self.labels[order[0]]
            conf = float(row[order[0]])
            out.append(IntentPrediction(
                label=best if conf >= self.threshold else OUT_OF_SCOPE,
                confidence=min(conf, 1.0), best=best,
                top=[(self.labels[i], round(float(row[i]), 4)) for i in order]))
        return out

    def predict(self, text: str) -> IntentPrediction:
        if not text.strip():
            return IntentPrediction(label=OUT_OF_SCOPE, confidence=0.0, best=OUT_OF_SCOPE)
        return self.predict_batch([text])[0]

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(self, texts: list[str], labels: list[str]) -> IntentReport:
        from sklearn.metrics import precision_recall_fscore_support

        started = time.perf_counter()
        preds = self.predict_batch(texts)
        ms = (time.perf_counter() - started) * 1000 / max(len(texts), 1)
        in_scope = [i for i, lab in enumerate(labels) if lab != OUT_OF_SCOPE]
        oos = [i for i, lab in enumerate(labels) if lab == OUT_OF_SCOPE]
        truth = [labels[i] for i in in_scope]
        best = [preds[i].best for i in in_scope]
        final = [p.label for p in preds]
        names = sorted(set(truth))
        p, r, f, s = precision_recall_fscore_support(truth, best, labels=names, zero_division=0)
        confusions: dict[tuple[str, str], int] = {}
        for t, b in zip(truth, best, strict=True):
            if t != b:
                confusions[(t, b)] = confusions.get((t, b), 0) + 1
        top_conf = sorted(confusions.items(), key=lambda kv: -kv[1])[:15]
        return IntentReport(
            n=len(texts),
            accuracy=float(np.mean([t == b for t, b in zip(truth, best, strict=True)]))
            if truth else 0.0,
            accuracy_with_threshold=float(np.mean(
                [lab == fin for lab, fin in zip(labels, final, strict=True)])),
            macro_f1=float(np.mean(f)) if len(f) else 0.0,
            oos_recall=(float(np.mean([final[i] == OUT_OF_SCOPE for i in oos]))
                        if oos else None),
            oos_false_rejects=(float(np.mean([final[i] == OUT_OF_SCOPE for i in in_scope]))
                               if in_scope else None),
            threshold=self.threshold,
            ms_per_utterance=ms,
            per_class={n: ClassReport(precision=float(p[k]), recall=float(r[k]),
                                      f1=float(f[k]), support=int(s[k]))
                       for k, n in enumerate(names)},
            confusions=[(t, b, c) for (t, b), c in top_conf],
        )

    # -- files ----------------------------------------------------------------------------------
    def save(self, folder: Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {"coef": self.coef, "intercept": self.intercept}
        if self.ngrams is not None:
            arrays["idf"] = self.ngrams.idf
            (folder / "ngrams.json").write_text(
                json.dumps(self.ngrams.vocabulary, ensure_ascii=False), encoding="utf-8")
        np.savez_compressed(folder / "head.npz", **arrays)
        meta = {"format": FORMAT_VERSION, "labels": self.labels, "threshold": self.threshold,
                "features": self.features.model_dump(), "config": self.config.model_dump(),
                "provenance": self.provenance}
        (folder / "intent_model.json").write_text(
            json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: Path) -> IntentModel:
        folder = Path(folder)
        meta_file = folder / "intent_model.json"
        if not meta_file.exists():
            raise IntentDataError(f"{folder}: not an intent model (no intent_model.json); "
                                  "train one with `callwise intents train`")
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT_VERSION:
            raise IntentDataError(f"{folder}: model format {meta.get('format')} is not "
                                  f"{FORMAT_VERSION}; retrain it")
        config = IntentConfig.model_validate(meta["config"])
        features = FeatureSet.model_validate(meta["features"])
        head = np.load(folder / "head.npz")
        ngrams = None
        if features.ngram_weight:
            vocab = json.loads((folder / "ngrams.json").read_text(encoding="utf-8"))
            ngrams = _Ngrams(vocab, head["idf"], tuple(config.ngram_range))  # type: ignore[arg-type]
        return cls(meta["labels"], config, features, head["coef"], head["intercept"], ngrams,
                   float(meta["threshold"]), meta.get("provenance"))
