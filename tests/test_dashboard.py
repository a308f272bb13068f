"""The supervisor dashboard as a supervisor gets it: the real web app on uvicorn on a free port,
a real PostgreSQL holding the fixture campaign, and a real browser (headless Chromium) reading
the page, logged in as a supervisor (the token rides in the URL fragment, as a link may carry it).

Every number on the page carries data-metric (a path into the report JSON) and data-value (the
raw number); the tests read the DOM Chromium dumps after the page has run its scripts and check
each number, as shown and as carried, against `campaign_report` on the same database, and the
headline totals against plain SQL counts as well.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from assist.app import create_app
from assist.auth import TokenSigner, UserStore
from assist.bus import CallMeta
from assist.runtime import Runtime
from assist.settings import AppSettings
from campaigns.analytics import ReportQuery, campaign_report
from campaigns.db import Database, DatabaseSettings, connect
from campaigns.demo_campaign import CAMPAIGN_ID, insert_campaign, insert_fixture_campaign
from core.events import CallEnded
from dialogue.leaderboard import LeaderboardRule
from speech import SpeechModels

from .live_app import LiveApp, Reply, request
from .pg import CuttableProxy, PgServer

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="needs a real browser: apt-get install -y chromium (Debian's package)",
)
CHROMIUM_TIMEOUT_S = 90
EMPTY = "empty-campaign"
# The page's own options go through to the API; these make the fixture's agents rank (each has
# at most 14 answered calls) and move its days to New York's calendar (the evening before).
OPTIONS = {"min_calls": 5, "tz": "America/New_York"}
NO_MODELS = cast(SpeechModels, None)  # these tests open no call, so no model is ever touched
FAST = DatabaseSettings(db_pool_min=1, db_pool_max=4, db_connect_timeout_s=3)
SIGNER = TokenSigner(b"dashboard-test-secret-0123456789")
SUPERVISOR = SIGNER.issue("boss", "supervisor", None)
AGENT = SIGNER.issue("agent1", "agent", "A01")
PASSWORD = "correct horse battery"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def dsn(pg: PgServer) -> str:
    """A scratch database holding the fixture campaign and a campaign without calls."""
    url = await pg.create_database("callwise_dashboard")
    async with await connect(url, settings=FAST) as db:
        await insert_fixture_campaign(db.pool)
        await insert_campaign(db.pool, EMPTY, name="A campaign with no calls yet")
        await UserStore(db.pool).create("boss", PASSWORD, "supervisor")
        await UserStore(db.pool).create("agent1", PASSWORD, "agent", "A01")
    return url


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def database(dsn: str) -> AsyncIterator[Database]:
    async with await connect(dsn, settings=FAST) as db:
        yield db


async def _start(database: Database | None) -> LiveApp:
    runtime = Runtime(NO_MODELS, None)
    app = create_app(AppSettings(_env_file=None), runtime=runtime, database=database,
                     signer=SIGNER, connect_database=False)
    return await LiveApp.start(app)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def server(database: Database) -> AsyncIterator[LiveApp]:
    running = await _start(database)
    yield running
    await running.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bare_server() -> AsyncIterator[LiveApp]:
    """The same server started without a database, as `callwise serve` does when it has none."""
    running = await _start(None)
    yield running
    await running.stop()


async def expected_report(db: Database, campaign_id: str, **options: Any) -> dict[str, Any]:
    query = ReportQuery(
        campaign_id=campaign_id,
        time_zone=options.get("tz", "UTC"),
        leaderboard=LeaderboardRule(min_calls=options.get("min_calls", 20)),
    )
    return (await campaign_report(db.pool, query)).model_dump(mode="json")


# ---- a plain HTTP client (the server shares the test's event loop, so it runs in a thread) ----
async def fetch(base: str, path: str, method: str = "GET",
                token: str | None = SUPERVISOR) -> Reply:
    return await request(base, method, path, token=token)


# ---- the browser ----------------------------------------------------------------------------
async def chromium(*args: str) -> str:
    """Run headless Chromium to completion; its stdout. --virtual-time-budget lets the page's
    fetches and scripts finish (and keeps the 30 s refresh timer from firing) before the dump.
    Fails on anything the page wrote to the console (an uncaught error, a refused script), but
    a 4xx/5xx answer the page handles, which Chromium also reports there."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        proc = await asyncio.create_subprocess_exec(
            CHROMIUM,
            "--headless=new",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--disable-extensions",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), CHROMIUM_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
    log = err.decode(errors="replace")
    assert proc.returncode == 0, log[-3000:]
    console = [line for line in log.splitlines() if ":CONSOLE" in line]
    assert [line for line in console if "Failed to load resource" not in line] == []
    return out.decode()


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}  # fmt: skip


