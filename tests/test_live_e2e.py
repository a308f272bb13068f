"""End to end, as users run it: two real recordings streamed at real-time speed as 8 kHz mu-law
Twilio frames into the real app on uvicorn, at the same time; the agent named in their
customParameters, logged in with a password, watches them on a websocket, sends feedback; the
record in PostgreSQL holds both calls afterwards. Another agent sees none of it; an anonymous
client is refused.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from assist.app import create_app
from assist.auth import TokenSigner, UserStore
from assist.runtime import Runtime
from assist.settings import AppSettings
from campaigns.db import Database, DatabaseSettings
from campaigns.db import connect as db_connect
from campaigns.outbox import Outbox, StoreWriter
from campaigns.store import Store
from dialogue.defaults import policy_text
from dialogue.suggest import Suggester
from speech.audio_file import load_audio

from .conftest import FIXTURES, shared_audio
from .live_app import LiveApp, request
from .pg import PgServer
from .twilio_frames import twilio_messages

MEDIA_TOKEN = "e2e-trunk-token-0123456789"
PASSWORD = "e2e password, long enough"
SETTINGS = AppSettings(_env_file=None, media_tokens=[MEDIA_TOKEN])  # type: ignore[call-arg]
FAST = DatabaseSettings(db_pool_min=1, db_pool_max=4, db_connect_timeout_s=3)
CARD_RUN = re.compile(r"\d(?:[ -]?\d){12,18}")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def database(pg: PgServer) -> AsyncIterator[Database]:
    db = await db_connect(await pg.create_database("callwise_e2e"), settings=FAST)
    users = UserStore(db.pool)
    await users.create("agent1", PASSWORD, "agent", "A01")
    await users.create("agent2", PASSWORD, "agent", "A02")
    yield db
    await db.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server(speech_models, intent_model, playbook, database, tmp_path_factory
                 ) -> AsyncIterator[tuple[LiveApp, Runtime]]:
    writer = StoreWriter(Outbox(tmp_path_factory.mktemp("outbox") / "outbox.sqlite3"),
                         Store(database))
    runtime = Runtime(speech_models, Suggester(intent_model, playbook, None, policy_text()),
                      writer)
    app = create_app(SETTINGS, runtime=runtime, database=database,
                     signer=TokenSigner(b"e2e-secret-0123456789abcdef-xyz!"),
                     connect_database=False)
    live = await LiveApp.start(app)
    yield live, runtime
    await live.stop()
    await runtime.aclose()


async def login(live: LiveApp, username: str) -> str:
    reply = await request(live.base, "POST", "/api/login",
                          {"username": username, "password": PASSWORD})
    assert reply.status == 200, reply.body
    return reply.json()["token"]


async def stream_realtime(live: LiveApp, messages: list[str], tracks: int) -> None:
    """Twilio's pace: one 20 ms frame per track every 20 ms."""
    head, media, stop = messages[:2], messages[2:-1], messages[-1]
    async with connect(f"{live.ws}/twilio?token={MEDIA_TOKEN}") as ws:
        for m in head:
            await ws.send(m)
        t0 = time.monotonic()
        for i in range(0, len(media), tracks):
            delay = t0 + (i // tracks) * 0.02 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            for m in media[i : i + tracks]:
                await ws.send(m)
        await ws.send(stop)
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(60):
                while True:
                    await ws.recv()


async def test_two_live_calls_reach_their_agent_and_land_in_the_store(server, database):
    live, runtime = server
    mono = load_audio(shared_audio("pyannote/sample.wav"))
    stereo = load_audio(FIXTURES / "calls" / "demo_call_stereo.flac")
    run = uuid.uuid4().hex[:8]
    mono_id, stereo_id = f"e2e-mono-{run}", f"e2e-stereo-{run}"
    calls = {
        mono_id: twilio_messages([mono.samples[0]], mono.sample_rate, ["inbound"],
                                 call_sid="CA" + run + "m",
                                 custom={"call_id": mono_id, "agent_id": "A01"}),
        stereo_id: twilio_messages([stereo.samples[1], stereo.samples[0]], stereo.sample_rate,
                                   ["inbound", "outbound"], call_sid="CA" + run + "s",
                                   custom={"call_id": stereo_id, "agent_id": "A01",
                                           "campaign_id": "inbound"}),
    }
    agent1, agent2 = await login(live, "agent1"), await login(live, "agent2")
    async with connect(f"{live.ws}/events") as anonymous:  # no credentials at all
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(anonymous.recv(), 10)
        assert anonymous.close_code == 1008

    sidebar = await connect(f"{live.ws}/events?token={agent1}")
    other = await connect(f"{live.ws}/events?token={agent2}")
    events: list[dict[str, Any]] = []
    feedback_sent: dict[str, str] = {}

    async def watch() -> None:
        ended: set[str] = set()
        while ended != set(calls):
            event = json.loads(await sidebar.recv())
            events.append(event)
            if event["type"] == "call_ended":
                ended.add(event["call_id"])
            if event["type"] == "suggestion_shown" and event["call_id"] not in feedback_sent:
                feedback_sent[event["call_id"]] = event["suggestion_id"]
                await sidebar.send(json.dumps({
                    "type": "feedback", "call_id": event["call_id"],
                    "suggestion_id": event["suggestion_id"], "feedback": "accepted"}))

    watcher = asyncio.create_task(watch())
    await asyncio.gather(stream_realtime(live, calls[mono_id], 1),
                         stream_realtime(live, calls[stereo_id], 2))
    await asyncio.wait_for(watcher, 120)
    await sidebar.close()

    for call_id in calls:
        mine = [e for e in events if e.get("call_id") == call_id]
        kinds = {e["type"] for e in mine}
        assert {"call_started", "transcript_partial", "utterance", "intent",
                "suggestion_shown", "suggestion_feedback", "call_ended"} <= kinds, (call_id,
                                                                                   kinds)
        finals = [e for e in mine if e["type"] == "utterance"]
        assert {e["role"] for e in finals} >= {"agent", "customer"}, call_id
        cited = [e for e in mine if e["type"] == "suggestion_shown" and e["citations"]]
        assert cited and cited[0]["citations"][0]["agent_id"], "no card cites a top agent"
        partial = next(e for e in mine if e["type"] == "transcript_partial")
        first_final = next(e for e in finals if e["utterance_id"] == partial["utterance_id"]
                           or e["utterance_id"].startswith(partial["utterance_id"] + "."))
        assert events.index(partial) < events.index(first_final)
    stereo_words = " ".join(e["text"] for e in events if e.get("call_id") == stereo_id
                            and e["type"] == "utterance" and e["role"] == "customer").lower()
    assert "credit card" in stereo_words

    # the other agent's screen got nothing of these calls
    await other.send("{}")
    while (got := json.loads(await asyncio.wait_for(other.recv(), 5)))["type"] != "error":
        assert got.get("call_id") not in calls, got
    await other.close()

    await runtime.recorded()
    pool = database.pool
    for call_id in calls:
        row = await pool.fetchrow("SELECT agent_id, campaign_id FROM calls WHERE id = $1",
                                  call_id)
        assert row is not None and row["agent_id"] == "A01", f"call {call_id} not stored"
        said = [e for e in events if e.get("call_id") == call_id and e["type"] == "utterance"]
        stored = await pool.fetch("SELECT seq, role, text_redacted FROM utterances "
                                  "WHERE call_id = $1 ORDER BY seq", call_id)
        assert [r["seq"] for r in stored] == sorted({e["seq"] for e in said})
        latest = {e["seq"]: e for e in said}  # a revision replaces its seq
        assert [r["role"] for r in stored] == [latest[r["seq"]]["role"] for r in stored]
        assert not any(CARD_RUN.search(r["text_redacted"]) for r in stored)
        shown = await pool.fetch("SELECT id, feedback FROM suggestions WHERE call_id = $1",
                                 call_id)
        cards = {r["id"]: r["feedback"] for r in shown}
        assert cards.get(feedback_sent[call_id]) == "accepted"
        assert len(cards) == len({e["suggestion_id"] for e in events if e.get("call_id") ==
                                  call_id and e["type"] == "suggestion_shown"})
