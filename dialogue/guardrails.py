"""Guardrails on every text that is said or about to be said in a call.

Rules are data (`rules/guardrails.toml`, `rules/redaction.toml`): customer overrides (opt-out,
hand-off) that beat everything else, claims an agent or the bot must never make, and disclosures
that must be made by a deadline. Every finding names its rule and says why it fired.
"""

from __future__ import annotations

import functools
import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, PrivateAttr

from .redaction import redact

RULES_FILE = Path(__file__).with_name("rules") / "guardrails.toml"
Speaker = Literal["agent", "bot", "customer"]
FindingKind = Literal["override", "forbidden_claim", "missing_disclosure", "pii"]


class PatternRule(BaseModel):
    name: str
    why: str
    patterns: list[str]
    action: str | None = None
    due_seconds: float | None = None
    bot_only: bool = False

    _compiled: list[re.Pattern[str]] = PrivateAttr(default_factory=list)

    def model_post_init(self, _context: object) -> None:
        self._compiled = [re.compile(p, re.IGNORECASE) for p in self.patterns]

    def search(self, text: str) -> re.Match[str] | None:
        for pattern in self._compiled:
            match = pattern.search(text)
            if match:
                return match
        return None


class GuardrailRules(BaseModel):
    override: list[PatternRule] = Field(default_factory=list)
    forbidden: list[PatternRule] = Field(default_factory=list)
    disclosure: list[PatternRule] = Field(default_factory=list)


class Finding(BaseModel):
    kind: FindingKind
    rule: str
    why: str
    action: str | None = None
    evidence: str = Field("", description="the matched words (already redacted)")


class CheckedText(BaseModel):
    """A text after the guardrails: safe to show, store or speak only if `blocked` is False."""

    text: str  # redacted
    findings: list[Finding]

    @property
    def blocked(self) -> bool:
        return any(f.kind == "forbidden_claim" for f in self.findings)

    @property
    def override(self) -> Finding | None:
        return next((f for f in self.findings if f.kind == "override"), None)


@functools.cache
def load_rules(path: Path = RULES_FILE) -> GuardrailRules:
    return GuardrailRules.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))


def check(text: str, speaker: Speaker, rules: GuardrailRules | None = None) -> CheckedText:
    """Redact, then apply the rules that concern this speaker."""
    rules = rules or load_rules()
    redacted = redact(text)
    findings = [Finding(kind="pii", rule=f.rule, why=f.why) for f in redacted.findings]
    safe = redacted.text
    if speaker == "customer":
        for rule in rules.override:
            if m := rule.search(safe):
                findings.insert(0, Finding(kind="override", rule=rule.name, why=rule.why,
                                           action=rule.action, evidence=m.group()))
                break  # the first override decides what happens next
    else:
        for rule in rules.forbidden:
            if m := rule.search(safe):
                findings.append(Finding(kind="forbidden_claim", rule=rule.name, why=rule.why,
                                        evidence=m.group()))
    return CheckedText(text=safe, findings=findings)


class DisclosureTracker:
    """Which required disclosures our side has made in a call, and which are overdue."""

    def __init__(self, automated: bool, rules: GuardrailRules | None = None) -> None:
        self.rules = [r for r in (rules or load_rules()).disclosure if automated or not r.bot_only]
        self.made: dict[str, float] = {}
        self._alerted: set[str] = set()

    def hear(self, text: str, speaker: Speaker, at: float) -> list[str]:
        """Feed what was said at `at` seconds into the call; returns disclosures it made."""
        if speaker == "customer":
            return []
        made = [r.name for r in self.rules if r.name not in self.made and r.search(text)]
        for name in made:
            self.made[name] = at
        return made

    def overdue(self, now: float) -> list[Finding]:
        """Disclosures past their deadline and not yet made; each is reported once."""
        out = []
        for r in self.rules:
            due = r.due_seconds if r.due_seconds is not None else float("inf")
            if r.name not in self.made and now >= due and r.name not in self._alerted:
                self._alerted.add(r.name)
                out.append(Finding(kind="missing_disclosure", rule=r.name, why=r.why))
        return out
