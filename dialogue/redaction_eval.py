"""Scores redaction against a labelled set: recall per kind, and false alarms."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from .redaction import redact


class RedactionScore(BaseModel):
    recall: dict[str, float]
    missed: list[str]
    false_alarms: list[str]
    lines: int
    spans: dict[str, int]


def score(path: Path) -> RedactionScore:
    found: dict[str, int] = {}
    total: dict[str, int] = {}
    missed, false_alarms, lines = [], [], 0
    for raw in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(raw)
        lines += 1
        text = row["text"]
        result = redact(text)
        covered = [(f.start, f.end) for f in result.findings]
        labelled = []
        for span in row["spans"]:
            start = text.index(span["text"])
            end = start + len(span["text"])
            labelled.append((start, end))
            total[span["kind"]] = total.get(span["kind"], 0) + 1
            # Every digit-bearing character of the span must be inside some redaction.
            inside = all(any(a <= i < b for a, b in covered)
                         for i in range(start, end) if not text[i].isspace()
                         and text[i] not in "-()")
            if inside:
                found[span["kind"]] = found.get(span["kind"], 0) + 1
            else:
                missed.append(f"{span['kind']}: {text}")
        for f in result.findings:
            if not any(a < f.end and f.start < b for a, b in labelled):
                false_alarms.append(f"{f.rule}: {text}")
    return RedactionScore(recall={k: found.get(k, 0) / n for k, n in total.items()},
                          missed=missed, false_alarms=false_alarms, lines=lines, spans=total)
