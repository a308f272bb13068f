"""Which policy fact the customer asked for, and the figures a right answer states.

A reply card is right when it states the fact that answers the question the customer asked, for
the plan they named: the 6-month fee for a 6-month question, not the 3-month one an exemplar
from another call happened to quote. `FactBook` reads the policy's answers (`facts.toml` beside
`policy.md`), embeds their example questions with the multilingual encoder the playbook uses, and
for a customer's line returns the `AskedFact`: the fact, the plan length and amount the customer
named, the figures that must appear, the figures of the neighbouring plans that must not, and a
sentence that states it in the customer's language (for an amount the customer named, the monthly
payment worked out with the policy's formula).

Matching is by meaning (nearest example question, above a floor) so a phrasing nobody wrote down
still finds its fact; the plan length is read from the words, digits or Chinese numerals.
"""

from __future__ import annotations

import re
import tomllib
from decimal import ROUND_HALF_UP, Decimal
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from .encoders import get_encoder

FACTS_FILE = Path(__file__).with_name("data") / "playbook" / "facts.toml"
# e5 cosines sit high (unrelated lines ~0.75, a greeting ~0.87 to its nearest question); below
# this the customer asked something the policy does not answer, and no fact beats a wrong one.
MATCH_FLOOR = 0.88

_EN_NUMBERS = {"three": 3, "six": 6, "twelve": 12, "a year": 12, "one year": 12,
               "half a year": 6, "half-year": 6, "half year": 6}
_ZH_NUMBERS = {"三": 3, "六": 6, "十二": 12, "一年": 12, "半年": 6, "两年": 24, "二十四": 24}
_MONTHS_EN = re.compile(r"\b(\d{1,2}|three|six|twelve|twenty[- ]four)[- ]?(?:monthly|months?|"
                        r"instal?lments?|payments?|mo)\b|\b(a year|one year|half[- ]a? ?year)\b",
                        re.IGNORECASE)
_MONTHS_ZH = re.compile(r"(\d{1,2}|十二|二十四|三|六)\s*(?:期|个月|個月)|(一年|半年|两年)")
_AMOUNT = re.compile(r"(?<![\d.])(\d{1,3}(?:,\d{3})+|\d{4,7})(?:\s*(?:元|块|dollars?|yuan))?")
_ZH_AMOUNT = re.compile(r"([一二两三四五六七八九十]+)(万|千)([一二三四五六七八九])?")
# Questions about a plan's fee and about its monthly payment are answered by the same replies.
_FAMILY = {"instalment_payment": "instalment_fee"}
_ZH_DIGITS = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8,
              "九": 9}


class Fact(BaseModel):
    id: str
    topic: str
    months: int | None = None
    figures: list[str] = Field(default_factory=list)
    promise: bool = Field(False, description="a question that asks for a promise the agent must "
                          "not make (approval, a waiver, a limit)")
    en: str
    zh: str
    asks_en: list[str] = Field(default_factory=list)
    asks_zh: list[str] = Field(default_factory=list)


class AskedFact(BaseModel):
    fact: Fact
    score: float = Field(description="cosine of the customer's line to the nearest question")
    months: int | None = None
    amount: int | None = None
    must: list[str] = Field(description="figures a right answer states")
    wrong: list[str] = Field(description="figures of the neighbouring plans: a wrong answer")
    statement: str = Field(description="the answer in the customer's language")


def _money(value: Decimal) -> str:
    rounded = value.quantize(Decimal("1"), rounding=ROUND_HALF_UP)
    return f"{int(rounded):,}"


def read_months(text: str) -> int | None:
    m = _MONTHS_EN.search(text)
    if m:
        word = (m.group(1) or m.group(2)).lower().replace("-", " ")
        if word.isdigit():
            return int(word)
        return {"twenty four": 24}.get(word) or _EN_NUMBERS.get(word)
    m = _MONTHS_ZH.search(text)
    if m:
        word = m.group(1) or m.group(2)
        return int(word) if word.isdigit() else _ZH_NUMBERS.get(word)
    return None


def read_amount(text: str) -> int | None:
    """An amount the customer named (3,000 / 6000 / 六千 / 一万二), not a plan length."""
    for m in _AMOUNT.finditer(text):
        value = int(m.group(1).replace(",", ""))
        if value >= 100:
            return value
    m = _ZH_AMOUNT.search(text)
    if m:
        head = sum(_ZH_DIGITS.get(c, 0) for c in m.group(1).replace("十", "")) or 1
        if "十" in m.group(1):
            head = 10 + (head if m.group(1) != "十" else 0)
        unit = 10_000 if m.group(2) == "万" else 1_000
        tail = _ZH_DIGITS.get(m.group(3) or "", 0) * unit // 10
        return head * unit + tail
    return None


