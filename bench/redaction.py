"""Redaction recall per kind and false alarms on our labelled set (fixtures/redaction).

    python bench/redaction.py
"""

from __future__ import annotations

import json
import time

from common import ROOT, machine


def main() -> None:
    from dialogue.redaction import redact
    from dialogue.redaction_eval import score

    path = ROOT / "fixtures" / "redaction" / "labelled.jsonl"
    result = score(path)
    print(f"machine: {machine()}")
    print(f"labelled set: {result.lines} lines, spans {result.spans}")
    for kind, recall in sorted(result.recall.items()):
        print(f"recall {kind:6} {recall:.3f}")
    print(f"false alarms: {len(result.false_alarms)}")
    for line in result.missed + result.false_alarms:
        print(f"  {line}")
    texts = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]
    t0 = time.perf_counter()
    for _ in range(20):
        for t in texts:
            redact(t)
    per = (time.perf_counter() - t0) / (20 * len(texts)) * 1000
    print(f"latency: {per:.3f} ms per line")


if __name__ == "__main__":
    main()