@dataclass
class Shown:
    attrs: dict[str, str]
    text: str = ""


class Page(HTMLParser):
    """What a reader of the dumped DOM sees: every data-metric / data-text element with its
    text, every element with an id, and the body's data-state."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.metrics: list[Shown] = []
        self.texts: list[Shown] = []
        self.ids: dict[str, Shown] = {}
        self.state = ""
        self._stack: list[tuple[str, list[Shown]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.state = a.get("data-state", "")
        if tag in VOID:
            return
        mine = []
        for key, bucket in (("data-metric", self.metrics), ("data-text", self.texts)):
            if key in a:
                bucket.append(Shown(a))
                mine.append(bucket[-1])
        if "id" in a:
            self.ids[a["id"]] = Shown(a)
            mine.append(self.ids[a["id"]])
        self._stack.append((tag, mine))

    def handle_endtag(self, tag: str) -> None:
        while self._stack:
            if self._stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, mine in self._stack:
            for shown in mine:
                shown.text += data


def read_page(dom: str) -> Page:
    page = Page()
    page.feed(dom)
    page.close()
    return page


# ---- data-metric paths and the numbers as shown ---------------------------------------------
TOKEN = re.compile(r"\[([^\]]*)\]|([^.\[\]]+)")
LIST_KEYS = ("agent_id", "day", "stage", "metric")


def resolve(report: dict[str, Any], path: str) -> Any:
    """The report value a data-metric path names; a proportion stands for its rate."""
    value: Any = report
    for match in TOKEN.finditer(path):
        key, name = match.groups()
        if name is not None:
            value = value[name]
        else:
            hits = [item for item in value if key in (str(item.get(k)) for k in LIST_KEYS)]
            assert len(hits) == 1, f"{path}: [{key}] picks {len(hits)} items"
            value = hits[0]
    if isinstance(value, dict) and {"rate", "n", "successes"} <= value.keys():
        value = value["rate"]
    return value


NUMBER = re.compile(
    r"(?P<lt><)?(?P<sign>[+\u2212-])?(?P<num>\d[\d,]*(?:\.(?P<dec>\d+))?)(?P<unit>%| pts)?"
)


def check_number(path: str, shown: Shown, expected: Any) -> None:
    raw, text = shown.attrs["data-value"], " ".join(shown.text.split())
    where = f"{path}: shown {text!r}, data-value {raw!r}, report {expected!r}"
    if expected is None:
        assert raw == "" and text == "\u2014", where
        return
    if isinstance(expected, bool):
        assert raw == str(expected).lower(), where
        assert (text not in ("", "no")) == expected, where
        return
    assert float(raw) == expected, where  # the raw number is carried exactly
    if m := re.fullmatch(r"(\d+):(\d\d)", text):  # a duration, m:ss
        assert abs(int(m[1]) * 60 + int(m[2]) - expected) <= 0.5, where
        return
    m = NUMBER.fullmatch(text)
    assert m, where
    value = float(m["num"].replace(",", "")) * (-1 if m["sign"] in ("-", "\u2212") else 1)
    scale = 100 if m["unit"] else 1  # percent and percentage points
    if m["lt"]:
        assert expected < value / scale, where
    elif isinstance(expected, int):
        assert value == expected and not m["unit"], where
    else:
        half_step = 0.5 * 10 ** -len(m["dec"] or "")
        assert abs(value - expected * scale) <= half_step + 1e-9, where


def check_page(page: Page, report: dict[str, Any]) -> set[str]:
    """Every data-metric and data-text on the page against the report; the paths seen."""
    assert page.metrics, "the page shows no numbers"
    for shown in page.metrics:
        path = shown.attrs["data-metric"]
        check_number(path, shown, resolve(report, path))
    for shown in page.texts:
        path = shown.attrs["data-text"]
        assert " ".join(shown.text.split()) == resolve(report, path), path
    seen = {s.attrs["data-metric"] for s in page.metrics}
    return seen | {s.attrs["data-text"] for s in page.texts}


def required_paths(report: dict[str, Any]) -> set[str]:
    """What the supervisor must see: the headline, the AI-vs-human comparison with intervals
    and verdict, the whole funnel, every agent's standing, every day per channel."""
    headline = [
        "dialed", "answered", "engagement_rate", "conversion_rate", "opt_out_rate",
        "hand_off_rate", "avg_handle_seconds", "suggestion_acceptance",
    ]  # fmt: skip
    paths = {f"totals.{m}" for m in headline}
    paths |= {"totals.conversion_rate.lower", "totals.conversion_rate.upper"}
    if report["ai_vs_human"]:
        c = "ai_vs_human[conversion]"
        paths |= {f"{c}.{s}" for s in ("ai", "human")}
        paths |= {f"{c}.{s}.{b}" for s in ("ai", "human") for b in ("lower", "upper")}
        paths |= {f"{c}.{f}" for f in ("difference", "lower", "upper", "p", "verdict")}
    paths |= {f"funnel.all[{s['stage']}].calls" for s in report["funnel"]["all"]}
    for a in report["by_agent"]["agents"]:
        fields = ("rank", "calls", "successes", "rate", "lower", "upper", "top")
        paths |= {f"by_agent.agents[{a['agent_id']}].{f}" for f in fields}
    for d in report["by_day"]:
        paths |= {f"by_day[{d['day']}].by_channel.{ch}.conversion_rate" for ch in ("ai", "human")}
    return paths