class FactBook:
    def __init__(self, facts: list[Fact], encoder: str = "e5") -> None:
        self.facts = facts
        self.encoder = encoder
        self._by_topic: dict[str, list[Fact]] = {}
        for f in facts:
            self._by_topic.setdefault(f.topic, []).append(f)

    @classmethod
    def load(cls, path: Path = FACTS_FILE, encoder: str = "e5") -> FactBook:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        return cls([Fact.model_validate(f) for f in data.get("fact", [])], encoder)

    @cached_property
    def _index(self) -> tuple[np.ndarray, list[Fact]]:
        asks, owners = [], []
        for f in self.facts:
            for q in f.asks_en + f.asks_zh:
                asks.append(q)
                owners.append(f)
        return get_encoder(self.encoder).encode(asks), owners

    def topic_of(self, text: str) -> str | None:
        """The fact topic a line asks about (the plan-fee and payment questions are one
        family), or None; cached, since the same exemplar contexts come back call after call."""
        return self._topics(text)

    @cached_property
    def _topics(self):  # type: ignore[no-untyped-def]
        @lru_cache(maxsize=4096)
        def topic(text: str) -> str | None:
            found = self._nearest(text)
            return None if found is None else _FAMILY.get(found[0].topic, found[0].topic)
        return topic

    def _nearest(self, text: str) -> tuple[Fact, float] | None:
        """The fact whose example question is nearest to `text`, and its cosine, above the
        floor."""
        if not text.strip():
            return None
        vectors, owners = self._index
        scores = vectors @ get_encoder(self.encoder).encode([text])[0]
        best = int(np.argmax(scores))
        return (owners[best], float(scores[best])) if scores[best] >= MATCH_FLOOR else None

    def fee(self, months: int) -> Decimal | None:
        for f in self._by_topic.get("instalment_fee", []):
            if f.months == months and f.figures:
                return Decimal(f.figures[0].rstrip("%")) / 100
        return None

    def match(self, text: str, language: str) -> AskedFact | None:
        found = self._nearest(text)
        return None if found is None else self.resolve(found[0], text, language, found[1])

    def family(self, asked: AskedFact) -> str:
        return _FAMILY.get(asked.fact.topic, asked.fact.topic)

    def resolve(self, fact: Fact, text: str, language: str, score: float = 1.0) -> AskedFact:
        """The fact for the plan and amount the customer named."""
        months, amount = read_months(text), read_amount(text)
        siblings = self._by_topic.get(fact.topic, [fact])
        if fact.topic in ("instalment_fee", "instalment_payment") and months:
            fees = [f for f in self._by_topic.get("instalment_fee", []) if f.months == months]
            if fact.topic == "instalment_fee" and fees:
                fact = fees[0]
            siblings = self._by_topic.get("instalment_fee", [])
        statement = fact.zh if language == "zh" else fact.en
        must = list(fact.figures)
        if fact.topic == "instalment_payment" or (fact.topic == "instalment_fee" and amount):
            # a customer who names an amount wants the sum; it carries the fee with it
            must, statement = self._payment(amount, months, language) or (must, statement)
        wrong = sorted({g for f in siblings if f.months and f.months != months and months
                        for g in f.figures} - set(must))
        return AskedFact(fact=fact, score=round(score, 4), months=months, amount=amount,
                         must=must, wrong=wrong, statement=statement)

    def _payment(self, amount: int | None, months: int | None, language: str
                 ) -> tuple[list[str], str] | None:
        """The monthly payment for the customer's own amount and plan: principal / months +
        principal x monthly fee, the policy's formula."""
        if amount is not None and months is None:
            options = [(m, self._payment(amount, m, language)) for m in (3, 6, 12)]
            if all(o for _, o in options):
                pays = [o[0][0] for _, o in options if o]
                if language == "zh":
                    return pays, (f"{amount:,}元的话：分3期每月{pays[0]}元，分6期每月{pays[1]}元，"
                                  f"分12期每月{pays[2]}元，都已含手续费。")
                return pays, (f"On {amount:,} it's {pays[0]} a month over 3 months, {pays[1]} "
                              f"over 6 or {pays[2]} over 12, fee included.")
        fee = self.fee(months) if months else None
        if fee is None or months is None:
            return None
        if amount is None:  # the plan but not the amount: its fee, and how the sum works
            fact = next(f for f in self._by_topic["instalment_fee"] if f.months == months)
            return fact.figures, (fact.zh if language == "zh" else fact.en)
        principal = Decimal(amount)
        part, charge = principal / months, principal * fee
        pay, rate = _money(part + charge), f"{(fee * 100).normalize():f}%"
        if language == "zh":
            return [pay], (f"{amount:,}元分{months}期，每月本金{_money(part)}元，加手续费"
                           f"{_money(charge)}元（每月{rate}），每月还{pay}元。")
        return [pay], (f"On {amount:,} over {months} months it's {pay} a month: {_money(part)} "
                       f"of the amount plus the {rate} monthly fee of {_money(charge)}.")
