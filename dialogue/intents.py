"""Intent model: frozen transformer sentence encoders + character n-grams -> a linear classifier.

Why this shape: a contact center must retrain on its own intents in minutes on a CPU, with a few
dozen examples per intent. Frozen encoders carry meaning (MiniLM for English wording, e5 for
Mandarin and cross-lingual paraphrase); character n-grams carry the exact words an intent hinges
on (余额 vs 逾期, "late fee" vs "fee"); a multinomial logistic regression on top trains in
seconds.

Which features a dataset needs depends on its size (see `_default_candidates`), so training tries
a few feature sets and keeps the best by cross-validated accuracy, then a few regularisation
strengths for it, then how much a nearest-neighbour vote (the k most similar training lines, in
the chosen encoders' space) is blended into the head's probabilities (banking77 gains from it;
our few dozen lines per intent do not, and CV keeps it at 0 there).

Out of scope: the best intent's probability alone lets near-domain lines through ("how do I
activate my new card" is confidently `card_lost`). Each line gets an in-scope score from several
detectors (`OOS_DETECTORS`): the head's largest logit, the largest probability, the cosine
similarity to the nearest training line of the predicted intent, and the Mahalanobis distance to
the nearest intent's centroid (one shared covariance) in the multilingual encoder's space. Each
raw value becomes the share of in-scope training lines that scored lower out of fold, so the
detectors share one scale without any out-of-scope data; the shares are averaged, and a line
below the threshold is `out_of_scope`. The threshold is the `target_in_scope_rejection` quantile
of the training lines' own out-of-fold scores: it is set on in-scope lines the head did not see,
never on out-of-scope ones.

A trained model is a folder of plain files (no pickles): `intent_model.json` (labels, features,
threshold, how it was trained), `head.npz` (weights, and what the detectors need: the training
vectors by intent, the whitening and centroids, the out-of-fold reference scores), `ngrams.json`
(n-gram vocabulary, when n-grams were chosen).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field, field_validator
from scipy import sparse

from .encoders import get_encoder
from .types import OUT_OF_SCOPE, IntentPrediction

FORMAT_VERSION = 2
OOS_DETECTORS = ("max_logit", "probability", "knn", "mahalanobis")


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
    C: float = Field(10.0, gt=0, description="regularisation while the feature sets are compared")
    C_grid: list[float] = Field(
        default_factory=lambda: [30.0, 100.0],
        description="further C values tried by CV on the chosen feature set; the best is kept")
    vote_weights: list[float] = Field(
        default_factory=lambda: [0.0, 0.2, 0.3, 0.5],
        description="weights of a nearest-neighbour vote (in the chosen encoders' space) blended "
        "into the head's probabilities, tried by CV; 0 = the head alone")
    vote_k: int = Field(10, ge=1, description="neighbours in the vote")
    oos_detectors: list[str] = Field(
        default_factory=lambda: ["max_logit", "probability", "knn", "mahalanobis"],
        description=f"out-of-scope detectors averaged into the in-scope score ({OOS_DETECTORS})")
    oos_encoder: str = Field("e5", description="encoder whose vectors knn and mahalanobis use")
    threshold: float | None = Field(
        None, description="out of scope below this in-scope score (0-1, the mean share of "
        "in-scope training lines that scored lower); None = calibrate by CV")
    target_in_scope_rejection: float = Field(
        0.05, ge=0, lt=1, description="calibration rejects this share of the in-scope training "
        "lines' out-of-fold scores")
    cv_folds: int = 3

    @field_validator("oos_detectors")
    @classmethod
    def _known_detectors(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(OOS_DETECTORS))
        if unknown or not value:
            raise ValueError(f"oos_detectors: {unknown or 'none'}; choose from {OOS_DETECTORS}")
        return value


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


def _softmax(logits: np.ndarray) -> np.ndarray:
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


class _Novelty:
    """How far a line lies from the training lines in one encoder's space: cosine similarity to
    the nearest training line of an intent, and the Mahalanobis distance to the nearest intent's
    centroid under one shared (Ledoit-Wolf shrunk) covariance."""

    def __init__(self, bank: np.ndarray, starts: np.ndarray, whiten: np.ndarray,
                 means: np.ndarray) -> None:
        self.bank = bank.astype(np.float32)  # training vectors, sorted by intent
        self.starts = starts.astype(np.int64)  # where each intent's rows begin in `bank`
        self.whiten = whiten.astype(np.float32)
        self.means = means.astype(np.float32)  # whitened centroids
        self._mean_sq = (self.means.astype(np.float64) ** 2).sum(1)

    @classmethod
    def fit(cls, vectors: np.ndarray, y: np.ndarray, n_classes: int) -> _Novelty:
        from sklearn.covariance import LedoitWolf

        vectors = vectors.astype(np.float64)
        order = np.argsort(y, kind="stable")
        starts = np.searchsorted(y[order], np.arange(n_classes))
        mu = np.stack([vectors[y == c].mean(0) for c in range(n_classes)])
        precision = LedoitWolf().fit(vectors - mu[y]).precision_
        chol = np.linalg.cholesky((precision + precision.T) / 2)  # d^2 = |(x - mu) @ chol|^2
        return cls(vectors[order], starts, chol, mu @ chol)

    def knn(self, vectors: np.ndarray, intents: np.ndarray) -> np.ndarray:
        out = np.empty(len(vectors), np.float32)
        for i in range(0, len(vectors), 1024):
            sims = vectors[i:i + 1024] @ self.bank.T
            by_intent = np.maximum.reduceat(sims, self.starts, axis=1)
            out[i:i + 1024] = by_intent[np.arange(len(sims)), intents[i:i + 1024]]
        return out

    def mahalanobis(self, vectors: np.ndarray) -> np.ndarray:
        z = (vectors @ self.whiten).astype(np.float64)
        d2 = (z ** 2).sum(1)[:, None] - 2 * z @ self.means.T + self._mean_sq[None, :]
        return -d2.min(1)  # higher = more in scope, like every detector

    def arrays(self) -> dict[str, np.ndarray]:
        return {"oos_bank": self.bank, "oos_starts": self.starts, "oos_whiten": self.whiten,
                "oos_means": self.means}


_VOTE_TEMPERATURE = 0.05  # cosine similarities -> weights: exp((sim - best) / T)


def _vote_space(blocks: dict[str, np.ndarray], encoders: Sequence[str]) -> np.ndarray:
    """The chosen encoders' vectors side by side, unit length again."""
    return (np.hstack([blocks[e] for e in encoders]) / np.sqrt(len(encoders))).astype(np.float32)


