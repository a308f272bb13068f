"""Who the top performers are, by a rule a supervisor can read and check by hand.

Raw conversion rates reward luck on small numbers (2 sales in 3 calls beats 30 in 100), so agents
are ranked by the lower end of the Wilson 95% interval of their rate, and only agents with enough
calls are ranked at all. campaigns/ uses the same rule for its leaderboard.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from pydantic import BaseModel, Field

from .types import CallRecord, Outcome


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (exact enough at any n, never outside
    [0, 1], sensible at 0 and n successes)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


class LeaderboardRule(BaseModel):
    min_calls: int = Field(20, ge=1, description="agents with fewer calls are not ranked")
    top_share: float = Field(0.3, gt=0, le=1, description="share of ranked agents who are top")
    outcome: Outcome = Field("converted", description="the outcome that counts as success")
    confidence: float = Field(0.95, gt=0, lt=1)

    @property
    def z(self) -> float:
        from scipy.stats import norm

        return float(norm.ppf(0.5 + self.confidence / 2))

    def describe(self) -> str:
        return (f"Agents with at least {self.min_calls} calls are ranked by the lower bound of "
                f"the {self.confidence:.0%} Wilson interval of their {self.outcome} rate; the "
                f"top {self.top_share:.0%} of ranked agents (at least one) are top performers.")


class AgentStanding(BaseModel):
    agent_id: str
    calls: int
    successes: int
    rate: float
    lower: float
    upper: float
    rank: int | None = Field(None, description="1 = best; None when below min_calls")
    top: bool = False


def _succeeded(outcome: str, target: str) -> bool:
    # "engaged" as a target counts conversions too: a converted customer was engaged.
    return outcome == target or (target == "engaged" and outcome == "converted")


def rank_agents(calls: Iterable[CallRecord], rule: LeaderboardRule | None = None
                ) -> list[AgentStanding]:
    rule = rule or LeaderboardRule()
    tally: dict[str, list[int]] = {}
    for call in calls:
        t = tally.setdefault(call.agent_id, [0, 0])
        t[0] += 1
        t[1] += _succeeded(call.outcome, rule.outcome)
    z = rule.z
    standings = []
    for agent, (n, k) in tally.items():
        lo, hi = wilson_interval(k, n, z)
        standings.append(AgentStanding(agent_id=agent, calls=n, successes=k, rate=k / n,
                                       lower=lo, upper=hi))
    ranked = sorted((s for s in standings if s.calls >= rule.min_calls),
                    key=lambda s: (-s.lower, -s.rate, s.agent_id))
    n_top = max(1, round(len(ranked) * rule.top_share)) if ranked else 0
    for i, s in enumerate(ranked):
        s.rank = i + 1
        s.top = i < n_top
    unranked = sorted((s for s in standings if s.calls < rule.min_calls),
                      key=lambda s: s.agent_id)
    return ranked + unranked
