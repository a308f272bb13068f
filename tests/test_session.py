"""CallSession as a stage: feed utterances in, check the events out (Pipecat's run_test style).

Real parts throughout: the shipped intent model and playbook, the embedded LLM, a real
OpenAI-style client pointed at a port where nothing listens (the LLM down).
"""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

from assist.session import CallInfo, CallSession, SessionConfig
from core.events import CallEvent
from dialogue.suggest import Suggester
from speech import Utterance

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


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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

    llm = OpenAICompatibleClient(f"http://127.0.0.1:{_closed_port()}/v1", "none", timeout_s=2)
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