def page_url(base: str, campaign: str | None, token: str | None = SUPERVISOR,
             **options: Any) -> str:
    query = "&".join(
        [f"campaign={campaign}"] * (campaign is not None) + [f"{k}={v}" for k, v in options.items()]
    )
    fragment = f"#token={token}" if token else ""
    return f"{base}/dashboard" + (f"?{query}" if query else "") + fragment


# ---- the page in a real browser ---------------------------------------------------------------
@needs_chromium
async def test_every_number_on_the_page_matches_the_database(server, database):
    dom = await chromium("--dump-dom", page_url(server.base, CAMPAIGN_ID, **OPTIONS))
    page = read_page(dom)
    assert page.state == "ready", page.ids.get("message")
    report = await expected_report(database, CAMPAIGN_ID, **OPTIONS)
    seen = check_page(page, report)
    assert not required_paths(report) - seen, "missing on the page"
    assert " ".join(page.ids["rule"].text.split()) == report["by_agent"]["rule_text"]
    assert [d["day"] for d in report["by_day"]] == ["2025-03-02", "2025-03-03", "2025-03-04"]
    assert any(a["top"] for a in report["by_agent"]["agents"])  # the flags were really checked

    # the headline totals once more, counted with plain SQL rather than through analytics
    counts = await database.pool.fetchrow(
        """
        SELECT count(*) AS dialed,
               count(*) FILTER (WHERE answered_at IS NOT NULL AND coalesce(disposition, '')
                                NOT IN ('no_answer', 'busy', 'voicemail', 'failed')) AS answered,
               count(*) FILTER (WHERE disposition = 'converted') AS converted,
               count(*) FILTER (WHERE disposition = 'do_not_call') AS opted_out,
               count(*) FILTER (WHERE disposition = 'hand_off') AS handed_off,
               (SELECT count(*) FROM suggestions s JOIN calls k ON k.id = s.call_id
                WHERE k.campaign_id = $1 AND k.channel = 'human') AS suggestions_shown,
               (SELECT count(*) FROM suggestions s JOIN calls k ON k.id = s.call_id
                WHERE k.campaign_id = $1 AND k.channel = 'human' AND s.feedback = 'accepted')
                   AS suggestions_accepted
        FROM calls WHERE campaign_id = $1
        """,
        CAMPAIGN_ID,
    )
    on_page = {s.attrs["data-metric"]: s.attrs["data-value"] for s in page.metrics}
    for name, value in counts.items():
        assert int(on_page[f"totals.{name}"]) == value, name
    rate = float(on_page["totals.conversion_rate"])
    assert rate == counts["converted"] / counts["answered"]
    assert (counts["dialed"], counts["answered"], counts["converted"]) == (60, 41, 10)


@needs_chromium
async def test_a_campaign_without_calls_shows_dashes_not_errors(server, database):
    page = read_page(await chromium("--dump-dom", page_url(server.base, EMPTY)))
    assert page.state == "ready"
    report = await expected_report(database, EMPTY)
    check_page(page, report)
    assert {s.text for s in page.metrics if s.attrs["data-metric"] == "totals.dialed"} == {"0"}
    assert "No calls yet" in page.ids["trend-chart"].text


@needs_chromium
async def test_the_page_picks_the_most_recent_campaign_when_none_is_named(server, database):
    page = read_page(await chromium("--dump-dom", page_url(server.base, None)))
    assert page.state == "ready"
    check_page(page, await expected_report(database, CAMPAIGN_ID))
    assert CAMPAIGN_ID in page.ids["campaign-meta"].text


