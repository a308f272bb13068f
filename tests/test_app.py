"""The web app as its clients use it: the real app on uvicorn on a free port, the real call
runtime (speech models, intents, the playbook; no LLM), a real PostgreSQL holding the users,
real websockets and real HTTP.

Who may see what (agents only their calls, supervisors all), which credentials are refused
where, and what a hostile or broken media sender can and cannot do to the server.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import assist.app
from assist.app import HideTokens, create_app
from assist.auth import TokenSigner, UserStore, twilio_signature
from assist.bus import CallMeta
from assist.runtime import CallInfo, Runtime
from assist.settings import AppSettings
from assist.transports import CallRegistry, TwilioTransport
from campaigns.db import Database, DatabaseSettings
from campaigns.db import connect as db_connect
from core.events import CallAnswered
from dialogue.defaults import policy_text
from dialogue.suggest import Suggester
from speech.audio_file import load_audio
from speech.codecs import encode_mulaw

from .conftest import FIXTURES
from .live_app import LiveApp, request
from .pg import PgServer
from .twilio_frames import twilio_messages

SECRET = b"app-test-secret-0123456789abcdef"
SIGNER = TokenSigner(SECRET)
MEDIA_TOKEN = "trunk-token-0123456789abcdef"
TWILIO_AUTH_TOKEN = "twilio-auth-token-for-tests"
PUBLIC_URL = "wss://assist.callwise.test"
DESK = "https://desk.example"
PASSWORD = "correct horse battery"
FAST = DatabaseSettings(db_pool_min=1, db_pool_max=4, db_connect_timeout_s=3)
SETTINGS = AppSettings(_env_file=None, media_tokens=[MEDIA_TOKEN],  # type: ignore[call-arg]
                       twilio_auth_token=TWILIO_AUTH_TOKEN, public_url=PUBLIC_URL,
                       allowed_origins=[DESK])

SUPERVISOR = SIGNER.issue("boss", "supervisor", None)
AGENT1 = SIGNER.issue("agent1", "agent", "A01")
AGENT2 = SIGNER.issue("agent2", "agent", "A02")
FORGED = TokenSigner(b"not-our-secret-0123456789abcdef!").issue("boss", "supervisor", None)
EXPIRED = TokenSigner(SECRET, clock=lambda: time.time() - 7200).issue(
    "boss", "supervisor", None, ttl_s=60)
BAD_TOKENS = {"missing": None, "forged": FORGED, "expired": EXPIRED, "garbage": "x.y"}


# -- fixtures ---------------------------------------------------------------------------------
@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def database(pg: PgServer) -> AsyncIterator[Database]:
    db = await db_connect(await pg.create_database("callwise_app"), settings=FAST)
    users = UserStore(db.pool)
    await users.create("boss", PASSWORD, "supervisor")
    await users.create("agent1", PASSWORD, "agent", "A01")
    await users.create("agent2", PASSWORD, "agent", "A02")
    await users.create("agent3", PASSWORD, "agent", "A03")
    await users.disable("agent3")
    yield db
    await db.close()


@pytest.fixture(scope="module")
def suggester(intent_model, playbook) -> Suggester:
    return Suggester(intent_model, playbook, None, policy_text())


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def runtime(speech_models, suggester) -> AsyncIterator[Runtime]:
    rt = Runtime(speech_models, suggester)  # no store writer: these tests read the screens
    yield rt
    await rt.aclose()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server(runtime: Runtime, database: Database) -> AsyncIterator[LiveApp]:
    app = create_app(SETTINGS, runtime=runtime, database=database, signer=SIGNER,
                     connect_database=False)
    live = await LiveApp.start(app)
    yield live
    await live.stop()


# -- clients ----------------------------------------------------------------------------------
async def closed(ws: ClientConnection, within: float = 10) -> tuple[int | None, str]:
    """Read until the server closes the socket: (close code, reason)."""
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(within):
            while True:
                await ws.recv()
    return ws.close_code, ws.close_reason


async def refused(url: str, **kwargs: Any) -> tuple[int | None, str]:
    async with connect(url, **kwargs) as ws:
        return await closed(ws)


async def message(ws: ClientConnection, within: float = 5) -> dict[str, Any]:
    """The next message on a sidebar socket after the story's end marker."""
    async with asyncio.timeout(within):
        while (got := json.loads(await ws.recv()))["type"] == "caught_up":
            pass
    return got


async def read_until(ws: ClientConnection, done: Callable[[dict[str, Any]], bool],
                     within: float = 30, into: list[dict[str, Any]] | None = None
                     ) -> list[dict[str, Any]]:
    """Events from `ws` up to and including the first that `done` accepts."""
    events = into if into is not None else []
    async with asyncio.timeout(within):
        while True:
            event = json.loads(await ws.recv())
            if event["type"] == "caught_up":  # the end of the story so far, not an event
                continue
            events.append(event)
            if done(event):
                return events


