"""The playbook: top agents found from outcomes alone, their replies retrieved with provenance."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from dialogue.defaults import PLAYBOOK_CALLS
from dialogue.leaderboard import LeaderboardRule
from dialogue.playbook import Playbook, PlaybookError, RetrievalConfig, read_calls
from dialogue.types import CallRecord, Turn

from .conftest import FIXTURES


def _hidden_tiers() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location(
        "make_corpus", FIXTURES / "playbook" / "make_corpus.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return {a.agent_id: a.tier for a in module.AGENTS}


def test_ranking_finds_the_strong_agents_from_outcomes_alone(playbook):
    tiers = _hidden_tiers()
    top = [s.agent_id for s in playbook.standings if s.top]
    assert top, "no top performers"
    assert all(tiers[a] == "strong" for a in top), {a: tiers[a] for a in top}
    weakest = [s.agent_id for s in playbook.standings if s.rank is not None][-3:]
    assert all(tiers[a] == "weak" for a in weakest)


def test_only_top_agents_replies_are_indexed(playbook):
    top = {s.agent_id for s in playbook.standings if s.top}
    assert playbook.entries and {e.agent_id for e in playbook.entries} <= top
    assert playbook.stats is not None and playbook.stats.pairs == len(playbook.entries)
    assert all(e.intent for e in playbook.entries)


@pytest.mark.parametrize(("line", "intent", "language"), [
    ("这个分期的手续费是怎么算的", "interest_rate", "zh"),
    ("I lost my card yesterday, what do I do?", "card_lost", "en"),
    ("最近手头比较紧，这个月可能还不上", "cannot_pay", "zh"),
])
def test_retrieval_returns_grounded_exemplars_in_the_callers_language(playbook, line, intent,
                                                                      language):
    found = playbook.retrieve(line, intent, language)
    assert len(found) == 3
    assert all(e.language == language for e in found), [e.language for e in found]
    assert len({e.reply for e in found}) == 3
    calls = {c.call_id: c for c in read_calls(PLAYBOOK_CALLS)}
    for e in found:
        call = calls[e.call_id]
        assert call.agent_id == e.agent_id and call.outcome == e.outcome
        assert any(e.reply == t.text or e.reply in t.text for t in call.turns
                   if t.speaker == "agent")
    assert found[0].score > 0.8


def test_cross_lingual_fallback_when_only_the_other_language_has_replies(playbook):
    english_only = Playbook(
        [e for e in playbook.entries if e.language == "en"],
        playbook.vectors[[i for i, e in enumerate(playbook.entries) if e.language == "en"]],
        playbook.encoder, playbook.standings, playbook.rule)
    found = english_only.retrieve("我的卡丢了怎么办", "card_lost", "zh",
                                  RetrievalConfig(k=1))
    assert found and found[0].intent == "card_lost"


def test_blocked_replies_never_enter_the_index():
    turns = [Turn(speaker="agent", text="Hello, this is Harbor Bank, this call is recorded."),
             Turn(speaker="customer", text="Is this investment safe?"),
             Turn(speaker="agent", text="It's guaranteed returns, you cannot lose money."),
             Turn(speaker="customer", text="my card 6222 0212 3456 7890 was stolen"),
             Turn(speaker="agent", text="I have frozen the card; a new one takes 5 to 7 days.")]
    calls = [CallRecord(call_id=f"x{i}", agent_id="A", outcome="converted", turns=turns)
             for i in range(3)]
    playbook = Playbook.build(calls, LeaderboardRule(min_calls=1))
    replies = {e.reply for e in playbook.entries}
    assert replies == {"I have frozen the card; a new one takes 5 to 7 days."}
    assert playbook.stats is not None and playbook.stats.blocked_replies == 3
    assert all("3456" not in e.context for e in playbook.entries)  # the card was redacted


def test_no_qualifying_agent_is_a_clear_error():
    calls = [CallRecord(call_id="1", agent_id="A", outcome="converted",
                        turns=[Turn(speaker="customer", text="hi")])]
    with pytest.raises(PlaybookError, match="no agent qualifies"):
        Playbook.build(calls, LeaderboardRule(min_calls=5))


def test_save_and_load_round_trip(playbook, tmp_path):
    loaded = Playbook.load(playbook.save(tmp_path / "pb"))
    a = playbook.retrieve("what's the rate for six months", "interest_rate", "en")
    b = loaded.retrieve("what's the rate for six months", "interest_rate", "en")
    assert [e.model_dump() for e in a] == [e.model_dump() for e in b]
    assert json.loads((tmp_path / "pb" / "playbook.json").read_text())["rule_text"]


def test_malformed_call_file_names_the_line(tmp_path):
    bad = tmp_path / "calls.jsonl"
    bad.write_text('{"call_id": "1"}\n')
    with pytest.raises(PlaybookError, match=r"calls\.jsonl:1"):
        read_calls(bad)