@needs_chromium
async def test_the_screenshot_shows_the_charts(server, tmp_path: Path):
    shot = tmp_path / "dashboard.png"
    await chromium(
        f"--screenshot={shot}", "--window-size=1280,2000", page_url(server.base, CAMPAIGN_ID)
    )
    assert shot.exists() and shot.stat().st_size > 10_000
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape == (2000, 1280, 3)
    assert pixels.std() > 20, "the screenshot is blank"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100
    # the AI and human bar fills of the AI-vs-human chart (dashboard.css) are on screen
    for rgb in ((0x90, 0xB4, 0xDD), (0xE7, 0xA5, 0x7F)):
        assert (pixels == rgb).all(axis=2).sum() > 500, f"no bar in colour {rgb}"


@needs_chromium
async def test_an_unknown_campaign_is_said_plainly(server):
    page = read_page(await chromium("--dump-dom", page_url(server.base, "no-such-campaign")))
    assert page.state == "not-found"
    message = page.ids["message"]
    assert "hidden" not in message.attrs
    assert "No campaign with id \u201cno-such-campaign\u201d" in message.text
    assert "hidden" in page.ids["report"].attrs and not page.metrics


@needs_chromium
async def test_without_a_database_the_page_says_so(bare_server):
    page = read_page(await chromium("--dump-dom", page_url(bare_server.base, CAMPAIGN_ID)))
    assert page.state == "unavailable"
    assert "without a database" in page.ids["message"].text and not page.metrics


# ---- the HTTP API ---------------------------------------------------------------------------
async def test_the_api_lists_campaigns_and_serves_the_report(server, database):
    listed = (await fetch(server.base, "/api/campaigns")).json()
    assert [(c["id"], c["calls"]) for c in listed] == [(CAMPAIGN_ID, 60), (EMPTY, 0)]
    assert listed[0]["last_call_at"].startswith("2025-03-05")

    reply = await fetch(
        server.base, f"/api/campaigns/{CAMPAIGN_ID}/report?min_calls=5&tz=Asia/Shanghai"
    )
    assert reply.status == 200 and reply.headers["cache-control"] == "no-store"
    report = await expected_report(database, CAMPAIGN_ID, min_calls=5, tz="Asia/Shanghai")
    assert reply.json() == report


async def test_api_errors_are_json_with_a_reason(server):
    reply = await fetch(server.base, "/api/campaigns/no-such-campaign/report")
    assert (reply.status, reply.json()) == (
        404,
        {"error": "no campaign with id 'no-such-campaign'", "campaign_id": "no-such-campaign"},
    )
    reply = await fetch(server.base, f"/api/campaigns/{CAMPAIGN_ID}/report?tz=Mars/Olympus")
    assert reply.status == 422 and "time_zone" in reply.json()["error"]
    reply = await fetch(server.base, f"/api/campaigns/{CAMPAIGN_ID}/report?min_cals=5")
    assert reply.status == 422 and "min_cals" in reply.json()["error"]
    reply = await fetch(server.base, f"/api/campaigns/{CAMPAIGN_ID}/report?min_calls=0")
    assert reply.status == 422 and "min_calls" in reply.json()["error"]
    reply = await fetch(server.base, f"/api/campaigns/{CAMPAIGN_ID}/report?min_calls=10" + "0" * 30)
    assert reply.status == 422 and "min_calls" in reply.json()["error"]
    reply = await fetch(server.base, f"/api/campaigns/{CAMPAIGN_ID}/report?since=2025-03-01")
    assert reply.status == 422 and "since" in reply.json()["error"]
    reply = await fetch(server.base, "/api/campaigns/a%00b/report")
    assert reply.status == 422 and "campaign_id" in reply.json()["error"]
    reply = await fetch(server.base, "/nothing/here")
    assert reply.status == 404 and "/dashboard" in reply.json()["error"]
    reply = await fetch(server.base, "/api/campaigns", method="POST")
    assert reply.status == 405 and reply.headers["allow"] == "GET"
    assert "POST" in reply.json()["error"]


async def test_the_api_is_for_logged_in_supervisors(server):
    for path in ("/api/campaigns", f"/api/campaigns/{CAMPAIGN_ID}/report"):
        reply = await fetch(server.base, path, token=None)
        assert reply.status == 401 and "not logged in" in reply.json()["error"], path
        assert reply.headers["www-authenticate"].startswith("Bearer")
        forged = SUPERVISOR[:-2] + ("AA" if not SUPERVISOR.endswith("AA") else "BB")
        assert (await fetch(server.base, path, token=forged)).status == 401, path
        reply = await fetch(server.base, path, token=AGENT)
        assert (reply.status, reply.json()) == (403, {"error": "supervisors only"}), path
    # a login through the API gives a token the dashboard's API takes
    login = await request(server.base, "POST", "/api/login",
                          {"username": "boss", "password": PASSWORD})
    assert login.status == 200, login.body
    token = login.json()["token"]
    assert (await fetch(server.base, "/api/campaigns", token=token)).status == 200


