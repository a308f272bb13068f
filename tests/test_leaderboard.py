"""The top-performer rule: Wilson lower bounds, minimum calls, top share."""

from __future__ import annotations

import pytest

from dialogue.leaderboard import LeaderboardRule, rank_agents, wilson_interval
from dialogue.types import CallRecord, Turn


def _calls(agent: str, converted: int, total: int) -> list[CallRecord]:
    turns = [Turn(speaker="agent", text="hello"), Turn(speaker="customer", text="hi")]
    return [CallRecord(call_id=f"{agent}-{i}", agent_id=agent, turns=turns,
                       outcome="converted" if i < converted else "not_converted")
            for i in range(total)]


@pytest.mark.parametrize(("k", "n", "lo", "hi"), [
    # Values from the closed form (Wilson 1927), as statistics packages print them.
    (0, 10, 0.0, 0.2775),
    (5, 10, 0.2366, 0.7634),
    (10, 10, 0.7225, 1.0),
    (35, 1000, 0.0253, 0.0483),
])
def test_wilson_interval_matches_published_values(k, n, lo, hi):
    got = wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_lower_bound_beats_raw_rate_on_small_numbers():
    calls = _calls("lucky", 1, 1) + _calls("steady", 30, 100) + _calls("weak", 5, 100)
    board = rank_agents(calls, LeaderboardRule(min_calls=1, top_share=0.34))
    assert [s.agent_id for s in board] == ["steady", "lucky", "weak"]
    assert board[0].top and not board[1].top and board[0].rank == 1


def test_agents_below_min_calls_are_listed_but_not_ranked():
    calls = _calls("new", 5, 5) + _calls("a", 10, 40) + _calls("b", 4, 40)
    board = rank_agents(calls, LeaderboardRule(min_calls=20, top_share=0.5))
    by_id = {s.agent_id: s for s in board}
    assert by_id["new"].rank is None and not by_id["new"].top
    assert by_id["a"].top and by_id["a"].rank == 1 and not by_id["b"].top
    assert board[-1].agent_id == "new"


def test_engaged_counts_conversions_too():
    calls = _calls("a", 2, 10)
    calls[5].outcome = "engaged"
    board = rank_agents(calls, LeaderboardRule(min_calls=1, outcome="engaged"))
    assert board[0].successes == 3


def test_rule_reads_as_a_sentence():
    text = LeaderboardRule(min_calls=25, top_share=0.2).describe()
    assert "25 calls" in text and "Wilson" in text and "20%" in text
