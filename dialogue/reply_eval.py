"""Scores reply cards against a held-out set of customer questions (`fixtures/replies/`).

A card is right when it is in the customer's language, states the fact that answers the question
(every group of `must` has one of its spellings in the card: the right figure for the slot
asked), quotes no figure of a neighbouring plan (`wrong`), invents no figure (every figure is in
the policy, the call, or the case's worked sums), leaves no `[amount]` slot unfilled, is not an
echo of the customer nor text about the reply ("The agent's reply is: ..."), and, where the
customer asks for a promise, does not give it.

The scorer reads only the case and the card: it knows nothing of how the card was made, so the
same set scores exemplar cards, policy cards and any model's replies.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from .suggest import _CJK, _echoes, _figures
from .types import Turn

_LATIN = re.compile(r"[a-zA-Z]")
_FIGURE_ALT = re.compile(r"^\d+(?:\.\d+)?%?$")
_META = re.compile(r"^\s*[\"“「]|agent'?s reply|best agent|here(?:'s| is) (?:a|the|my) "
                   r"(?:reply|response)|\breply:|坐席的?回复|回复如下", re.IGNORECASE)
_AFFIRM = re.compile(r"^\s*(?:yes|yeah|sure|absolutely|of course|definitely|certainly|"
                     r"no problem|当然|可以的?[，,。！!]|没问题|肯定|一定|好的，?保证)",
                     re.IGNORECASE)
_NEGATION = re.compile(r"\b(?:not|can'?t|cannot|no|won'?t|isn'?t|unable|depends)\b|"
                       r"不|无法|没法|以审核", re.IGNORECASE)


class ReplyCase(BaseModel):
    id: str
    said: list[str] = Field(min_length=1, description="the customer's turns, last one asked")
    must: list[list[str]] = Field(default_factory=list)
    wrong: list[str] = Field(default_factory=list)
    allowed: list[str] = Field(default_factory=list, description="figures of worked sums")
    kind: Literal["fact", "no_fact"] = "fact"
    no_promise: bool = False

    @property
    def language(self) -> str:
        return "zh" if self.id.startswith("zh") else "en"

    def history(self) -> list[Turn]:
        greeting = ("您好，我是海港银行的小林，本次通话将被录音。" if self.language == "zh"
                    else "Hi, this is Alex from Harbor Bank; this call is recorded.")
        turns = [Turn(speaker="agent", text=greeting)]
        for i, line in enumerate(self.said):
            if i:
                turns.append(Turn(speaker="agent", text="好的，您说。" if self.language == "zh"
                                  else "Sure, go on."))
            turns.append(Turn(speaker="customer", text=line))
        return turns


class Verdict(BaseModel):
    ok: bool
    problems: list[str] = Field(default_factory=list)


def read_cases(folder: Path) -> list[ReplyCase]:
    cases = []
    for path in sorted(Path(folder).glob("*.jsonl")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    cases.append(ReplyCase.model_validate_json(line))
                except ValueError as exc:
                    raise ValueError(f"{path}:{n}: not a reply case: {exc}") from exc
    return cases


def _norm(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return re.sub(r"(?<=\d),(?=\d{3})", "", text)


def _has(text: str, spelling: str) -> bool:
    alt = _norm(spelling)
    if _FIGURE_ALT.match(alt):
        return alt in _figures(text)
    if alt.isascii():
        return re.search(rf"(?<![a-z]){re.escape(alt)}(?![a-z])", text) is not None
    return alt in text


def judge(card: str, case: ReplyCase, policy_figures: set[str]) -> Verdict:
    problems: list[str] = []
    text = _norm(card)
    if not text.strip():
        return Verdict(ok=False, problems=["empty"])
    cjk, latin = len(_CJK.findall(card)), len(_LATIN.findall(card))
    if (case.language == "zh") != (cjk > latin / 4):
        problems.append("language")
    if "[amount]" in text or ("[" in text and "]" in text):
        problems.append("unfilled slot")
    for group in case.must:
        if not any(_has(text, s) for s in group):
            problems.append(f"missing {group[0]}")
    for figure in case.wrong:
        if _has(text, figure):
            problems.append(f"wrong figure {figure}")
    known = policy_figures | _figures(" ".join(t.text for t in case.history()))
    known |= {f for s in case.allowed + [g for grp in case.must for g in grp]
              for f in _figures(s)}
    invented = sorted(_figures(card) - known - {f.replace(",", "") for f in case.wrong})
    if invented:
        problems.append("invented " + ", ".join(invented))
    if any(_echoes(card, line) for line in case.said) or _META.search(card):
        problems.append("echo or meta text")
    if case.no_promise and _AFFIRM.search(card) and not _NEGATION.search(card[:40]):
        problems.append("promised")
    return Verdict(ok=not problems, problems=problems)


class ReplyScore(BaseModel):
    mode: str
    cases: int
    first_right: float = Field(description="share of first cards that are right")
    top3_right: float
    invented_rate: float = Field(description="share of first cards with an invented figure")
    by_language: dict[str, float]
    failures: list[tuple[str, str, list[str]]] = Field(
        default_factory=list, description="(case, first card, problems)")


def score(mode: str, cases: list[ReplyCase], cards: dict[str, list[str]],
          policy_figures: set[str]) -> ReplyScore:
    first = {c.id: judge((cards.get(c.id) or [""])[0], c, policy_figures) for c in cases}
    top3 = {c.id: any(judge(t, c, policy_figures).ok for t in (cards.get(c.id) or [""])[:3])
            for c in cases}
    by_language: dict[str, float] = {}
    for language in sorted({c.language for c in cases}):
        mine = [c for c in cases if c.language == language]
        by_language[language] = round(sum(first[c.id].ok for c in mine) / len(mine), 3)
    n = len(cases)
    return ReplyScore(
        mode=mode, cases=n, first_right=round(sum(v.ok for v in first.values()) / n, 3),
        top3_right=round(sum(top3.values()) / n, 3),
        invented_rate=round(sum(any(p.startswith("invented") for p in v.problems)
                                for v in first.values()) / n, 3),
        by_language=by_language,
        failures=[(c.id, (cards.get(c.id) or [""])[0], first[c.id].problems)
                  for c in cases if not first[c.id].ok])


def dump(result: ReplyScore) -> str:
    return json.dumps(result.model_dump(), ensure_ascii=False, indent=1)


def instant_first_cards(suggester, cases: list[ReplyCase]) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    """The cards `suggester` shows at once for each case (no LLM), in order."""
    cards = {}
    for case in cases:
        history = case.history()
        assist = suggester.instant(case.id, history, case.language)
        cards[case.id] = [s.text for s in suggester.instant_cards(assist, history)]
    return cards


def score_instant(mode: str, suggester, cases: list[ReplyCase]) -> ReplyScore:  # type: ignore[no-untyped-def]
    """The instant cards `suggester` shows, scored against its own policy's figures."""
    return score(mode, cases, instant_first_cards(suggester, cases), _figures(suggester.policy))