def _vote(vectors: np.ndarray, bank: np.ndarray, bank_y: np.ndarray, n_classes: int,
          k: int) -> np.ndarray:
    """(lines, intents): a similarity-weighted vote of the k nearest training lines."""
    k = min(k, len(bank))
    out = np.zeros((len(vectors), n_classes))
    for i in range(0, len(vectors), 1024):
        sims = vectors[i:i + 1024] @ bank.T
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(sims, idx, 1).astype(np.float64)
        weights = np.exp((top - top.max(1, keepdims=True)) / _VOTE_TEMPERATURE)
        rows = np.repeat(np.arange(len(sims)), k)
        np.add.at(out[i:i + 1024], (rows, bank_y[idx].ravel()), weights.ravel())
    return out / out.sum(1, keepdims=True)


def _raw_scores(detectors: Sequence[str], logits: np.ndarray, probabilities: np.ndarray,
                vectors: np.ndarray | None, novelty: _Novelty | None) -> np.ndarray:
    """(lines, detectors): each detector's raw value, higher = more in scope."""
    cols = []
    for name in detectors:
        if name == "max_logit":
            cols.append(logits.max(1))
        elif name == "probability":
            cols.append(probabilities.max(1))
        elif name == "knn":
            assert novelty is not None and vectors is not None
            cols.append(novelty.knn(vectors, probabilities.argmax(1)))
        elif name == "mahalanobis":
            assert novelty is not None and vectors is not None
            cols.append(novelty.mahalanobis(vectors))
        else:
            raise IntentDataError(f"unknown out-of-scope detector {name!r}")
    return np.stack(cols, 1).astype(np.float64)


def _in_scope_score(raw: np.ndarray, references: np.ndarray) -> np.ndarray:
    """Mean over detectors of the share of in-scope reference lines that scored lower (0-1)."""
    n = references.shape[1]
    grid = (np.arange(n) + 0.5) / n
    return np.mean([np.interp(raw[:, j], references[j], grid, left=0.0, right=1.0)
                    for j in range(raw.shape[1])], 0)


