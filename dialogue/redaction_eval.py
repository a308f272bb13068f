"""Scores redaction against a labelled set: recall per kind and per class (how the number was
spelled: "comma", "expiry", "arabic_indic", "words" ...), and false alarms."""

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
    # "CARD/comma" -> recall of the card numbers spelled that way, and how many there are
    recall_by_class: dict[str, float] = {}
    spans_by_class: dict[str, int] = {}


def score(path: Path) -> RedactionScore:
    found: dict[str, int] = {}
    total: dict[str, int] = {}
    found_class: dict[str, int] = {}
    total_class: dict[str, int] = {}
    missed, false_alarms, lines = [], [], 0
    for raw in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(raw)
        lines += 1
        text = row["text"]
        result = redact(text)
        labelled = []
        for span in row["spans"]:
            kind = span["kind"]
            group = f"{kind}/{span.get('class', 'unlabelled')}"
            start = text.index(span["text"])
            end = start + len(span["text"])
            labelled.append((start, end))
            total[kind] = total.get(kind, 0) + 1
            total_class[group] = total_class.get(group, 0) + 1
            # Every digit-bearing character of the span (digits in any script, number words;
            # not separators or invisible characters) must be inside a redaction of its kind:
            # a card hidden as [PHONE] would pass a second look as a phone number.
            covered = [(f.start, f.end) for f in result.findings if f.kind == kind]
            inside = all(any(a <= i < b for a, b in covered)
                         for i in range(start, end) if text[i].isalnum())
            if inside:
                found[kind] = found.get(kind, 0) + 1
                found_class[group] = found_class.get(group, 0) + 1
            else:
                missed.append(f"{group}: {text!r}")
        for f in result.findings:
            if not any(a < f.end and f.start < b for a, b in labelled):
                false_alarms.append(f"{f.rule}: {text!r}")
    return RedactionScore(
        recall={k: found.get(k, 0) / n for k, n in total.items()},
        missed=missed, false_alarms=false_alarms, lines=lines, spans=total,
        recall_by_class={k: found_class.get(k, 0) / n for k, n in total_class.items()},
        spans_by_class=total_class,
    )
