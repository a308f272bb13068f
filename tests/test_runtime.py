"""The runtime: calls validated at the edge, isolated, released, and recorded whatever happens.

Real PostgreSQL (tests/pg.py) behind a proxy that can cut it mid-call; real models.
"""

from __future__ import annotations

import asyncio
import gc
import uuid
import weakref

import pytest

from assist.runtime import CallInfo, CallRejected, Runtime, RuntimeConfig, UnknownCall, call_info
from campaigns.db import DatabaseSettings, connect
from campaigns.outbox import Outbox, StoreWriter
from campaigns.store import Store
from dialogue.suggest import Suggester
from speech import Utterance

from .pg import CuttableProxy, PgServer

FAST = DatabaseSettings(db_connect_timeout_s=2, db_pool_min=0)
CARD = "4111 1111 1111 1111"


@pytest.fixture(scope="module")
async def db_dsn(pg: PgServer) -> str:
    return await pg.create_database("callwise_runtime")


@pytest.fixture(scope="module")
def suggester(intent_model, playbook) -> Suggester:
    return Suggester(intent_model, playbook, None)


def _utt(call_id: str, n: int, role: str, text: str) -> Utterance:
    return Utterance(call_id=call_id, utterance_id=f"{call_id}-u{n}", channel=int(role != "agent"),
                     final=True, start=3.0 * n, end=3.0 * n + 2, text=text, language="en",
                     role=role)


def _info(call_id: str, **kw) -> CallInfo:
    return CallInfo(call_id=call_id, agent_id=kw.pop("agent_id", "A01"), layout="stereo",
                    channel_roles=["agent", "customer"], **kw)


# -- the edge ---------------------------------------------------------------------------------
@pytest.mark.parametrize("params, why", [
    ({"language": "klingon"}, "bad language"),
    ({"call_id": "a\x00b"}, "bad call_id"),
    ({"agent_id": "x" * 200}, "bad agent_id"),
    ({"campaign_id": "c'; drop table calls"}, "bad campaign_id"),
    ({"channel": "robot"}, "bad channel"),
])
def test_call_parameters_are_checked_with_a_clear_reason(params, why):
    with pytest.raises(CallRejected) as err:
        call_info(params, layout="mono")
    assert err.value.reason.startswith(why) and len(err.value.reason.encode()) <= 120


def test_good_parameters_become_call_info():
    info = call_info({"call_id": "CA42", "agent_id": "A07", "campaign_id": "inbound",
                      "contact_id": "k1", "language": "ZH"}, layout="stereo")
    assert (info.call_id, info.agent_id, info.contact_id, info.language) == \
        ("CA42", "A07", "k1", "zh")
    assert call_info({}, layout="mono", call_id="CA1").call_id == "CA1"
    assert call_info({"language": "auto"}, layout="mono").language is None


async def test_a_reused_live_call_id_is_refused_and_the_live_call_goes_on(speech_models,
                                                                         suggester):
    runtime = Runtime(speech_models, suggester, None)
    try:
        first = await runtime.open_call(_info("dup-1"))
        with pytest.raises(CallRejected, match="already live"):
            await runtime.open_call(_info("dup-1", agent_id="A99"))
        await first.push(_utt("dup-1", 0, "customer", "Can I pay in installments?"))
        await first.settled()
        assert runtime.session("dup-1") is first and first.meta.agent_id == "A01"
        await runtime.end_call(first)
        assert runtime.session("dup-1") is None
        again = await runtime.open_call(_info("dup-1"))  # ended: the id may be used again
        await runtime.end_call(again)
    finally:
        await runtime.aclose()


async def test_finished_calls_are_released(speech_models, suggester):
    runtime = Runtime(speech_models, suggester, None, RuntimeConfig(ended_calls_kept=10))
    try:
        refs = []
        for i in range(100):
            s = await runtime.open_call(_info(f"rel-{i}"))
            await s.push(_utt(s.info.call_id, 0, "agent", "Hello, Harbor Bank."))
            await runtime.end_call(s)
            refs.append(weakref.ref(s))
        del s
        assert runtime.live_calls() == []
        assert runtime.meta("rel-99") is not None and runtime.meta("rel-0") is None
        assert len(runtime.hub) == 0
        gc.collect()
        alive = [r for r in refs if r() is not None]
        assert not alive, f"{len(alive)} ended sessions are still held in memory"
    finally:
        await runtime.aclose()


async def test_a_subscriber_gets_the_story_so_far_then_live_events(speech_models, suggester):
    runtime = Runtime(speech_models, suggester, None)
    try:
        s = await runtime.open_call(_info("story-1"))
        await s.push(_utt("story-1", 0, "customer", "What is my statement balance?"))
        await s.settled()
        sub, story = runtime.subscribe(lambda e, m: m.agent_id == "A01")
        other, nothing = runtime.subscribe(lambda e, m: m.agent_id == "A02")
        # the required disclosures are listed as due as soon as the call is answered
        assert [e.type for e in story if e.type != "disclosure"][:3] == [
            "call_started", "call_answered", "utterance"]
        assert {e.status for e in story if e.type == "disclosure"} == {"due"}
        assert nothing == []
        await s.push(_utt("story-1", 1, "agent", "Let me check that for you."))
        await s.settled()
        live = await asyncio.wait_for(sub.get(), 5)
        assert live.type == "utterance" and live.seq == 1
        assert other.pending() == 0
        card = next(e for e in story if e.type == "suggestion_shown")
        await runtime.feedback("story-1", card.suggestion_id, "accepted", "agent1")
        with pytest.raises(UnknownCall):
            await runtime.feedback("story-1", "no-such-card", "accepted", "agent1")
        with pytest.raises(UnknownCall):
            await runtime.wrap_up("no-such-call", "converted", "agent1")
        sub.close()
        other.close()
    finally:
        await runtime.aclose()


