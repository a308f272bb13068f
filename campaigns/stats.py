"""Rates with honest uncertainty, and a plain-language AI-vs-human verdict.

A supervisor reads "AI 21% vs human 26%" as a finding; on 14 and 27 answered calls it is noise.
Every rate here carries a Wilson interval (the one `dialogue.leaderboard` ranks agents by), every
gap between two rates carries Newcombe's hybrid score interval (Newcombe 1998, method 10: it
stays inside [-1, 1] and behaves at 0 and n successes, where the Wald interval collapses), and
a pooled two-proportion z-test gives the p-value the verdict quotes.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Literal

from pydantic import BaseModel, Field

from dialogue.leaderboard import wilson_interval

Denominator = Literal["dialed", "answered", "shown"]


def z_for(confidence: float) -> float:
    """The two-sided normal quantile: 1.959964 for 95%."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _check_counts(k: int, n: int) -> None:
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= successes <= n, got {k}/{n}")


class Proportion(BaseModel):
    """k of n, with its Wilson interval; `rate` and the bounds are None when n is 0."""

    successes: int = Field(ge=0)
    n: int = Field(ge=0)
    per: Denominator = Field(
        description="what n counts: dialed calls, answered calls, or suggestions shown"
    )
    rate: float | None
    lower: float | None
    upper: float | None
    confidence: float = 0.95


def proportion(k: int, n: int, per: Denominator, confidence: float = 0.95) -> Proportion:
    _check_counts(k, n)
    if n == 0:
        return Proportion(
            successes=0, n=0, per=per, rate=None, lower=None, upper=None, confidence=confidence
        )
    lo, hi = wilson_interval(k, n, z_for(confidence))
    return Proportion(
        successes=k, n=n, per=per, rate=k / n, lower=lo, upper=hi, confidence=confidence
    )


def newcombe_interval(
    k1: int, n1: int, k2: int, n2: int, confidence: float = 0.95
) -> tuple[float, float, float]:
    """(p1 - p2, lower, upper): Newcombe's hybrid score interval, method 10 of Newcombe (1998),
    "Interval estimation for the difference between independent proportions: comparison of
    eleven methods", Statistics in Medicine 17:873-890. Each side's Wilson interval (no
    continuity correction) is combined square-and-add:
        lower = d - sqrt((p1 - l1)^2 + (u2 - p2)^2),  upper = d + sqrt((u1 - p1)^2 + (p2 - l2)^2)
    """
    _check_counts(k1, n1)
    _check_counts(k2, n2)
    if n1 == 0 or n2 == 0:
        raise ValueError("a difference needs at least one observation on each side")
    z = z_for(confidence)
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1, z)
    l2, u2 = wilson_interval(k2, n2, z)
    d = p1 - p2
    return (d, d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2))