class IntentModel:
    """A trained intent classifier; `predict` is what a live call uses."""

    def __init__(self, labels: list[str], config: IntentConfig, features: FeatureSet,
                 coef: np.ndarray, intercept: np.ndarray, ngrams: _Ngrams | None,
                 threshold: float, provenance: dict[str, object] | None = None, *,
                 C: float | None = None, novelty: _Novelty | None = None,
                 references: np.ndarray | None = None, vote_weight: float = 0.0,
                 vote_bank: np.ndarray | None = None,
                 vote_labels: np.ndarray | None = None) -> None:
        self.labels = labels
        self.config = config
        self.features = features
        self.coef = coef.astype(np.float32)
        self.intercept = intercept.astype(np.float32)
        self.ngrams = ngrams
        self.threshold = threshold
        self.provenance = provenance or {}
        self.C = C if C is not None else config.C
        self.novelty = novelty
        # (detectors, lines): the in-scope training lines' sorted out-of-fold raw scores
        self.references = (references if references is not None
                           else np.zeros((len(config.oos_detectors), 0))).astype(np.float64)
        self.vote_weight = vote_weight if vote_bank is not None else 0.0
        self.vote_bank = vote_bank.astype(np.float32) if vote_bank is not None else None
        self.vote_labels = vote_labels.astype(np.int64) if vote_labels is not None else None

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
        distance = bool({"knn", "mahalanobis"} & set(config.oos_detectors))
        specs = sorted({e for c in config.candidates for e in c.encoders}
                       | ({config.oos_encoder} if distance else set()))
        blocks = {spec: get_encoder(spec).encode(texts) for spec in specs}
        use_grams = any(c.ngram_weight for c in config.candidates)
        ngrams = (_Ngrams.fit(texts, config.ngram_range, config.ngram_min_df)
                  if use_grams else None)
        grams = ngrams.transform(texts) if ngrams is not None else None

        folds = min(config.cv_folds, int(np.bincount(y).min()))
        splits = (list(StratifiedKFold(folds, shuffle=True, random_state=0).split(texts, y))
                  if folds >= 2 else [])

        def cross_validate(X: sparse.csr_matrix, C: float) -> tuple[float, np.ndarray]:
            oof = np.zeros((len(y), len(classes)), np.float64)
            for tr, te in splits:
                oof[te] = _fit(X[tr], y[tr], C).decision_function(X[te])
            return (float((oof.argmax(1) == y).mean()) if splits else 0.0), oof

        # 1. the feature sets at config.C; 2. C values for the best one; 3. the vote's weight.
        trials: list[tuple[float, int, np.ndarray]] = []
        for n, candidate in enumerate(config.candidates):
            accuracy, oof = cross_validate(_assemble(candidate, blocks, grams), config.C)
            trials.append((accuracy, -n, oof))
        accuracy, neg_n, oof = max(trials, key=lambda t: (t[0], t[1]))
        chosen = config.candidates[-neg_n]
        X = _assemble(chosen, blocks, grams)
        c_trials = [(accuracy, 0, config.C, oof)]
        if splits:
            for n, C in enumerate([c for c in config.C_grid if c != config.C], 1):
                c_accuracy, c_oof = cross_validate(X, C)
                c_trials.append((c_accuracy, -n, C, c_oof))
        accuracy, _, C, oof = max(c_trials, key=lambda t: (t[0], t[1]))

        space = _vote_space(blocks, chosen.encoders)
        oof_p = _softmax(oof)
        weights = sorted({0.0, *config.vote_weights}) if splits else [0.0]
        oof_vote = np.zeros_like(oof_p)
        if len(weights) > 1:
            for tr, te in splits:
                oof_vote[te] = _vote(space[te], space[tr], y[tr], len(classes), config.vote_k)
        v_trials = [(float((((1 - w) * oof_p + w * oof_vote).argmax(1) == y).mean()), -w, w)
                    for w in weights]
        _, _, vote_weight = max(v_trials)
        oof_p = (1 - vote_weight) * oof_p + vote_weight * oof_vote

        # Out-of-fold raw detector scores of the in-scope training lines: the reference each
        # detector's values are ranked against, and the calibration of the threshold.
        vectors = blocks[config.oos_encoder] if distance else None
        raw = np.zeros((len(y), len(config.oos_detectors)))
        for tr, te in splits:
            fold_novelty = (_Novelty.fit(vectors[tr], y[tr], len(classes))
                            if vectors is not None else None)
            raw[te] = _raw_scores(config.oos_detectors, oof[te], oof_p[te],
                                  vectors[te] if vectors is not None else None, fold_novelty)
        clf = _fit(X, y, C)
        novelty = _Novelty.fit(vectors, y, len(classes)) if vectors is not None else None
        if not splits:  # too few lines per intent to hold any out: rank against themselves
            logits = clf.decision_function(X)
            raw = _raw_scores(config.oos_detectors, logits, _softmax(logits), vectors, novelty)
        references = np.sort(raw.T, axis=1)
        scores = _in_scope_score(raw, references)
        threshold = config.threshold
        if threshold is None:
            threshold = (float(np.quantile(scores, config.target_in_scope_rejection))
                         if splits else 0.0)
        provenance = {
            "source": source, "examples": len(texts), "intents": len(classes),
            "features": chosen.describe(), "C": C, "vote_weight": vote_weight,
            "cv_accuracy": {config.candidates[-t[1]].describe(): round(t[0], 4) for t in trials},
            "cv_accuracy_by_C": {f"{t[2]:g}": round(t[0], 4) for t in c_trials},
            "cv_accuracy_by_vote_weight": {f"{t[2]:g}": round(t[0], 4) for t in v_trials},
            "oos": {"detectors": "+".join(config.oos_detectors),
                    "cv_in_scope_rejected": round(float(np.mean(scores < threshold)), 4)},
            "train_seconds": round(time.perf_counter() - started, 1)}
        return cls(classes, config, chosen, clf.coef_, clf.intercept_,
                   ngrams if chosen.ngram_weight else None, threshold, provenance, C=C,
                   novelty=novelty, references=references, vote_weight=vote_weight,
                   vote_bank=space if vote_weight else None,
                   vote_labels=y if vote_weight else None)

    # -- inference ------------------------------------------------------------------------------
    def _forward(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(logits of the head, probabilities, the out-of-scope encoder's vectors or None)."""
        specs = list(self.features.encoders)
        if self.novelty is not None and self.config.oos_encoder not in specs:
            specs.append(self.config.oos_encoder)
        blocks = {spec: get_encoder(spec).encode(texts) for spec in specs}
        grams = self.ngrams.transform(texts) if self.ngrams is not None else None
        X = _assemble(self.features, blocks, grams)
        logits = np.asarray(X @ self.coef.T, dtype=np.float64) + self.intercept
        probabilities = _softmax(logits)
        if self.vote_weight and self.vote_bank is not None and self.vote_labels is not None:
            vote = _vote(_vote_space(blocks, self.features.encoders), self.vote_bank,
                         self.vote_labels, len(self.labels), self.config.vote_k)
            probabilities = (1 - self.vote_weight) * probabilities + self.vote_weight * vote
        vectors = blocks.get(self.config.oos_encoder) if self.novelty is not None else None
        return logits, probabilities, vectors

    def probabilities(self, texts: list[str]) -> np.ndarray:
        return self._forward(texts)[1]

    def scores(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (lines, intents), in-scope score (lines,)): a line whose score is
        below `threshold` is out of scope."""
        logits, probabilities, vectors = self._forward(texts)
        raw = _raw_scores(self.config.oos_detectors, logits, probabilities, vectors,
                          self.novelty)
        return probabilities, _in_scope_score(raw, self.references)

    def predict_batch(self, texts: list[str]) -> list[IntentPrediction]:
        if not texts:
            return []
        out = []
        probabilities, in_scope = self.scores(texts)
        for row, score in zip(probabilities, in_scope, strict=True):
            order = np.argsort(-row)[:3]
            best = self.labels[order[0]]
            conf = float(row[order[0]])
            out.append(IntentPrediction(
                label=best if score >= self.threshold else OUT_OF_SCOPE,
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
        p, r, f, s = (precision_recall_fscore_support(truth, best, labels=names, zero_division=0)
                      if truth else ([], [], [], []))  # an out-of-scope-only set
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
        arrays = {"coef": self.coef, "intercept": self.intercept,
                  "oos_references": self.references}
        if self.novelty is not None:
            arrays.update(self.novelty.arrays())
        if self.vote_bank is not None and self.vote_labels is not None:
            arrays.update(vote_bank=self.vote_bank, vote_labels=self.vote_labels)
        if self.ngrams is not None:
            arrays["idf"] = self.ngrams.idf
            (folder / "ngrams.json").write_text(
                json.dumps(self.ngrams.vocabulary, ensure_ascii=False), encoding="utf-8")
        np.savez_compressed(folder / "head.npz", **arrays)
        meta = {"format": FORMAT_VERSION, "labels": self.labels, "threshold": self.threshold,
                "C": self.C, "vote_weight": self.vote_weight,
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
        novelty = (_Novelty(head["oos_bank"], head["oos_starts"], head["oos_whiten"],
                            head["oos_means"]) if "oos_bank" in head.files else None)
        vote = "vote_bank" in head.files
        return cls(meta["labels"], config, features, head["coef"], head["intercept"], ngrams,
                   float(meta["threshold"]), meta.get("provenance"), C=float(meta["C"]),
                   novelty=novelty, references=head["oos_references"],
                   vote_weight=float(meta.get("vote_weight", 0.0)),
                   vote_bank=head["vote_bank"] if vote else None,
                   vote_labels=head["vote_labels"] if vote else None)
