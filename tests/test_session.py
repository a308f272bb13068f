"""CallSession as a stage: feed utterances in, check the events out (Pipecat's run_test style).

Real parts throughout: the shipped intent model and playbook, the embedded LLM, a real
OpenAI-style client pointed at a port where nothing listens (the LLM down).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from assist.session import CallInfo, CallSession, SessionConfig
from core.events import CallEvent
from dialogue.suggest import Suggester
from speech import Utterance

from .conftest import closed_port

pytestmark = pytest.mark.asyncio


class Recorder:
    def __init__(self) -> None:
        self.events: list[CallEvent] = []

    def __call__(self, event: CallEvent, meta) -> None:
        assert meta.call_id == event.call_id
        self.events.append(event)

    def of(self, kind: str) -> list:
        return [e for e in self.events if e.type == kind]


def _utt(call_id: str, n: int, role: str, text: str, **kw) -> Utterance:
    start = 3.0 * n
    return Utterance(call_id=call_id, utterance_id=f"u{n}", channel=0 if role == "agent" else 1,
                     final=True, start=start, end=start + 2.0, text=text, language="en",
                     role=role, **kw)


async def _session(speech_models, suggester, layout="stereo", **info) -> tuple[CallSession,
                                                                               Recorder]:
    rec = Recorder()
    pool = ThreadPoolExecutor(1)
    session = CallSession(CallInfo(call_id=info.pop("call_id", "c1"), layout=layout, **info),
                          speech_models, suggester, rec, pool, SessionConfig())
    session.start()
    return session, rec


async def test_a_customer_turn_gets_intent_and_cited_cards_at_once(speech_models, intent_model,
                                                                  playbook):
    session, rec = await _session(speech_models, Suggester(intent_model, playbook, None))
    await session.push(_utt("c1", 0, "agent", "Thank you for calling Harbor Bank, this is Sam."))
    await session.push(_utt("c1", 1, "customer",
                            "My card 4111 1111 1111 1111 was charged twice, can you refund it?"))
    await session.settled()
    said = rec.of("utterance")
    assert [(u.seq, u.role) for u in said] == [(0, "agent"), (1, "customer")]
    assert "4111" not in said[1].text, "the card number reached an event in clear"
    intent = rec.of("intent")
    assert len(intent) == 1 and intent[0].seq == 1 and said[1].intent == intent[0].intent
    cards = rec.of("suggestion_shown")
    assert cards and all(c.source == "exemplar" and c.seq == 1 for c in cards)
    assert [c.rank for c in cards] == list(range(len(cards)))
    assert all(c.citations and c.citations[0].agent_id for c in cards), "a card cites no agent"
    # The customer's words come before anything read from them.
    order = [e.type for e in rec.events]
    assert order.index("utterance") < order.index("intent") < order.index("suggestion_shown")
    await session.end()
    assert rec.events[-1].type == "call_ended" and rec.events[0].type == "call_started"


async def test_llm_down_still_gives_exemplars_and_says_why(speech_models, intent_model,
                                                           playbook):
    from dialogue.llm import OpenAICompatibleClient

    llm = OpenAICompatibleClient(f"http://127.0.0.1:{closed_port()}/v1", "none", timeout_s=2)
    try:
        session, rec = await _session(speech_models, Suggester(intent_model, playbook, llm))
        await session.push(_utt("c1", 0, "customer", "What is the fee if I pay in six "
                                                     "installments?"))
        await session.settled()
        await session.end()
    finally:
        await llm.close()
    assert rec.of("suggestion_shown"), "no exemplar while the LLM is down"
    withheld = rec.of("suggestion_withheld")
    assert len(withheld) == 1 and withheld[0].reason == "llm_error" and withheld[0].detail


async def test_a_new_customer_turn_supersedes_the_pending_llm_reply(speech_models, intent_model,
                                                                    playbook):
    from dialogue.llm import make_client

    llm = make_client()
    try:
        session, rec = await _session(speech_models, Suggester(intent_model, playbook, llm))
        await session.push(_utt("c1", 0, "customer", "How much is the annual fee on this card?"))
        await session.settled()
        await session.push(_utt("c1", 1, "customer", "Actually, can I split my bill into "
                                                     "installments instead?"))
        await session.settled()
        await session.end()
    finally:
        await llm.close()
    superseded = [w for w in rec.of("suggestion_withheld") if w.reason == "superseded"]
    assert superseded and superseded[0].seq == 0
    # the first turn's LLM reply never shows; the last one's does (or says why not)
    llm_cards = [c for c in rec.of("suggestion_shown") if c.source == "llm"]
    assert all(c.seq == 1 for c in llm_cards)
    settled = llm_cards + [w for w in rec.of("suggestion_withheld") if w.seq == 1]
    assert settled, "the last turn's LLM reply neither showed nor was withheld"


async def test_an_opt_out_overrides_everything(speech_models, intent_model, playbook):
    session, rec = await _session(speech_models, Suggester(intent_model, playbook, None))
    await session.push(_utt("c1", 0, "customer",
                            "Stop calling me and put my number on your do not call list."))
    await session.settled()
    await session.end()
    override = rec.of("override")
    assert len(override) == 1 and override[0].action == "stop_and_add_to_do_not_call"
    assert rec.of("compliance_alert")[0].severity == "critical"
    cards = rec.of("suggestion_shown")
    assert [c.source for c in cards] == ["override"]


async def test_an_agents_forbidden_claim_raises_an_alert(speech_models, intent_model, playbook):
    session, rec = await _session(speech_models, Suggester(intent_model, playbook, None))
    await session.push(_utt("c1", 0, "agent", "Don't worry, your loan approval is guaranteed "
                                              "100 percent."))
    await session.settled()
    await session.end()
    alerts = rec.of("compliance_alert")
    assert alerts and alerts[0].kind == "forbidden_claim" and alerts[0].role == "agent"
    assert not rec.of("suggestion_shown")


async def test_a_mono_guess_is_corrected_under_the_same_seq(speech_models, intent_model,
                                                            playbook):
    session, rec = await _session(speech_models, Suggester(intent_model, playbook, None),
                                  layout="mono")
    text = "Can I pay the balance in installments?"
    await session.push(_utt("c1", 0, "agent", text, provisional=True))
    await session.settled()
    assert not rec.of("suggestion_shown")  # guessed as the agent: no card yet
    await session.push(_utt("c1", 0, "customer", text, replaces="u0"))
    await session.settled()
    await session.end()
    said = rec.of("utterance")
    assert [(u.seq, u.revision, u.role) for u in said] == [(0, 0, "agent"), (0, 1, "customer")]
    assert rec.of("suggestion_shown"), "the settled customer turn got no card"


async def test_one_failing_turn_does_not_end_the_call(speech_models, intent_model, playbook):
    class Broken:
        def predict(self, text):
            raise RuntimeError("encoder crashed")

    session, rec = await _session(speech_models, Suggester(Broken(), playbook, None))
    await session.push(_utt("c1", 0, "customer", "Hello?"))
    await session.push(_utt("c1", 1, "agent", "Hello, Harbor Bank."))
    await session.settled()
    await session.end()
    assert [(u.seq, u.intent) for u in rec.of("utterance")] == [(0, None), (1, None)]
    assert rec.events[-1].type == "call_ended"


async def test_disclosures_are_due_then_made_or_overdue_by_the_calls_audio_clock(
        speech_models, intent_model, playbook):
    import numpy as np

    session, rec = await _session(speech_models, Suggester(intent_model, playbook, None))
    due = {e.rule: e for e in rec.of("disclosure")}
    assert {"recording_notice", "identity_and_company"} <= set(due)
    assert "ai_disclosure" not in due  # a human agent's call
    assert all(e.status == "due" and e.due_s for e in due.values())
    await session.push(_utt("c1", 0, "agent", "Hi, this is Sam from Harbor Bank."))
    await session.settled()
    made = [e for e in rec.of("disclosure") if e.status == "made"]
    assert [(e.rule, e.seq, e.said_at_s) for e in made] == [("identity_and_company", 0, 0.0)]
    # a minute of the call's audio goes by without the recording notice
    silence = np.zeros(8000, dtype=np.float32)
    for _ in range(int(due["recording_notice"].due_s + session.config.disclosure_grace_s) + 1):
        session.accept(0, silence, 8000)
    overdue = [e for e in rec.of("disclosure") if e.status == "overdue"]
    assert [e.rule for e in overdue] == ["recording_notice"]
    alerts = [a for a in rec.of("compliance_alert") if a.kind == "disclosure_missing"]
    assert [a.rule for a in alerts] == ["recording_notice"] and alerts[0].role == "agent"
    for _ in range(5):  # reported once
        session.accept(0, silence, 8000)
    assert len(rec.of("compliance_alert")) == 1
    await session.end()


async def test_a_card_number_the_customer_reads_out_is_flagged_once(speech_models, intent_model,
                                                                   playbook):
    session, rec = await _session(speech_models, Suggester(intent_model, playbook, None))
    await session.push(_utt("c1", 0, "customer", "My card number is 4111 1111 1111 1111."))
    await session.settled()
    said = rec.of("utterance")[0]
    assert "4111" not in said.text and "[CARD]" in said.text
    alerts = rec.of("compliance_alert")
    assert [(a.kind, a.severity, a.role) for a in alerts] == [("pii_spoken", "info", "customer")]
    assert "4111" not in alerts[0].why
    # the utterance comes first on screen, then the alert about it
    order = [e.type for e in rec.events]
    assert order.index("utterance") < order.index("compliance_alert")
    await session.end()


def test_the_supervisors_summary_follows_the_calls_events():
    from datetime import UTC, datetime

    from assist.call_summary import SummaryTracker
    from core.events import (
        CallEnded,
        CallStarted,
        ComplianceAlert,
        DisclosureStatus,
        IntentDetected,
        SuggestionFeedback,
        SuggestionShown,
    )

    t = SummaryTracker("c9", "A01", "inbound")
    started = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    t.observe(CallStarted(call_id="c9", campaign_id="inbound", channel="human", agent_id="A01",
                          at=started))
    t.observe(IntentDetected(call_id="c9", seq=1, intent="installment_fee", confidence=0.9))
    for sid in ("s1", "s2", "s3", "s4"):
        t.observe(SuggestionShown(call_id="c9", suggestion_id=sid, seq=1, source="exemplar",
                                  text="..."))
    t.observe(SuggestionFeedback(call_id="c9", suggestion_id="s1", feedback="dismissed"))
    t.observe(SuggestionFeedback(call_id="c9", suggestion_id="s1", feedback="accepted"))
    t.observe(SuggestionFeedback(call_id="c9", suggestion_id="s2", feedback="dismissed"))
    t.observe(ComplianceAlert(call_id="c9", kind="forbidden_claim", rule="r", why="w",
                              severity="critical"))
    t.observe(ComplianceAlert(call_id="c9", kind="pii_spoken", rule="card", why="w",
                              severity="info"))  # information, not an open alert
    t.observe(ComplianceAlert(call_id="c9", kind="disclosure_missing", rule="recording_notice",
                              why="w"))
    s = t.summary()
    assert (s.intent, s.cards_shown, s.accepted, s.dismissed, s.acceptance, s.open_alerts) == (
        "installment_fee", 4, 1, 1, 0.25, 2)
    assert s.live and s.started_at == started
    t.observe(DisclosureStatus(call_id="c9", rule="recording_notice", why="w", due_s=60,
                               status="made", said_at_s=70))
    assert t.summary().open_alerts == 1  # said late: that alert is resolved
    t.observe(CallEnded(call_id="c9"))
    assert not t.summary().live and not t.summary().wrapped_up
    t.observe(CallEnded(call_id="c9", disposition="converted"))
    assert t.summary().wrapped_up and t.summary().disposition == "converted"
