"""PII redaction for transcripts and generated text (zh and en), driven by a rules file.

Spoken numbers reach us in many spellings (ASR output: "6222 0212", "六二二二", "four five six"),
so we first read every digit the text carries, however written, group digits separated only by
spaces, dashes, dots, commas or brackets into runs, and classify each run by length and context
with the rules in `rules/redaction.toml`. Each finding says which rule fired and why.
"""

from __future__ import annotations

import functools
import re
import tomllib
from pathlib import Path

from pydantic import BaseModel

RULES_FILE = Path(__file__).with_name("rules") / "redaction.toml"

_CHAR_DIGITS = {**{c: str(i) for i, c in enumerate("0123456789")},
                **{c: str(i) for i, c in enumerate("０１２３４５６７８９")},
                **{c: str(i) for i, c in enumerate("零一二三四五六七八九")},
                "〇": "0", "幺": "1", "两": "2"}
_WORD_DIGITS = {"zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3",
                "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9"}
_TOKEN = re.compile(r"[A-Za-z]+|\S", re.UNICODE)
_SEPARATOR = re.compile(r"^[\s\-–—.,，、()（）]{0,3}$")
_DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}")


class Rule(BaseModel):
    name: str
    kind: str
    replacement: str
    why: str
    digits: int | None = None
    min_digits: int | None = None
    max_digits: int | None = None
    allow_x_last: bool = False
    prefix_pattern: str | None = None
    context: list[str] = []
    context_window: int = 40

    def matches(self, digits: str, before: str) -> bool:
        n = len(digits)
        if self.digits is not None and n != self.digits:
            return False
        if self.min_digits is not None and n < self.min_digits:
            return False
        if self.max_digits is not None and n > self.max_digits:
            return False
        if not self.allow_x_last and not digits.isdigit():
            return False
        if self.prefix_pattern and not re.match(self.prefix_pattern, digits):
            return False
        if self.context:
            window = before[-self.context_window :].lower()
            return any(cue in window for cue in self.context)
        return True


class Finding(BaseModel):
    rule: str
    kind: str
    start: int
    end: int
    why: str


class Redacted(BaseModel):
    text: str
    findings: list[Finding]


@functools.cache
def load_rules(path: Path = RULES_FILE) -> tuple[Rule, ...]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return tuple(Rule.model_validate(r) for r in data["rule"])


def _digit_tokens(text: str) -> list[tuple[str, int, int, bool]]:
    """(digit, start, end, written as an ASCII digit) for every digit however it is written."""
    out: list[tuple[str, int, int, bool]] = []
    for m in _TOKEN.finditer(text):
        tok = m.group()
        word = tok.lower()
        if word in _WORD_DIGITS and (word not in ("o", "oh") or out):
            out.append((_WORD_DIGITS[word], m.start(), m.end(), False))
        elif tok in _CHAR_DIGITS:
            out.append((_CHAR_DIGITS[tok], m.start(), m.end(), tok.isascii()))
        elif tok in ("X", "x") and out:
            out.append(("X", m.start(), m.end(), True))
    return out


def _joins(gap: str, left_ascii: bool, right_ascii: bool) -> bool:
    if not _SEPARATOR.match(gap):
        return False
    # "1,200,000" is an amount; "four one five, five five five" is a number read out.
    return not ("," in gap or "，" in gap) or not (left_ascii and right_ascii)


def _runs(text: str) -> list[tuple[str, int, int]]:
    runs: list[list] = []  # [digits, start, end, last token ascii]
    for digit, start, end, ascii_digit in _digit_tokens(text):
        if (runs and not runs[-1][0].endswith("X")
                and _joins(text[runs[-1][2] : start], runs[-1][3], ascii_digit)):
            runs[-1][0] += digit
            runs[-1][2], runs[-1][3] = end, ascii_digit
        else:
            runs.append([digit, start, end, ascii_digit])
    out = []
    for digits, start, end, _ in runs:
        if _DATE.fullmatch(text[start:end]):
            continue  # 2024-03-15 is a date, not an account number
        # An X only belongs to a run as the 18th character of an ID number.
        if "X" in digits and not (len(digits) == 18 and digits.index("X") == 17):
            continue
        out.append((digits, start, end))
    return out


def redact(text: str, rules: tuple[Rule, ...] | None = None) -> Redacted:
    rules = rules or load_rules()
    findings: list[Finding] = []
    for digits, start, end in _runs(text):
        for rule in rules:
            if rule.matches(digits, text[:start]):
                findings.append(Finding(rule=rule.name, kind=rule.kind, start=start, end=end,
                                        why=rule.why))
                break
    pieces, last = [], 0
    by_name = {r.name: r for r in rules}
    for f in findings:
        pieces.append(text[last : f.start])
        pieces.append(by_name[f.rule].replacement)
        last = f.end
    pieces.append(text[last:])
    return Redacted(text="".join(pieces), findings=findings)
