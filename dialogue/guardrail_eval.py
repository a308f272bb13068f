"""Scores the guardrail rules against a labelled set of utterances (one expected rule or none)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from .guardrails import check


class GuardrailScore(BaseModel):
    lines: int
    positives: int
    caught: int
    false_alarms: list[str]
    missed: list[str]

    @property
    def recall(self) -> float:
        return self.caught / self.positives if self.positives else 1.0


def score(path: Path) -> GuardrailScore:
    lines = positives = caught = 0
    missed, false_alarms = [], []
    for raw in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(raw)
        lines += 1
        fired = [f.rule for f in check(row["text"], row["speaker"]).findings
                 if f.kind in ("override", "forbidden_claim")]
        if row["expect"]:
            positives += 1
            if row["expect"] in fired:
                caught += 1
            else:
                missed.append(f"{row['expect']}: {row['text']} (fired: {fired})")
        elif fired:
            false_alarms.append(f"{fired}: {row['text']}")
    return GuardrailScore(lines=lines, positives=positives, caught=caught,
                          false_alarms=false_alarms, missed=missed)