def ended(call_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("type") == "call_ended" and e.get("call_id") == call_id


async def live_ids(server: LiveApp, token: str = SUPERVISOR) -> set[str]:
    reply = await request(server.base, "GET", "/api/calls", token=token)
    assert reply.status == 200, reply.body
    return {c["call_id"] for c in reply.json()}


async def eventually(check: Callable[[], Any], within: float = 20) -> None:
    """Poll `check` (a function or coroutine function) until it is true."""
    async with asyncio.timeout(within):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.02)


async def wait_live(server: LiveApp, call_id: str) -> None:
    async def live() -> bool:
        return call_id in await live_ids(server)

    await eventually(live)


def media_url(server: LiveApp, path: str = "/twilio", **query: str) -> str:
    query = {"token": MEDIA_TOKEN, **query}
    return f"{server.ws}{path}?" + "&".join(f"{k}={v}" for k, v in query.items())


def events_url(server: LiveApp, token: str, **query: str) -> str:
    return f"{server.ws}/events?" + "&".join(f"{k}={v}" for k, v in
                                             {"token": token, **query}.items())


def start_message(call_id: str | None = None, agent_id: str = "A01", rate: Any = 8000,
                  tracks: tuple[str, ...] = ("inbound",), encoding: str = "audio/x-mulaw",
                  **custom: str) -> str:
    params = {"agent_id": agent_id, **custom}
    if call_id is not None:
        params["call_id"] = call_id
    return json.dumps({"event": "start", "streamSid": "MZ" + (call_id or "x"), "start": {
        "streamSid": "MZ" + (call_id or "x"), "callSid": "CA" + (call_id or "x"),
        "tracks": list(tracks), "customParameters": params,
        "mediaFormat": {"encoding": encoding, "sampleRate": rate, "channels": 1}}})