@needs_chromium
async def test_without_a_login_the_page_asks_for_one(server):
    page = read_page(await chromium("--dump-dom", page_url(server.base, CAMPAIGN_ID, token=None)))
    assert page.state == "login" and not page.metrics
    assert "hidden" not in page.ids["login"].attrs and "Log in" in page.ids["login"].text
    # an agent's token opens no campaign figures either
    page = read_page(await chromium("--dump-dom", page_url(server.base, CAMPAIGN_ID, token=AGENT)))
    assert page.state == "forbidden" and "supervisors" in page.ids["message"].text
    assert not page.metrics


async def test_without_a_database_the_api_answers_503(bare_server):
    for path in ("/api/campaigns", f"/api/campaigns/{CAMPAIGN_ID}/report"):
        reply = await fetch(bare_server.base, path)
        assert reply.status == 503, path
        assert "without a database" in reply.json()["error"]
    page = await fetch(bare_server.base, "/dashboard")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")


async def test_the_page_and_its_assets_are_served_with_a_strict_policy(server):
    root = await fetch(server.base, "/")
    # the front door is the login, which sends each user where they work
    assert (root.status, root.headers["location"]) == (302, "/login")
    for path, kind in (
        ("/dashboard", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/charts.js", "text/javascript"),
        ("/dashboard/style.css", "text/css"),
    ):
        reply = await fetch(server.base, path)
        assert reply.status == 200 and reply.headers["content-type"].startswith(kind), path
        assert "script-src 'self'" in reply.headers["content-security-policy"]
        local = reply.body.replace(b"http://www.w3.org/2000/svg", b"")  # a namespace, not a URL
        assert b"http://" not in local and b"https://" not in local, f"{path} names another origin"
    head = await fetch(server.base, "/dashboard", method="HEAD")
    assert head.status == 200 and int(head.headers["content-length"]) > 1000


async def test_a_database_outage_answers_503_and_recovers(pg, dsn):
    proxy = await CuttableProxy(pg.target()).start()
    via_proxy = await connect(proxy.dsn(dsn), settings=FAST)
    running = await _start(via_proxy)
    try:
        assert (await fetch(running.base, "/api/campaigns")).status == 200
        await proxy.cut()  # the server is gone, and so is every open connection
        for path in ("/api/campaigns", f"/api/campaigns/{CAMPAIGN_ID}/report"):
            reply = await fetch(running.base, path)
            assert reply.status == 503, (path, reply.body)
            assert "unavailable" in reply.json()["error"]
        assert (await fetch(running.base, "/dashboard")).status == 200
        await proxy.restore()
        assert (await fetch(running.base, f"/api/campaigns/{CAMPAIGN_ID}/report")).status == 200
    finally:
        await running.stop()
        await proxy.cut()
        await via_proxy.close()


# ---- the websockets beside it ---------------------------------------------------------------
async def test_websockets_still_work_beside_the_dashboard(server):
    hub = server.app.state.services.runtime.hub
    async with ws_connect(f"{server.ws}/events?call_id=c1&token={SUPERVISOR}") as events:
        # an HTTP request while the socket is open is answered, and the socket stays up
        assert (await fetch(server.base, "/api/campaigns")).status == 200
        for _ in range(100):  # the subscription is registered by the server's handler task
            if len(hub):
                break
            await asyncio.sleep(0.01)
        ended = CallEnded(call_id="c1", reason="test")
        hub.publish(ended, CallMeta("c1", "A01", CAMPAIGN_ID))
        # the end of the (empty) story so far, then the live event
        assert json.loads(await asyncio.wait_for(events.recv(), 5)) == {"type": "caught_up"}
        message = json.loads(await asyncio.wait_for(events.recv(), 5))
        assert message == json.loads(ended.model_dump_json())

    # a websocket on a page's path is refused in the handshake
    with pytest.raises(InvalidStatus) as refused:
        async with ws_connect(f"{server.ws}/dashboard"):
            pass
    assert refused.value.response.status_code == 403

    # a plain GET on a websocket path is told to upgrade, as before the dashboard
    assert (await fetch(server.base, "/events")).status == 426