def two_proportion_z_test(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    """(z, two-sided p) of the pooled two-proportion z-test of p1 = p2 (z squared is Pearson's
    chi-square of the 2x2 table without Yates' correction). When both sides are all successes
    or all failures there is no variance and no evidence of a difference: (0.0, 1.0)."""
    _check_counts(k1, n1)
    _check_counts(k2, n2)
    if n1 == 0 or n2 == 0:
        raise ValueError("a test needs at least one observation on each side")
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return (0.0, 1.0)
    z = (k1 / n1 - k2 / n2) / se
    # erfc keeps precision in the tail, where 1 - cdf(|z|) would round to 0
    return (z, math.erfc(abs(z) / math.sqrt(2)))


class Comparison(BaseModel):
    """One rate, AI against human, with the gap (AI minus human) and a sentence that says it."""

    metric: str
    per: Denominator
    ai: Proportion
    human: Proportion
    difference: float | None = Field(description="AI rate minus human rate")
    lower: float | None = Field(description="Newcombe (1998, method 10) bound of the difference")
    upper: float | None
    z: float | None = Field(description="pooled two-proportion z statistic")
    p: float | None = Field(description="two-sided p-value of the z-test")
    significant: bool | None = Field(description="p below 1 - confidence; None without data")
    verdict: str


# the verdict reads "AI <verb> 3.5% ..."; an unknown metric gets a neutral phrase
VERBS: dict[str, str] = {
    "conversion": "converts",
    "conversion_per_dialed": "converts",
    "engagement": "engages",
    "answer": "is answered on",
    "opt_out": "gets opt-outs on",
    "hand_off": "hands off",
    "suggestion_acceptance": "accepts",
}


def _decimals(*values: float) -> int:
    # one decimal reads well for contact-center rates; when every figure in a sentence is below
    # 1% (opt-outs, say) one decimal would round them all to 0.x, so use two
    return 2 if all(abs(v) < 0.01 for v in values) else 1


def _pct(x: float, dp: int) -> str:
    return f"{x * 100:.{dp}f}"


def _signed(x: float, dp: int) -> str:
    s = _pct(abs(x), dp)
    if float(s) == 0:
        return s
    return ("+" if x > 0 else "\u2212") + s


def format_p(p: float) -> str:
    if p < 0.001:
        return "p<0.001"
    return f"p={p:.3f}" if p < 0.1 else f"p={p:.2f}"


def _side(label: str, verb: str, side: Proportion, dp: int, first: bool) -> str:
    assert side.rate is not None and side.lower is not None and side.upper is not None
    ci = f"{_pct(side.lower, dp)}\u2013{_pct(side.upper, dp)}%"
    if first:
        return (
            f"{label} {verb} {_pct(side.rate, dp)}% ({side.confidence:.0%} CI {ci}, "
            f"n={side.n:,} {side.per})"
        )
    return f"{label} {_pct(side.rate, dp)}% ({ci}, n={side.n:,})"


def _none_yet(per: Denominator, who: str) -> str:
    who = f"{who} " if who else ""
    return {
        "dialed": f"No {who}calls yet",
        "answered": f"No answered {who}calls yet",
        "shown": f"No suggestions shown on {who}calls yet",
    }[per]


def compare(metric: str, ai: Proportion, human: Proportion, confidence: float = 0.95) -> Comparison:
    """AI vs human on one rate; both proportions must count the same thing."""
    if ai.per != human.per:
        raise ValueError(f"cannot compare a rate per {ai.per} with one per {human.per}")
    verb = VERBS.get(metric, f"has a {metric} rate of")

    def untested(text: str) -> Comparison:
        return Comparison(
            metric=metric,
            per=ai.per,
            ai=ai,
            human=human,
            difference=None,
            lower=None,
            upper=None,
            z=None,
            p=None,
            significant=None,
            verdict=text,
        )

    if ai.n == 0 and human.n == 0:
        return untested(f"{_none_yet(ai.per, '')} on either side; nothing to compare.")
    if ai.n == 0 or human.n == 0:
        missing, present, label = ("AI", human, "human") if ai.n == 0 else ("human", ai, "AI")
        dp = _decimals(present.upper or 0)
        return untested(
            f"{_none_yet(ai.per, missing)}; "
            f"{_side(label, verb, present, dp, first=True)}; nothing to compare yet."
        )
    d, lo, hi = newcombe_interval(ai.successes, ai.n, human.successes, human.n, confidence)
    z, p = two_proportion_z_test(ai.successes, ai.n, human.successes, human.n)
    alpha = 1 - confidence
    significant = p < alpha
    dp = _decimals(ai.upper or 0, human.upper or 0, lo, hi)
    text = (
        f"{_side('AI', verb, ai, dp, first=True)} vs "
        f"{_side('human', verb, human, dp, first=False)}; the gap of {_signed(d, dp)} points "
        f"({_signed(lo, dp)} to {_signed(hi, dp)}) is "
        f"{'' if significant else 'not '}significant ({format_p(p)})"
    )
    if significant:
        text += f": the {'AI' if d > 0 else 'human'} rate is higher"
    if significant == (lo <= 0 <= hi):
        # the score interval and the pooled test use different variances; near the line they
        # can disagree, and a supervisor should hear that the call is close
        text += (
            f"; borderline: the {confidence:.0%} interval "
            f"{'includes' if lo <= 0 <= hi else 'excludes'} zero"
        )
    return Comparison(
        metric=metric,
        per=ai.per,
        ai=ai,
        human=human,
        difference=d,
        lower=lo,
        upper=hi,
        z=z,
        p=p,
        significant=significant,
        verdict=text + ".",
    )