def tone(seconds: float, rate: int = 8000, freq: float = 440.0, level: float = 0.05) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (level * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def media_frames(seconds: float, track: str = "inbound", start_ms: int = 0) -> list[str]:
    pcm = (tone(seconds) * 32767).astype(np.int16)
    frames = []
    for i in range(0, len(pcm), 160):
        payload = base64.b64encode(encode_mulaw(pcm[i : i + 160])).decode()
        frames.append(json.dumps({"event": "media", "media": {
            "track": track, "timestamp": str(start_ms + i // 8), "payload": payload}}))
    return frames


STOP = json.dumps({"event": "stop"})


# -- logins and tokens ------------------------------------------------------------------------
async def test_login_gives_a_token_and_a_cookie_and_refuses_bad_passwords(server):
    reply = await request(server.base, "POST", "/api/login",
                          {"username": "agent1", "password": PASSWORD})
    assert reply.status == 200, reply.body
    body = reply.json()
    assert (body["role"], body["agent_id"]) == ("agent", "A01")
    assert body["expires_at"] > time.time() + 3600
    cookie = reply.headers["set-cookie"]
    assert cookie.startswith(f"callwise_token={body['token']}")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    me = await request(server.base, "GET", "/api/me", token=body["token"])
    assert me.json()["username"] == "agent1"
    # the cookie opens a sidebar's websocket (browsers cannot set headers on one)
    async with connect(f"{server.ws}/events",
                       additional_headers={"Cookie": f"callwise_token={body['token']}"}) as ws:
        await ws.send("{}")
        assert (await message(ws))["type"] == "error"

    for username, password in (("agent1", "wrong password"), ("nobody", PASSWORD),
                               ("agent3", PASSWORD)):  # agent3 is disabled
        reply = await request(server.base, "POST", "/api/login",
                              {"username": username, "password": password})
        assert reply.status == 401, username
        assert reply.json() == {"error": "invalid username or password"}
        assert "set-cookie" not in reply.headers
    for body in ({"username": "agent1"}, {"username": "a\x00b", "password": ""}, [1, 2],
                 {"username": "agent1", "password": PASSWORD, "role": "supervisor"}):
        reply = await request(server.base, "POST", "/api/login", body)
        assert reply.status == 422 and "error" in reply.json(), body
        assert PASSWORD not in reply.body.decode()  # never echoed back
    reply = await request(server.base, "POST", "/api/login", b"{not json")
    assert (reply.status, reply.json()) == (422, {"error": "the body is not valid JSON"})


async def test_every_api_route_refuses_missing_forged_and_expired_tokens(server):
    routes = [r for r in server.app.routes
              if getattr(r, "path", "").startswith("/api/") and r.path != "/api/login"
              and hasattr(r, "methods")]
    assert len(routes) >= 6
    bodies = {"feedback": {"feedback": "accepted"}, "wrap-up": {"disposition": "converted"}}
    for route in routes:
        path = route.path.replace("{call_id}", "c1").replace("{suggestion_id}", "s1") \
            .replace("{campaign_id}", "k1")
        body = next((b for key, b in bodies.items() if path.endswith(key)), None)
        for method in route.methods:
            for kind, token in BAD_TOKENS.items():
                reply = await request(server.base, method, path, body, token=token)
                assert reply.status == 401, (method, path, kind, reply.body)
                assert reply.json()["error"].startswith("not logged in"), (path, kind)
    reply = await request(server.base, "GET", "/api/me", token=EXPIRED)
    assert "expired" in reply.json()["error"]
    # a media token is not a user's token
    assert (await request(server.base, "GET", "/api/calls", token=MEDIA_TOKEN)).status == 401


async def test_websockets_refuse_bad_credentials_and_foreign_origins(server):
    for kind, token in BAD_TOKENS.items():
        url = f"{server.ws}/events" + (f"?token={token}" if token else "")
        code, reason = await refused(url)
        assert code == 1008 and reason.startswith("not logged in"), (kind, reason)
        if token:
            code, _ = await refused(f"{server.ws}/events",
                                    additional_headers={"Authorization": f"Bearer {token}"})
            assert code == 1008, kind
    # the token is re-checked against the user table: disabled or changed since issued
    disabled = SIGNER.issue("agent3", "agent", "A03")
    assert await refused(events_url(server, disabled)) == (1008, "account disabled")
    moved = SIGNER.issue("agent1", "agent", "A09")
    code, reason = await refused(events_url(server, moved))
    assert code == 1008 and "changed" in reason
    # a browser page on another site cannot ride a logged-in user's cookie or token
    for origin in ("https://evil.example", "null", f"{DESK}.evil.example"):
        code, reason = await refused(events_url(server, SUPERVISOR), origin=origin)
        assert (code, reason) == (1008, "origin not allowed"), origin
    for origin in (DESK, f"http://{server.netloc}"):  # configured, and our own page
        async with connect(events_url(server, SUPERVISOR), origin=origin) as ws:
            await ws.send("hello")
            assert (await message(ws))["type"] == "error"


async def test_media_ingress_needs_its_own_credential(server):
    for path in ("/twilio", "/media", "/pcm"):
        code, reason = await refused(f"{server.ws}{path}")
        assert (code, reason) == (1008, "media credential missing or invalid"), path
        for token in ("wrong-token-0123456789", SUPERVISOR):  # a user's token is not one
            code, _ = await refused(f"{server.ws}{path}?token={token}")
            assert code == 1008, (path, token[:10])
        code, reason = await refused(f"{server.ws}{path}",
                                     additional_headers={"X-Twilio-Signature": "bm9wZQ=="})
        assert (code, reason) == (1008, "bad Twilio signature"), path
    code, reason = await refused(media_url(server), origin="https://evil.example")
    assert (code, reason) == (1008, "origin not allowed")

    # Twilio's signature over the public URL it was given, or the trunk token as a header
    signed = twilio_signature(TWILIO_AUTH_TOKEN, f"{PUBLIC_URL}/twilio?trunk=7")
    ways = [(f"{server.ws}/twilio?trunk=7", {"X-Twilio-Signature": signed}),
            (f"{server.ws}/media", {"Authorization": f"Bearer {MEDIA_TOKEN}"})]
    for n, (url, headers) in enumerate(ways):
        call_id = f"cred-{n}"
        async with connect(url, additional_headers=headers) as media:
            await media.send(start_message(call_id))
            await wait_live(server, call_id)
            await media.send(STOP)
            assert (await closed(media, 60))[0] == 1000
    # the signature covers the query: a changed one is refused
    code, _ = await refused(f"{server.ws}/twilio?trunk=8",
                            additional_headers={"X-Twilio-Signature": signed})
    assert code == 1008


async def test_plain_http_on_a_websocket_path_is_told_to_upgrade(server):
    for path in ("/events", "/twilio", "/media", "/pcm"):
        reply = await request(server.base, "GET", path)
        assert reply.status == 426 and "websocket" in reply.json()["error"], path


# -- who sees which call ----------------------------------------------------------------------
async def open_pcm_call(server: LiveApp, call_id: str, agent_id: str) -> ClientConnection:
    ws = await connect(media_url(server, "/pcm", rate="8000", call_id=call_id,
                                 agent_id=agent_id))
    await ws.send((tone(0.2) * 32767).astype("<i2").tobytes())
    await wait_live(server, call_id)
    return ws


async def end_pcm_call(ws: ClientConnection) -> None:
    await ws.send(STOP)
    assert (await closed(ws, 60))[0] == 1000


async def test_agents_see_only_their_own_calls(server):
    a1 = await open_pcm_call(server, "vis-a1", "A01")
    a2 = await open_pcm_call(server, "vis-a2", "A02")
    sidebars = {name: await connect(events_url(server, token)) for name, token in
                (("agent1", AGENT1), ("agent2", AGENT2), ("boss", SUPERVISOR))}
    spy = await connect(events_url(server, AGENT2, call_id="vis-a1"))  # asks for agent1's call
    try:
        # the story so far: each sees the start of the calls it may see, and only those
        seen: dict[str, list[dict[str, Any]]] = {name: [] for name in sidebars}
        for name, ws in sidebars.items():
            want = {"agent1": {"vis-a1"}, "agent2": {"vis-a2"}, "boss": {"vis-a1", "vis-a2"}}
            started: set[str] = set()

            def all_started(e: dict[str, Any], want: set[str] = want[name],
                            started: set[str] = started) -> bool:
                if e["type"] == "call_started":
                    started.add(e["call_id"])
                return want <= started

            await read_until(ws, all_started, into=seen[name])
        # a call that starts while they watch arrives live
        a3 = await open_pcm_call(server, "vis-a3", "A01")
        await read_until(sidebars["agent1"], lambda e: e["call_id"] == "vis-a3",
                         into=seen["agent1"])
        await read_until(sidebars["boss"], lambda e: e["call_id"] == "vis-a3",
                         into=seen["boss"])

        assert await live_ids(server, AGENT1) >= {"vis-a1", "vis-a3"}
        assert "vis-a2" not in await live_ids(server, AGENT1)
        assert await live_ids(server, AGENT2) & {"vis-a1", "vis-a2", "vis-a3"} == {"vis-a2"}
        assert await live_ids(server) >= {"vis-a1", "vis-a2", "vis-a3"}

        # over HTTP: another agent's call is forbidden, an unknown one is not found
        wrap = {"disposition": "converted"}
        path = "/api/calls/vis-a1/wrap-up"
        reply = await request(server.base, "POST", path, wrap, token=AGENT2)
        assert (reply.status, reply.json()) == (403, {"error": "this call is not assigned to you"})
        reply = await request(server.base, "POST", "/api/calls/vis-a1/suggestions/s1/feedback",
                              {"feedback": "accepted"}, token=AGENT2)
        assert reply.status == 403
        reply = await request(server.base, "POST", "/api/calls/vis-a1/suggestions/s1/feedback",
                              {"feedback": "accepted"}, token=AGENT1)
        assert reply.status == 404 and "no suggestion" in reply.json()["error"]
        reply = await request(server.base, "POST", "/api/calls/no-such-call/wrap-up", wrap,
                              token=SUPERVISOR)
        assert reply.status == 404
        # over the sidebar socket: the same rule, answered as an error message
        await sidebars["agent2"].send(json.dumps({"type": "feedback", "call_id": "vis-a1",
                                                  "suggestion_id": "s1",
                                                  "feedback": "accepted"}))
        error = await read_until(sidebars["agent2"], lambda e: e["type"] == "error")
        assert "vis-a1" in error[-1]["detail"]
        seen["agent2"] += error[:-1]
        # the agent's own wrap-up is taken, and reaches the agent and the supervisor
        reply = await request(server.base, "POST", path, wrap, token=AGENT1)
        assert reply.status == 202, reply.body
        event = reply.json()
        assert (event["type"], event["disposition"], event["call_id"]) == (
            "call_ended", "converted", "vis-a1")
        assert event["reason"] == "wrap-up by agent1"
        got = await read_until(sidebars["boss"], lambda e: e.get("disposition") == "converted",
                               into=seen["boss"])
        assert got[-1]["event_id"] == event["event_id"]

        # agent1's calls end before agent2's: had agent2 been sent any of their events, they
        # would have come before the end of its own call
        for ws in (a1, a3):
            await end_pcm_call(ws)
        await end_pcm_call(a2)
        await read_until(sidebars["agent2"], ended("vis-a2"), 60, into=seen["agent2"])
        await read_until(sidebars["agent1"], ended("vis-a3"), 60, into=seen["agent1"])
        await read_until(sidebars["boss"], ended("vis-a2"), 60, into=seen["boss"])
        ids = {name: {e["call_id"] for e in events if "call_id" in e}
               for name, events in seen.items()}
        assert ids["agent1"] & {"vis-a1", "vis-a2", "vis-a3"} == {"vis-a1", "vis-a3"}
        assert ids["agent2"] & {"vis-a1", "vis-a2", "vis-a3"} == {"vis-a2"}
        assert ids["boss"] >= {"vis-a1", "vis-a2", "vis-a3"}
        await spy.send("{}")  # the spy got nothing of agent1's call: only this error
        assert (await message(spy))["type"] == "error"
    finally:
        for ws in (*sidebars.values(), spy):
            await ws.close()


async def test_sidebar_messages_that_make_no_sense_get_an_error_not_a_close(server):
    async with connect(events_url(server, AGENT1)) as ws:
        for text in ("not json", "[]", '{"type": "feedback"}', "9" * 5000,
                     json.dumps({"type": "feedback", "call_id": "a\x00b", "suggestion_id": "s",
                                 "feedback": "accepted"}),
                     json.dumps({"type": "feedback", "call_id": "c", "suggestion_id": "s",
                                 "feedback": "loved it"}),
                     json.dumps({"type": "feedback", "call_id": "nope", "suggestion_id": "s",
                                 "feedback": "accepted"})):
            await ws.send(text)
            # (the story of this agent's calls still to wrap up may come first)
            reply = (await read_until(ws, lambda e: e["type"] == "error", within=5))[-1]
            assert reply["detail"], text
        await ws.send(b"\x00\x01")
        await read_until(ws, lambda e: e["type"] == "error", within=5)


async def test_a_sidebar_that_falls_behind_is_told_to_reconnect(server, runtime):
    before = len(runtime.hub)
    async with connect(events_url(server, SUPERVISOR, call_id="lag")) as ws:
        await eventually(lambda: len(runtime.hub) > before, 5)
        meta = CallMeta("lag", None, "inbound")
        for _ in range(2500):  # in one go: more than its queue holds
            runtime.hub.publish(CallAnswered(call_id="lag"), meta)
        assert await closed(ws) == (1013, "lagged; reconnect")


async def test_a_sidebar_is_closed_when_its_token_expires(server):
    short = SIGNER.issue("agent1", "agent", "A01", ttl_s=1.0)
    async with connect(events_url(server, short)) as ws:
        code, reason = await closed(ws, 10)
    assert (code, reason) == (1008, "token expired; log in again")


# -- media: a real call end to end ------------------------------------------------------------
async def test_a_twilio_call_reaches_its_agent_with_cards_and_takes_feedback(server):
    clip = load_audio(FIXTURES / "calls" / "demo_call_stereo.flac")
    cut = int(11.0 * clip.sample_rate)  # the greeting and the customer's first request
    pad = np.zeros(int(1.5 * clip.sample_rate), np.float32)
    agent, customer = (np.concatenate([clip.samples[ch, :cut], pad]) for ch in (0, 1))
    msgs = twilio_messages([customer, agent], clip.sample_rate, ["inbound", "outbound"],
                           call_sid="CAe2e", custom={"agent_id": "A01",
                                                     "campaign_id": "inbound"})
    msgs.insert(100, "{not json")  # skipped and counted; the call goes on
    *audio, stop = msgs
    sidebar = await connect(events_url(server, AGENT1, call_id="CAe2e"))
    other = await connect(events_url(server, AGENT2))
    events: list[dict[str, Any]] = []
    try:
        async with connect(media_url(server)) as media:
            for i, m in enumerate(audio):
                await media.send(m)
                if i % 100 == 0:
                    await asyncio.sleep(0)
            await read_until(sidebar, lambda e: e["type"] == "suggestion_shown", 120,
                             into=events)
            cards = [e for e in events if e["type"] == "suggestion_shown"]
            card = cards[0]
            # the agent accepts the card over HTTP; another agent may not
            path = f"/api/calls/CAe2e/suggestions/{card['suggestion_id']}/feedback"
            reply = await request(server.base, "POST", path, {"feedback": "accepted"},
                                  token=AGENT2)
            assert reply.status == 403
            reply = await request(server.base, "POST", path, {"feedback": "accepted"},
                                  token=AGENT1)
            assert reply.status == 202, reply.body
            assert (reply.json()["feedback"], reply.json()["by"]) == ("accepted", "agent1")
            await read_until(sidebar, lambda e: e["type"] == "suggestion_feedback", into=events)
            # and dismisses it from the sidebar itself
            await sidebar.send(json.dumps({"type": "feedback", "call_id": "CAe2e",
                                           "suggestion_id": card["suggestion_id"],
                                           "feedback": "dismissed"}))
            await read_until(sidebar, lambda e: e.get("feedback") == "dismissed", into=events)
            await media.send(stop)
            await read_until(sidebar, ended("CAe2e"), 120, into=events)
            assert (await closed(media, 30))[0] == 1000
    finally:
        await sidebar.close()
    assert events[0]["type"] == "call_started" and events[0]["agent_id"] == "A01"
    finals = [e for e in events if e["type"] == "utterance"]
    agent_words = " ".join(e["text"] for e in finals if e["role"] == "agent").lower()
    customer_words = " ".join(e["text"] for e in finals if e["role"] == "customer").lower()
    assert "harbor" in agent_words and "credit card" in customer_words
    assert any(e["type"] == "intent" for e in events)
    assert all(c["citations"] for c in cards if c["source"] == "exemplar")
    # the other agent's screen got nothing of this call
    await other.send("{}")
    while (got := await message(other))["type"] != "error":
        assert got.get("call_id") != "CAe2e", got
    await other.close()


async def test_a_pcm_call_is_transcribed_and_a_torn_frame_is_skipped(server):
    clip = load_audio(FIXTURES / "calls" / "demo_call_mono.flac")
    cut = int(11.0 * clip.sample_rate)
    samples = np.concatenate([clip.samples[0, :cut], np.zeros(clip.sample_rate, np.float32)])
    pcm = (samples * 32767).astype("<i2")
    async with connect(events_url(server, SUPERVISOR, call_id="pcm-mono")) as sidebar:
        async with connect(media_url(server, "/pcm", rate=str(clip.sample_rate),
                                     call_id="pcm-mono", agent_id="A02")) as media:
            for n, i in enumerate(range(0, len(pcm), 1600)):
                await media.send(pcm[i : i + 1600].tobytes())
                if n == 20:
                    await media.send(b"\x01\x02\x03")  # half a sample: cannot be PCM16
            await media.send(STOP)
            events = await read_until(sidebar, ended("pcm-mono"), 120)
            assert (await closed(media, 30))[0] == 1000
    text = " ".join(e["text"] for e in events if e["type"] == "utterance").lower()
    assert "harbor" in text and "credit card" in text
    assert events[0]["type"] == "call_started"


# -- media: protocol abuse --------------------------------------------------------------------
async def test_twilio_protocol_abuse_costs_one_socket_at_most(server, runtime):
    watcher = await connect(events_url(server, SUPERVISOR))
    seen: list[dict[str, Any]] = []
    try:
        first = await connect(media_url(server))
        second = await connect(media_url(server))
        await first.send(json.dumps({"event": "connected", "protocol": "Call"}))
        await first.send(start_message("abuse-1"))
        await second.send(start_message("abuse-2", agent_id="A02"))
        await wait_live(server, "abuse-1")
        await wait_live(server, "abuse-2")
        frames = media_frames(1.0)
        for m in frames[:25]:
            await first.send(m)
            await second.send(m)
        # junk on the first socket: each message is skipped, the call goes on
        junk = [
            json.dumps({"event": "mark", "mark": "not an object"}),
            json.dumps({"event": "mark", "mark": ["a", "list"]}),
            json.dumps({"event": "media", "media": {"payload": "%%% not base64 %%%"}}),
            json.dumps({"event": "media", "media": {"payload": "", "timestamp": "-5"}}),
            json.dumps({"event": "media", "media": {"payload": "AAAA", "timestamp": "x" * 50}}),
            json.dumps({"event": "media", "media": "nope"}),
            json.dumps({"event": 7}), "[]", "null", "{", "\x00",
            start_message("abuse-1-again", rate=16000, tracks=("inbound", "outbound")),
            b"\xff\xfe binary junk",
        ]
        harmless = [json.dumps({"event": "mark", "mark": {"name": "x" * 10_000}}),
                    json.dumps({"event": "dtmf", "dtmf": {"digit": "5"}})]
        for m in junk + harmless:
            await first.send(m)
        # a new socket reusing the live call's id is refused; the live call is untouched
        async with connect(media_url(server)) as thief:
            await thief.send(start_message("abuse-1", agent_id="A02"))
            code, reason = await closed(thief)
        assert code == 1008 and "already live" in reason
        # a client that vanishes without a stop: its call is ended, the words so far kept
        gone = await connect(media_url(server))
        await gone.send(start_message("abuse-3"))
        await wait_live(server, "abuse-3")
        for m in frames[:10]:
            await gone.send(m)
        gone.transport.abort()
        await read_until(watcher, ended("abuse-3"), 60, into=seen)
        assert seen[-1]["reason"] == "media socket closed"
        # through all this both calls stayed live and still take audio
        assert {"abuse-1", "abuse-2"} <= await live_ids(server)
        assert "abuse-1-again" not in await live_ids(server)
        meta = runtime.meta("abuse-1")
        assert meta is not None and meta.agent_id == "A01"
        session = runtime.session("abuse-1")
        assert session is not None and session.skipped_frames == len(junk)
        for m in frames[25:]:
            await first.send(m)
            await second.send(m)
        for ws, call_id in ((first, "abuse-1"), (second, "abuse-2")):
            await ws.send(STOP)
            assert (await closed(ws, 60))[0] == 1000
            await read_until(watcher, ended(call_id), 60, into=seen)
        assert [e["call_id"] for e in seen if e["type"] == "call_ended"].count("abuse-1") == 1
        assert (await request(server.base, "GET", "/healthz")).status == 200
    finally:
        await watcher.close()


@pytest.mark.parametrize("start, why", [
    (start_message("fmt-0", rate=0), "sampleRate"),
    (start_message("fmt-neg", rate=-8000), "sampleRate"),
    (start_message("fmt-str", rate="fast"), "sampleRate"),
    (start_message("fmt-opus", encoding="audio/opus"), "not supported"),
    (start_message("fmt-3", tracks=("a", "b", "c")), "tracks"),
    (json.dumps({"event": "start", "start": "not an object"}), "bad start message"),
])
async def test_a_start_the_server_cannot_take_closes_with_1003_and_a_reason(server, start, why):
    async with connect(media_url(server)) as media:
        await media.send(start)
        code, reason = await closed(media)
    assert code == 1003 and why in reason, reason
    assert "Traceback" not in reason and len(reason.encode()) <= 123


@pytest.mark.parametrize("custom, why", [
    ({"language": "klingon"}, "bad language"),
    ({"call_id": "has spaces in it"}, "bad call_id"),
    ({"agent_id": "x" * 300}, "bad agent_id"),
])
async def test_bad_call_parameters_are_refused_with_1008(server, custom, why):
    async with connect(media_url(server)) as media:
        await media.send(start_message(**{"call_id": "params-1", **custom}))
        code, reason = await closed(media)
    assert code == 1008 and why in reason, reason


@pytest.mark.parametrize("query, why", [
    ({"rate": "5"}, "rate"), ({"rate": "192001"}, "rate"), ({"rate": "abc"}, "rate"),
    ({"rate": "-16000"}, "rate"), ({"channels": "3"}, "channels"), ({"channels": "0"}, "channels"),
])
async def test_pcm_formats_out_of_range_close_with_1003(server, query, why):
    code, reason = await refused(media_url(server, "/pcm", **query))
    assert code == 1003 and why in reason, reason


async def test_pcm_call_parameters_are_checked(server):
    code, reason = await refused(media_url(server, "/pcm", call_id="a%00b"))
    assert code == 1008 and "call_id" in reason


async def test_a_failure_inside_one_call_ends_that_call_only(server, runtime, monkeypatch):
    from assist.session import CallSession

    real_accept = CallSession.accept

    def accept(self: CallSession, channel: int, samples: Any, rate: int) -> None:
        if self.info.call_id == "boom":
            raise RuntimeError("a bug in the call pipeline")
        real_accept(self, channel, samples, rate)

    monkeypatch.setattr(CallSession, "accept", accept)
    async with connect(events_url(server, SUPERVISOR)) as watcher:
        calm = await connect(media_url(server))
        await calm.send(start_message("calm"))
        await wait_live(server, "calm")
        async with connect(media_url(server)) as boom:
            await boom.send(start_message("boom"))
            await boom.send(media_frames(0.1)[0])
            assert await closed(boom) == (1011, "internal error; the call was ended")
        events = await read_until(watcher, ended("boom"), 60)
        assert events[-1]["reason"] == "internal error in the media handler"
        for m in media_frames(0.5):
            await calm.send(m)
        assert "calm" in await live_ids(server)
        await calm.send(STOP)
        assert (await closed(calm, 60))[0] == 1000
        await read_until(watcher, ended("calm"), 60)


async def test_an_unexpected_error_is_a_500_without_details(server, runtime, monkeypatch):
    def broken(live_only: bool = True) -> list[CallMeta]:
        raise RuntimeError("secret internals: /etc/passwd")

    monkeypatch.setattr(runtime, "summaries", broken)
    reply = await request(server.base, "GET", "/api/calls", token=SUPERVISOR)
    assert (reply.status, reply.json()) == (500, {"error": "internal error; see the server log"})
    monkeypatch.undo()
    assert (await request(server.base, "GET", "/api/calls", token=SUPERVISOR)).status == 200


def test_settings_read_lists_from_the_environment(monkeypatch):
    monkeypatch.setenv("CALLWISE_ALLOWED_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("CALLWISE_MEDIA_TOKENS", '["token-one-0123456789", "token-two-0123456789"]')
    monkeypatch.setenv("CALLWISE_TWILIO_AUTH_TOKEN", "abc")
    monkeypatch.setenv("CALLWISE_PORT", "9000")
    settings = AppSettings(_env_file=None)  # type: ignore[call-arg]
    assert settings.allowed_origins == ["https://a.example", "https://b.example"]
    assert settings.media_tokens == ["token-one-0123456789", "token-two-0123456789"]
    assert settings.port == 9000 and "abc" not in repr(settings)
    monkeypatch.setenv("CALLWISE_MEDIA_TOKENS", "short")
    with pytest.raises(ValueError, match="16 characters"):
        AppSettings(_env_file=None)  # type: ignore[call-arg]


async def test_the_twilio_transport_can_talk_back_for_the_voice_bot(runtime):
    """Not wired to a bot yet: what it would send on the call's own socket, in Twilio's
    format (media to play, a mark to learn when it was played, clear on barge-in)."""

    class Socket:
        def __init__(self) -> None:
            self.sent: list[dict[str, Any]] = []

        async def send_text(self, text: str) -> None:
            self.sent.append(json.loads(text))

    socket = Socket()
    transport = TwilioTransport(socket, CallRegistry(runtime))  # type: ignore[arg-type]
    transport.stream_sid = "MZ9"
    await transport.send_audio(b"\xff\x7f")
    await transport.send_mark("greeting")
    await transport.send_clear()
    assert socket.sent == [
        {"event": "media", "streamSid": "MZ9", "media": {"payload": "/38="}},
        {"event": "mark", "streamSid": "MZ9", "mark": {"name": "greeting"}},
        {"event": "clear", "streamSid": "MZ9"},
    ]


def test_tokens_in_websocket_urls_stay_out_of_the_log():
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1,
                               '%s - "WebSocket %s" [accepted]',
                               ("10.0.0.1:5000", f"/events?call_id=c1&token={SUPERVISOR}"), None)
    assert HideTokens().filter(record)
    assert record.getMessage() == '10.0.0.1:5000 - "WebSocket /events?call_id=c1&token=***" ' \
        "[accepted]"


# -- the process ------------------------------------------------------------------------------
async def test_healthz_says_how_many_calls_and_whether_the_database_is_up(server):
    reply = await request(server.base, "GET", "/healthz")
    assert reply.status == 200
    body = reply.json()
    assert body["status"] == "ok" and body["database"] == "up"
    assert body["live_calls"] == len(server.app.state.services.runtime.live_calls())


async def test_shutdown_ends_live_calls_and_closes_what_it_opened(speech_models, monkeypatch):
    """SIGINT/SIGTERM make uvicorn leave its loop; the lifespan then ends what is still live
    (the words so far kept) and closes the runtime it loaded."""
    loaded: list[Runtime] = []

    async def load(settings: AppSettings) -> Runtime:
        loaded.append(Runtime(speech_models, None))
        return loaded[-1]

    monkeypatch.setattr(assist.app, "load_runtime", load)
    live = await LiveApp.start(create_app(SETTINGS, signer=SIGNER, connect_database=False))
    runtime = loaded[0]
    sub, _ = runtime.subscribe(lambda e, m: m.call_id == "bye")
    media = await connect(media_url(live, "/pcm", call_id="bye"))
    await media.send((tone(0.5, rate=16000) * 32767).astype("<i2").tobytes())
    await eventually(lambda: runtime.session("bye") is not None, 10)
    health = (await request(live.base, "GET", "/healthz")).json()
    assert health == {"status": "ok", "live_calls": 1, "database": "down"}
    live.server.handle_exit(signal.SIGTERM, None)  # what uvicorn's signal handler calls
    await asyncio.wait_for(live.task, 30)
    assert runtime.session("bye") is None and runtime.live_calls() == []
    async with asyncio.timeout(5):
        while (event := await sub.get()).type != "call_ended":
            pass
    assert event.reason == "server shutting down"
    code, _ = await closed(media)
    assert code == 1012  # "service restart": the gateway may reconnect elsewhere


async def test_pages_carry_a_strict_policy_and_only_the_sidebar_may_be_framed(runtime, database):
    settings = SETTINGS.model_copy(update={"frame_ancestors": ["https://desktop.bank.example"]})
    app = create_app(settings, runtime=runtime, database=database, signer=SIGNER,
                     connect_database=False)
    live = await LiveApp.start(app)
    try:
        for path, framed in (("/sidebar", True), ("/login", True), ("/live", False)):
            reply = await request(live.base, "GET", path)
            assert reply.status == 200 and "text/html" in reply.headers["content-type"]
            csp = reply.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
            assert ("frame-ancestors 'self' https://desktop.bank.example" in csp) == framed, csp
            assert ("frame-ancestors 'none'" in csp) == (not framed), csp
        reply = await request(live.base, "GET", "/")
        assert reply.status == 302 and reply.headers["location"] == "/login"
    finally:
        await live.stop()
    with pytest.raises(ValueError, match="not an origin"):
        AppSettings(_env_file=None, frame_ancestors="https://ok.example, x; script-src *")


async def test_signing_out_refuses_the_token_from_then_on_and_after_a_restart(runtime, database):
    token = SIGNER.issue("agent2", "agent", "A02")
    app = create_app(SETTINGS, runtime=runtime, database=database, signer=SIGNER,
                     connect_database=False)
    live = await LiveApp.start(app)
    try:
        assert (await request(live.base, "GET", "/api/me", token=token)).status == 200
        reply = await request(live.base, "POST", "/api/logout", token=token)
        assert reply.status == 204 and "callwise_token=" in reply.headers.get("set-cookie", "")
        reply = await request(live.base, "GET", "/api/me", token=token)
        assert reply.status == 401 and "signed out" in reply.json()["error"]
        assert await refused(events_url(live, token)) == (1008, "signed out; log in again")
    finally:
        await live.stop()
    again = await LiveApp.start(create_app(SETTINGS, runtime=runtime, database=database,
                                           signer=SIGNER, connect_database=False))
    try:  # a restarted server still refuses it
        assert (await request(again.base, "GET", "/api/me", token=token)).status == 401
        other = SIGNER.issue("agent2", "agent", "A02", ttl_s=3000)
        assert (await request(again.base, "GET", "/api/me", token=other)).status == 200
    finally:
        await again.stop()


async def test_a_supervisor_watches_read_only(server, runtime):
    session = await runtime.open_call(CallInfo(call_id="ro-1", agent_id="A01", layout="stereo",
                                               channel_roles=["agent", "customer"]))
    try:
        path = "/api/calls/ro-1/wrap-up"
        reply = await request(server.base, "POST", path, {"disposition": "converted"},
                              token=SUPERVISOR)
        assert reply.status == 403 and "read-only" in reply.json()["error"]
        reply = await request(server.base, "GET", "/api/calls", token=SUPERVISOR)
        [row] = [c for c in reply.json() if c["call_id"] == "ro-1"]
        assert row["agent_id"] == "A01" and row["live"] and row["started_at"]
        assert {"intent", "open_alerts", "cards_shown", "accepted", "acceptance"} <= set(row)
    finally:
        await runtime.end_call(session)