# -- the record -------------------------------------------------------------------------------
async def test_a_call_is_recorded_through_a_database_outage_exactly_once(
        pg, db_dsn, speech_models, suggester, tmp_path):
    proxy = await CuttableProxy(pg.target()).start()
    direct = await connect(db_dsn, settings=FAST)
    via_proxy = await connect(proxy.dsn(db_dsn), settings=FAST)
    writer = StoreWriter(Outbox(tmp_path / "outbox.sqlite3"), Store(via_proxy),
                         min_backoff_s=0.05, max_backoff_s=0.2)
    runtime = Runtime(speech_models, suggester, writer)
    call_id = f"outage-{uuid.uuid4().hex[:8]}"
    try:
        s = await runtime.open_call(_info(call_id))
        await s.push(_utt(call_id, 0, "agent", "Harbor Bank, this is Sam."))
        await s.settled()
        await runtime.recorded()
        await proxy.cut()  # PostgreSQL is gone mid-call
        await s.push(_utt(call_id, 1, "customer", f"My card is {CARD}, can I pay it in "
                                                  "installments?"))
        await s.push(_utt(call_id, 2, "agent", "Sure, let me look at the plans."))
        await s.settled()
        await runtime.recorded()  # parked in the outbox: the call did not wait for the DB
        assert writer.queued > 0
        card = next(e for e in s.story if e.type == "suggestion_shown")
        await runtime.feedback(call_id, card.suggestion_id, "accepted", "agent1")
        await runtime.end_call(s)
        await runtime.wrap_up(call_id, "converted", "agent1")
        await runtime.recorded()
        await proxy.restore()
        for _ in range(100):
            if writer.queued == 0:
                break
            await asyncio.sleep(0.1)
        assert writer.queued == 0
    finally:
        await runtime.aclose()
        await via_proxy.close()
        await proxy.cut()
    try:
        pool = direct.pool
        utts = await pool.fetch("SELECT seq, role, text_redacted FROM utterances "
                                "WHERE call_id = $1 ORDER BY seq", call_id)
        assert [(u["seq"], u["role"]) for u in utts] == [(0, "agent"), (1, "customer"),
                                                         (2, "agent")]
        assert "4111" not in utts[1]["text_redacted"]
        shown = await pool.fetch("SELECT id, feedback FROM suggestions WHERE call_id = $1",
                                 call_id)
        assert shown and {r["id"]: r["feedback"] for r in shown}[card.suggestion_id] == \
            "accepted"
        logged = await pool.fetch("SELECT event_id, count(*) AS n FROM events WHERE call_id = $1 "
                                  "GROUP BY event_id", call_id)
        assert logged and {r["n"] for r in logged} == {1}, "an event was stored twice"
        dump = " ".join(str(dict(r)) for r in await pool.fetch(
            "SELECT payload::text FROM events WHERE call_id = $1", call_id))
        assert "4111" not in dump.replace(" ", "")
        outcome = await pool.fetchrow("SELECT * FROM outcomes WHERE call_id = $1", call_id)
        assert outcome is not None and outcome["converted"]
    finally:
        await direct.close()


async def test_an_ended_call_gets_a_wrap_up_draft_and_keeps_its_story_for_the_agent(
        speech_models, suggester):
    runtime = Runtime(speech_models, suggester, None)
    try:
        s = await runtime.open_call(_info("wrap-1"))
        await s.push(_utt("wrap-1", 0, "agent", "Hi, this is Sam from Harbor Bank. "
                          "I'm calling about your card's payment plan."))
        await s.push(_utt("wrap-1", 1, "customer", "My card number is 4111 1111 1111 1111."))
        await s.push(_utt("wrap-1", 2, "customer", "Yes, please set up the six-month plan."))
        await s.push(_utt("wrap-1", 3, "agent", "I will send you the terms by text today."))
        await runtime.end_call(s)
        await runtime.wrap_up_drafted("wrap-1", timeout_s=30)
        assert [c.call_id for c in runtime.summaries()] == []  # nothing live
        [summary] = runtime.summaries(live_only=False)
        assert (summary.live, summary.wrapped_up) == (False, False)
        # an agent's sidebar coming back after the call gets its story, with the draft
        _, story = runtime.subscribe(lambda e, m: m.agent_id == "A01",
                                     ended=lambda meta, summary: not summary.wrapped_up)
        drafts = [e for e in story if e.type == "wrap_up_draft"]
        assert drafts and drafts[0].source == "extractive"  # no LLM here
        note = drafts[0].note
        assert note.reason and "4111" not in note.model_dump_json()
        # saved with the outcome: a supervisor's list says so, the screen's story too
        saved = await runtime.wrap_up("wrap-1", "converted", "agent1",
                                      note.model_copy(update={"next_step": "SMS the terms"}))
        assert saved.note is not None and saved.by == "agent1"
        [summary] = runtime.summaries(live_only=False)
        assert (summary.wrapped_up, summary.disposition) == (True, "converted")
        _, story = runtime.subscribe(lambda e, m: True,
                                     ended=lambda meta, summary: not summary.wrapped_up)
        assert story == []  # wrapped up: no longer pending on anyone's screen
    finally:
        await runtime.aclose()
