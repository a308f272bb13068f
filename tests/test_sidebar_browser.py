"""The agent's sidebar and the supervisor's live view in a real browser (headless Chromium via
Playwright), on the real app: real models, the embedded LLM, PostgreSQL, Twilio media frames.

The live call is `fixtures/calls/offer_call_stereo.flac` (our own synthesized call: the agent
promises there is no risk, the customer reads out a card number and agrees), streamed at
real-time speed as mu-law Twilio frames for agent A01. Three people watch in their own browser
contexts: agent1 (A01) at a sidebar's 400 px, agent2 (A02), and a supervisor. The browsers reach
the app through a TCP proxy that the test cuts mid-call: a real network drop.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from assist.app import create_app
from assist.auth import TokenSigner, UserStore
from assist.runtime import Runtime, call_info
from assist.settings import AppSettings
from campaigns.db import Database, DatabaseSettings
from campaigns.db import connect as db_connect
from campaigns.outbox import Outbox, StoreWriter
from campaigns.store import Store
from dialogue.defaults import policy_text
from dialogue.suggest import Suggester
from speech import Utterance
from speech.audio_file import load_audio

from .browser import chromium, log_in, needs_browser, new_page
from .conftest import FIXTURES
from .live_app import LiveApp, request
from .pg import CuttableProxy, PgServer
from .test_live_e2e import MEDIA_TOKEN, stream_realtime
from .twilio_frames import twilio_messages

PASSWORD = "browser password, long enough"
SETTINGS = AppSettings(_env_file=None, media_tokens=[MEDIA_TOKEN])  # type: ignore[call-arg]
FAST = DatabaseSettings(db_pool_min=1, db_pool_max=4, db_connect_timeout_s=3)
# Chromium itself logs a refused connection while the network is down; the page logs nothing
NETWORK_DOWN = ("net::ERR_CONNECTION_REFUSED", "net::ERR_CONNECTION_RESET",
                "ERR_EMPTY_RESPONSE", "WebSocket connection to")

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module", autouse=True)
def _browser_present() -> None:
    needs_browser()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def database(pg: PgServer) -> AsyncIterator[Database]:
    db = await db_connect(await pg.create_database("callwise_browser"), settings=FAST)
    users = UserStore(db.pool)
    await users.create("agent1", PASSWORD, "agent", "A01")
    await users.create("agent2", PASSWORD, "agent", "A02")
    await users.create("boss", PASSWORD, "supervisor")
    yield db
    await db.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server(speech_models, intent_model, playbook, database, tmp_path_factory
                 ) -> AsyncIterator[tuple[LiveApp, Runtime, CuttableProxy]]:
    from dialogue.llm import make_client

    writer = StoreWriter(Outbox(tmp_path_factory.mktemp("outbox") / "outbox.sqlite3"),
                         Store(database))
    runtime = Runtime(speech_models, Suggester(intent_model, playbook, make_client(),
                                               policy_text()), writer)
    app = create_app(SETTINGS, runtime=runtime, database=database,
                     signer=TokenSigner(b"browser-secret-0123456789abcdef!"),
                     connect_database=False)
    live = await LiveApp.start(app)
    port = int(live.base.rsplit(":", 1)[1])
    proxy = await CuttableProxy(("127.0.0.1", port)).start()
    await runtime.ready()  # the LLM has read its prompt, as at a real server's start
    yield live, runtime, proxy
    await proxy.cut()
    await live.stop()
    await runtime.aclose()


def via(proxy: CuttableProxy) -> str:
    return f"http://127.0.0.1:{proxy.port}"


async def test_an_agent_works_a_live_call_in_the_sidebar(server, database, tmp_path):
    live, runtime, proxy = server
    base = via(proxy)
    call_id = f"browser-{uuid.uuid4().hex[:8]}"
    clip = load_audio(FIXTURES / "calls" / "offer_call_stereo.flac")
    messages = twilio_messages([clip.samples[1], clip.samples[0]], clip.sample_rate,
                               ["inbound", "outbound"], call_sid="CA" + call_id,
                               custom={"call_id": call_id, "agent_id": "A01"})
    async with chromium() as browser:
        agent = await new_page(browser, base)
        other = await new_page(browser, base)
        boss = await new_page(browser, base, width=1100)
        await log_in(agent, "agent1", PASSWORD)
        await agent.wait_for_url("**/sidebar")
        await agent.wait_for_selector("#waiting:has-text('Waiting for your next call')")
        await log_in(other, "agent2", PASSWORD)
        await other.wait_for_url("**/sidebar")
        await log_in(boss, "boss", PASSWORD)
        await boss.wait_for_url("**/live")

        streaming = asyncio.create_task(stream_realtime(live, messages, 2))

        # partial text first, replaced in place by the final line with its role
        await agent.wait_for_selector(".line.partial", timeout=30_000)
        await agent.wait_for_selector(".line.role-agent[data-seq]", timeout=30_000)
        await agent.wait_for_selector(".line.role-customer[data-seq]", timeout=30_000)
        assert (await agent.inner_text("#intent")).strip() not in ("", "—")
        # the top agent's reply at once, citing agent, call and outcome
        cite = agent.locator(".card.source-exemplar .cite").first
        await cite.wait_for(timeout=20_000)
        assert "Top agent" in await cite.inner_text()
        # the supervisor lists the call while it is live
        row = boss.locator(f"tr[data-call='{call_id}']")
        await row.wait_for(timeout=10_000)
        assert "A01" in await row.inner_text()
        await agent.screenshot(path=tmp_path / "sidebar-mid-call.png")
        await boss.screenshot(path=tmp_path / "live-view.png")

        # accept the first card with the mouse
        first = agent.locator(".card.source-exemplar").first
        accepted_id = await first.get_attribute("data-id")
        await first.locator("button.accept").click()
        await agent.wait_for_selector(f".card[data-id='{accepted_id}'][data-feedback=accepted]")

        # the network drops and comes back during the call
        await proxy.cut()
        await agent.wait_for_selector("body[data-connection=down]", timeout=10_000)
        await asyncio.sleep(3)
        await proxy.restore()
        await agent.wait_for_selector("body[data-connection=live]", timeout=15_000)

        # the agent's forbidden promise raises an alert; the card number is flagged, redacted
        await agent.wait_for_selector(".alert.kind-forbidden_claim", timeout=40_000)
        await agent.wait_for_selector(".alert.kind-pii_spoken", timeout=40_000)
        # the AI's reply arrives in its own card (a draft at least, then shown or withheld)
        await agent.wait_for_selector(".card.source-llm", timeout=60_000)

        # keyboard: select the second card, dismiss it
        await agent.locator("body").click(position={"x": 5, "y": 5})
        dismissed_id = await dismiss_second_card(agent)
        await agent.keyboard.press("?")
        assert await agent.locator("#help").is_visible()
        await agent.keyboard.press("Escape")

        await asyncio.wait_for(streaming, 120)

        # after the call: the wrap-up note is drafted, edited and saved with the outcome
        await agent.wait_for_selector("#wrapup:not([hidden])", timeout=30_000)
        await agent.wait_for_function(
            "document.getElementById('note-reason').value.length > 0", timeout=30_000)
        await agent.fill("#note-next", "Send the six-month terms by SMS today.")
        await agent.select_option("#disposition", "converted")
        await agent.click("#wrapup-save")
        await agent.wait_for_selector("#wrapup-status:has-text('Saved')", timeout=10_000)

        # the supervisor opens the call read-only: no buttons to act with
        await boss.locator(f"tr[data-call='{call_id}'] a").click()
        await boss.wait_for_url(f"**/sidebar?call_id={call_id}")
        await boss.wait_for_selector(".line[data-seq]")
        assert await boss.locator("#readonly").is_visible()
        assert await boss.locator(".card button").count() == 0
        assert await boss.locator("#wrapup-form button").is_hidden()

        # the other agent saw nothing of it
        assert await other.locator(".line").count() == 0
        assert "Waiting for your next call" in await other.inner_text("#waiting")

        # every line survived the drop: the screen holds every utterance the store holds
        await runtime.recorded()
        pool = database.pool
        stored = await pool.fetch("SELECT seq, text_redacted FROM utterances WHERE call_id = $1 "
                                  "ORDER BY seq", call_id)
        shown = await agent.eval_on_selector_all(
            ".line[data-seq]", "nodes => nodes.map(n => Number(n.dataset.seq))")
        assert sorted(shown) == [r["seq"] for r in stored]
        assert "[CARD]" in " ".join(r["text_redacted"] for r in stored)
        assert await pool.fetchval("SELECT feedback FROM suggestions WHERE id = $1",
                                   accepted_id) == "accepted"
        if dismissed_id:
            assert await pool.fetchval("SELECT feedback FROM suggestions WHERE id = $1",
                                       dismissed_id) == "dismissed"
        row = await pool.fetchrow("SELECT disposition, wrap_up_note, wrapped_up_by FROM calls "
                                  "WHERE id = $1", call_id)
        note = json.loads(row["wrap_up_note"])
        assert row["disposition"] == "converted" and row["wrapped_up_by"] == "agent1"
        assert note["next_step"] == "Send the six-month terms by SMS today."
        assert note["reason"]

        # usable at a sidebar's width: nothing runs off to the side
        assert await agent.evaluate("document.documentElement.scrollWidth") <= 400
        metrics = await agent.evaluate("window.callwiseMetrics")
        assert any(m["kind"] == "first_card" and m["ms"] > 0 for m in metrics), metrics
        for page in (agent, other, boss):
            assert page.console.errors(allow=NETWORK_DOWN) == []  # type: ignore[attr-defined]


async def dismiss_second_card(page) -> str | None:
    """Picks the second card with "2" and dismisses it with "d"; returns its id.

    The call goes on meanwhile: the customer's next turn may replace the cards between the two
    keys, and then the pick is gone and "d" must do nothing; the agent tries again.
    """
    for _ in range(5):
        if await page.locator(".card[data-state=shown]").count() < 2:
            await asyncio.sleep(0.5)
            continue
        await page.keyboard.press("2")
        try:
            await page.wait_for_selector(".card.selected:nth-child(2)", timeout=2_000)
        except Exception:  # the cards changed under the key: pick again
            continue
        picked = await page.locator(".card.selected").get_attribute("data-id")
        if await page.locator(".card.selected").get_attribute("data-state") != "shown":
            continue
        await page.keyboard.press("d")
        outcome = await page.wait_for_function(
            """id => { const card = document.querySelector(`.card[data-id='${id}']`);
                       if (!card) return "replaced";
                       return card.dataset.feedback === "dismissed" ? "dismissed" : null; }""",
            arg=picked, timeout=10_000)
        if await outcome.json_value() == "dismissed":
            return picked
        # a new turn replaced the cards: nothing else may have been dismissed by that "d"
        assert await page.locator(".card[data-feedback=dismissed]").count() == 0
    return None


def _line(call_id: str, n: int, role: str, text: str, start: float) -> Utterance:
    return Utterance(call_id=call_id, utterance_id=f"{call_id}-u{n}", final=True,
                     channel=0 if role == "agent" else 1, start=start, end=start + 2.0,
                     text=text, language="en", role=role)


async def test_logging_out_closes_the_streams_and_refuses_the_token(server):
    live, runtime, proxy = server
    base = via(proxy)
    call_id = f"logout-{uuid.uuid4().hex[:8]}"
    async with chromium() as browser:
        agent = await new_page(browser, base)
        await log_in(agent, "agent1", PASSWORD)
        await agent.wait_for_url("**/sidebar")
        token = await agent.evaluate("sessionStorage.getItem('callwise_token')")
        session = await runtime.open_call(call_info({"call_id": call_id, "agent_id": "A01"},
                                                    layout="stereo"))
        await session.push(_line(call_id, 0, "agent", "Hello, this is Sam from Harbor Bank.",
                                 0.5))
        await session.push(_line(call_id, 1, "customer", "I'd like to pay my bill in "
                                 "installments.", 3.0))
        await agent.wait_for_selector(".line.role-customer[data-seq]")
        async with connect(f"{live.ws}/events?token={token}") as second_tab:
            await agent.click("#logout")
            await agent.wait_for_url("**/login**")
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(10):
                    while True:
                        await second_tab.recv()
            assert second_tab.close_code == 1008
        reply = await request(live.base, "GET", "/api/me", token=token)
        assert reply.status == 401 and "signed out" in reply.json()["error"]
        await runtime.end_call(session)
        assert agent.console.errors() == []  # type: ignore[attr-defined]
