"""Guardrails on our labelled sets: redaction recall per kind and per spelling class and false
alarms, on the generated set and on the hand-written held-out one (fixtures/redaction);
override and forbidden-claim recall and false alarms (fixtures/guardrails); and the time they
take.

    python bench/guardrails.py
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from common import ROOT, machine

if TYPE_CHECKING:
    from dialogue.redaction_eval import RedactionScore


def report(name: str, result: RedactionScore) -> None:
    print(f"{name}: {result.lines} lines, spans {result.spans}")
    for kind, recall in sorted(result.recall.items()):
        print(f"recall {kind:6} {recall:.3f}")
        classes = sorted(k for k in result.recall_by_class if k.startswith(f"{kind}/"))
        for cls in classes:
            n = result.spans_by_class[cls]
            print(f"    {cls.split('/', 1)[1]:18} {result.recall_by_class[cls]:.3f}  ({n} spans)")
    print(f"false alarms: {len(result.false_alarms)}")
    for line in result.missed + result.false_alarms:
        print(f"  {line}")


def main() -> None:
    from dialogue.redaction import redact
    from dialogue.redaction_eval import score

    print(f"machine: {machine()}")
    path = ROOT / "fixtures" / "redaction" / "labelled.jsonl"
    report("labelled set", score(path))
    # Written by hand, apart from the generator and the rule tuning (fixtures/redaction/README.md)
    report("held-out set", score(ROOT / "fixtures" / "redaction" / "heldout.jsonl"))
    texts = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]
    t0 = time.perf_counter()
    for _ in range(20):
        for t in texts:
            redact(t)
    per = (time.perf_counter() - t0) / (20 * len(texts)) * 1000
    print(f"redaction latency: {per:.3f} ms per line")

    from dialogue.guardrail_eval import score as score_rules
    from dialogue.guardrails import check

    rules_path = ROOT / "fixtures" / "guardrails" / "labelled.jsonl"
    rules = score_rules(rules_path)
    print(f"guardrails: {rules.lines} utterances, {rules.positives} should fire; "
          f"recall {rules.recall:.3f}, false alarms {len(rules.false_alarms)}")
    for line in rules.missed + rules.false_alarms:
        print(f"  {line}")
    rows = [json.loads(x) for x in rules_path.read_text(encoding="utf-8").splitlines()]
    t0 = time.perf_counter()
    for _ in range(20):
        for row in rows:
            check(row["text"], row["speaker"])
    per = (time.perf_counter() - t0) / (20 * len(rows)) * 1000
    print(f"guardrail check (redaction included): {per:.3f} ms per utterance")


if __name__ == "__main__":
    main()
