"""Campaign analytics on a real PostgreSQL, checked against numbers counted by hand.

Every expected number below is counted from campaigns/demo_campaign.py's KINDS and PLAN, not
by running SQL. The counts per agent, from PLAN:

  alice (human)  CONV x4, QCONV, ENG x3, SHORT x2, CB, BRIEF, QUIET, OPT, NA x4, VM, BUSY   = 20
  bob (human)    CONV x2, ENG x3, SHORT x3, BRIEF, QUIET, OPT, CB, LIVE, NA x5, VM, BUSY   = 20
  bot (ai)       CONV x2, QCONV, ENG x2, HAND x2, SHORT x3, BRIEF, QUIET, OPT x2,
                 NA x4, VM, BUSY                                                           = 20

Unanswered: NA, BUSY, VM (a voicemail greeting has an answer time, but no person).
Engaged by default: CONV, QCONV, ENG, CB, HAND. Talk seconds: SHORT 20, BRIEF 25, QUIET 90,
ENG 60, CB 30, CONV 120, QCONV 20, OPT 10, HAND 45; LIVE has not ended.
Suggestions (shown, accepted) per human call: SHORT (1, 0), BRIEF (1, 1), QUIET (2, 0),
ENG (2, 1), CB (2, 1), CONV (3, 2), QCONV (1, 1), LIVE (1, 1), OPT (0, 0).
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime

import asyncpg
import pytest
import pytest_asyncio
from pydantic import ValidationError

from campaigns.analytics import (
    CampaignReport,
    EngagementRule,
    ReportQuery,
    UnknownCampaignError,
    by_day,
    campaign_report,
    leaderboard,
    overview,
)
from campaigns.db import connect
from campaigns.demo_campaign import (
    BOT,
    CAMPAIGN_ID,
    KINDS,
    PLAN,
    fixture_events,
    ingest_fixture_campaign,
    insert_campaign,
    insert_fixture_campaign,
)
from campaigns.events import parse_event
from campaigns.stats import newcombe_interval, two_proportion_z_test
from dialogue.leaderboard import LeaderboardRule, rank_agents, wilson_interval
from dialogue.types import CallRecord

from .conftest import ROOT
from .pg import find_server

EMPTY = "empty-campaign"
RESEEDED = "fixture-seed-99"
VIA_STORE = "fixture-via-store"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def database_url():
    """A scratch database (tests/pg.py), migrated, holding the fixture campaign written with
    plain SQL (seed 7), the same generated with seed 99, the same again ingested through the
    store, and a campaign with no calls; dropped afterwards."""
    server = await find_server()
    try:
        url = await server.create_database("callwise_analytics")
        db = await connect(url)
        try:
            await insert_fixture_campaign(db.pool, CAMPAIGN_ID, seed=7)
            await insert_fixture_campaign(db.pool, RESEEDED, seed=99)
            await insert_campaign(db.pool, EMPTY)
            ingested = await ingest_fixture_campaign(db, VIA_STORE, seed=7)
            assert (ingested.rejected, ingested.pending) == (0, 0), ingested.errors
        finally:
            await db.close()
        yield url
    finally:
        await server.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def pool(database_url):
    p = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield p
    await p.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def report(pool) -> CampaignReport:
    return await campaign_report(pool, ReportQuery(campaign_id=CAMPAIGN_ID))


def counts(m) -> tuple:  # type: ignore[no-untyped-def]
    return (m.dialed, m.answered, m.engaged, m.converted, m.opted_out, m.handed_off)


def test_the_table_is_what_the_docstring_says():
    # guards the hand counts in this file against an edit of the fixture
    per_agent = {}
    for (agent, _day), kinds in PLAN.items():
        per_agent.setdefault(agent, []).extend(kinds)
    assert {a: len(k) for a, k in per_agent.items()} == {"alice": 20, "bob": 20, BOT: 20}
    assert sorted(per_agent["bob"]).count("NA") == 5 and per_agent[BOT].count("HAND") == 2
    assert KINDS["CB"].talk_s == 30 and KINDS["CB"].customer_turns == 2


async def test_totals(report):
    # dialed 60; unanswered NA 4+5+4, BUSY 3, VM 3 = 19 -> answered 41
    # engaged: alice CONV4 QCONV1 ENG3 CB1 = 9; bob CONV2 ENG3 CB1 = 6; bot CONV2 QCONV1 ENG2
    #          HAND2 = 7 -> 22
    # converted: alice 5, bob 2, bot 3 -> 10; opted out: OPT 1 + 1 + 2 = 4; handed off: HAND 2
    t = report.totals
    assert counts(t) == (60, 41, 22, 10, 4, 2)
    # AHT: alice 875 s / 14, bob 635 s / 12 (LIVE has not ended), bot 665 s / 14 -> 2175 / 40
    assert (t.handled, t.handle_seconds) == (40, 2175)
    assert t.avg_handle_seconds == pytest.approx(54.375)
    # suggestions: alice 26 shown / 14 accepted, bob 21 / 10
    assert (t.suggestions_shown, t.suggestions_accepted) == (47, 24)


async def test_rates_say_what_they_are_per(report):
    t = report.totals
    expected = {
        "answer_rate": (41, 60, "dialed"),
        "engagement_rate": (22, 41, "answered"),
        "conversion_rate": (10, 41, "answered"),
        "conversion_per_dialed": (10, 60, "dialed"),
        "opt_out_rate": (4, 41, "answered"),
        "hand_off_rate": (2, 41, "answered"),
        "suggestion_acceptance": (24, 47, "shown"),
    }
    for name, (k, n, per) in expected.items():
        rate = getattr(t, name)
        assert (rate.successes, rate.n, rate.per) == (k, n, per), name
        assert rate.rate == pytest.approx(k / n)
        assert (rate.lower, rate.upper) == pytest.approx(wilson_interval(k, n)), name
    assert "per answered call" in report.definitions["conversion_rate"]
    assert "per answered call" in report.definitions["engagement_rate"]


async def test_by_channel(report):
    ai, human = report.by_channel["ai"], report.by_channel["human"]
    # ai = the bot; human = alice + bob
    assert counts(ai) == (20, 14, 7, 3, 2, 2)
    assert counts(human) == (40, 27, 15, 7, 2, 0)
    assert ai.avg_handle_seconds == pytest.approx(665 / 14)  # 47.5 s
    assert human.avg_handle_seconds == pytest.approx((875 + 635) / 26)
    assert (ai.suggestions_shown, ai.suggestion_acceptance.rate) == (0, None)
    assert (human.suggestions_shown, human.suggestions_accepted) == (47, 24)


async def test_by_agent_with_the_playbook_rule(pool):
    rule = LeaderboardRule(min_calls=10, top_share=0.3)
    board = await leaderboard(pool, ReportQuery(campaign_id=CAMPAIGN_ID, leaderboard=rule))
    rows = {a.agent_id: a for a in board.agents}
    alice, bob, bot = rows["alice"], rows["bob"], rows[BOT]
    # alice: answered 20 - NA4 - VM - BUSY = 14; engaged 9; converted 5; OPT 1
    assert counts(alice.metrics) == (20, 14, 9, 5, 1, 0)
    # bob: answered 20 - NA5 - VM - BUSY = 13 (LIVE is answered); engaged 6; converted 2; OPT 1
    assert counts(bob.metrics) == (20, 13, 6, 2, 1, 0)
    assert counts(bot.metrics) == (20, 14, 7, 3, 2, 2)
    # alice 875 s / 14 = 62.5 s; bob 635 s / 12 ended calls
    assert alice.metrics.avg_handle_seconds == pytest.approx(62.5)
    assert bob.metrics.avg_handle_seconds == pytest.approx(635 / 12)
    # alice: CONV 4x(3,2) + QCONV (1,1) + ENG 3x(2,1) + SHORT 2x(1,0) + CB (2,1) + BRIEF (1,1)
    #        + QUIET (2,0) = 26 shown, 14 accepted; bob: CONV 2x(3,2) + ENG 3x(2,1) +
    #        SHORT 3x(1,0) + BRIEF (1,1) + QUIET (2,0) + CB (2,1) + LIVE (1,1) = 21 / 10
    assert (alice.metrics.suggestions_shown, alice.metrics.suggestions_accepted) == (26, 14)
    assert (bob.metrics.suggestions_shown, bob.metrics.suggestions_accepted) == (21, 10)

    # ranked on answered calls by the Wilson lower bound of the conversion rate, per channel:
    # alice 5/14 beats bob 2/13; round(2 x 0.3) = 1 top human; the bot is the only AI flow
    assert (alice.calls, alice.successes, alice.rank, alice.top) == (14, 5, 1, True)
    assert (bob.calls, bob.successes, bob.rank, bob.top) == (13, 2, 2, False)
    assert (bot.calls, bot.successes, bot.rank, bot.top) == (14, 3, 1, True)
    assert (alice.lower, alice.upper) == pytest.approx(wilson_interval(5, 14))
    assert rule.describe() in board.rule_text and "answered call" in board.rule_text


async def test_leaderboard_is_rank_agents_on_the_calls_themselves(pool):
    # the same rule as dialogue/: feed dialogue.leaderboard.rank_agents one CallRecord per
    # answered human call of the table, and compare standings
    rule = LeaderboardRule(min_calls=10, top_share=0.5, outcome="engaged")
    engaged_kinds = {"CONV", "QCONV", "ENG", "CB", "HAND"}
    records = []
    for (agent, _day), kinds in PLAN.items():
        for i, kind in enumerate(kinds):
            if agent == BOT or not KINDS[kind].answered:
                continue
            outcome = "engaged" if kind in engaged_kinds else "not_converted"
            records.append(
                CallRecord(call_id=f"{agent}{_day}{i}", agent_id=agent, outcome=outcome, turns=[])
            )
    expected = rank_agents(records, rule)
    board = await leaderboard(
        pool, ReportQuery(campaign_id=CAMPAIGN_ID, channel="human", leaderboard=rule)
    )
    got = [
        a.model_dump(include={"agent_id", "calls", "successes", "rank", "top"})
        for a in board.agents
    ]
    assert got == [
        s.model_dump(include={"agent_id", "calls", "successes", "rank", "top"}) for s in expected
    ]
    assert [(a.agent_id, a.successes) for a in board.agents] == [("alice", 9), ("bob", 6)]


async def test_default_rule_ranks_nobody_on_so_few_calls(report):
    # 20 answered calls are needed; nobody has more than 14
    assert [(a.agent_id, a.rank, a.top) for a in report.by_agent.agents] == [
        (BOT, None, False),
        ("alice", None, False),
        ("bob", None, False),
    ]


async def test_by_day_in_utc(report):
    days = {d.day: d for d in report.by_day}
    assert list(days) == [date(2025, 3, 3), date(2025, 3, 4), date(2025, 3, 5)]
    # day 1: 7+7+7 dialed; answered alice 5 (CONV CONV ENG SHORT CB), bob 4, bot 5 = 14;
    #        engaged 4 + 2 + 3 = 9; converted 2 + 1 + 1 = 4
    # day 2: 21 dialed; answered 5 + 4 + 5 = 14; engaged 2 + 1 + 2 = 5; converted 1 + 0 + 1 = 2
    # day 3: 6+6+6 dialed; answered 4 + 5 (LIVE) + 4 = 13; engaged 3 + 3 + 2 = 8; converted 4
    assert [counts(d.totals)[:4] for d in days.values()] == [
        (21, 14, 9, 4),
        (21, 14, 5, 2),
        (18, 13, 8, 4),
    ]
    d1 = days[date(2025, 3, 3)]
    assert counts(d1.by_channel["ai"])[:4] == (7, 5, 3, 1)
    assert counts(d1.by_channel["human"])[:4] == (14, 9, 6, 3)


async def test_days_follow_the_report_time_zone(pool):
    # every call starts 02:00-04:40 UTC: the same day in Shanghai, the evening before in New York
    shanghai = await by_day(pool, ReportQuery(campaign_id=CAMPAIGN_ID, time_zone="Asia/Shanghai"))
    new_york = await by_day(
        pool, ReportQuery(campaign_id=CAMPAIGN_ID, time_zone="America/New_York")
    )
    assert [d.day.day for d in shanghai] == [3, 4, 5]
    assert [d.day.day for d in new_york] == [2, 3, 4]
    assert [d.totals.dialed for d in new_york] == [21, 21, 18]
    with pytest.raises(ValidationError):
        ReportQuery(campaign_id=CAMPAIGN_ID, time_zone="Mars/Olympus")


async def test_funnel(report):
    stages = [(s.stage, s.calls) for s in report.funnel["all"]]
    assert stages == [("dialed", 60), ("answered", 41), ("engaged", 22), ("converted", 10)]
    shares = [s.of_previous for s in report.funnel["all"]]
    assert shares == [None, pytest.approx(41 / 60), pytest.approx(22 / 41), pytest.approx(10 / 22)]
    assert [s.calls for s in report.funnel["ai"]] == [20, 14, 7, 3]
    assert [s.calls for s in report.funnel["human"]] == [40, 27, 15, 7]


async def test_ai_vs_human(report):
    comps = {c.metric: c for c in report.ai_vs_human}
    assert list(comps) == [
        "answer",
        "engagement",
        "conversion",
        "conversion_per_dialed",
        "opt_out",
        "hand_off",
    ]
    conv = comps["conversion"]
    # AI 3 of 14 answered, human 7 of 27 answered
    assert (conv.ai.successes, conv.ai.n, conv.human.successes, conv.human.n) == (3, 14, 7, 27)
    assert conv.difference == pytest.approx(3 / 14 - 7 / 27)
    assert (conv.lower, conv.upper) == pytest.approx(newcombe_interval(3, 14, 7, 27)[1:])
    assert (conv.z, conv.p) == pytest.approx(two_proportion_z_test(3, 14, 7, 27))
    assert conv.verdict == (
        "AI converts 21.4% (95% CI 7.6–47.6%, n=14 answered) vs human 25.9% (13.2–44.7%, n=27); "
        "the gap of −4.5 points (−27.8 to +24.6) is not significant (p=0.75)."
    )
    # per dialed: 3 of 20 vs 7 of 40; answered: 14 of 20 vs 27 of 40
    assert (comps["conversion_per_dialed"].ai.n, comps["conversion_per_dialed"].human.n) == (20, 40)
    assert (comps["answer"].ai.successes, comps["answer"].human.successes) == (14, 27)
    # hand-offs 2 of 14 vs 0 of 27
    assert (comps["hand_off"].ai.successes, comps["hand_off"].human.successes) == (2, 0)


@pytest.mark.parametrize(
    ("rule", "engaged", "ai", "human"),
    [
        # the default: CONV QCONV ENG CB HAND
        (EngagementRule(), 22, 7, 15),
        # >= 20 s lets BRIEF (3 turns, 25 s) in: one per agent
        (EngagementRule(min_customer_turns=2, min_seconds=20), 25, 8, 17),
        # >= 1 turn lets QUIET (1 turn, 90 s) in: one per agent
        (EngagementRule(min_customer_turns=1, min_seconds=30), 25, 8, 17),
        # both: BRIEF 3 + QUIET 3 + SHORT (1 turn, 20 s) 2 + 3 + 3; still out: OPT (10 s) x4
        # and bob's LIVE call (not ended, so its length is unknown)
        (EngagementRule(min_customer_turns=1, min_seconds=20), 36, 12, 24),
        # 31 s pushes CB (exactly 30 s) out: alice 1, bob 1
        (EngagementRule(min_customer_turns=2, min_seconds=31), 20, 7, 13),
    ],
)
async def test_engagement_rule_changes_the_numbers(pool, rule, engaged, ai, human):
    ov = await overview(pool, ReportQuery(campaign_id=CAMPAIGN_ID, engagement=rule))
    assert ov.totals.engaged == engaged
    assert (ov.by_channel["ai"].engaged, ov.by_channel["human"].engaged) == (ai, human)
    assert ov.totals.converted == 10  # the rule moves engagement only
    assert ov.totals.engagement_rate.rate == pytest.approx(engaged / 41)


async def test_channel_and_date_filters(pool):
    ai_only = await overview(pool, ReportQuery(campaign_id=CAMPAIGN_ID, channel="ai"))
    assert counts(ai_only.totals) == (20, 14, 7, 3, 2, 2)
    assert list(ai_only.by_channel) == ["ai"] and ai_only.ai_vs_human == []
    days_2_3 = await overview(
        pool, ReportQuery(campaign_id=CAMPAIGN_ID, since=datetime(2025, 3, 4, tzinfo=UTC))
    )
    assert counts(days_2_3.totals)[:4] == (39, 27, 13, 6)
    day_1 = await overview(
        pool, ReportQuery(campaign_id=CAMPAIGN_ID, until=datetime(2025, 3, 4, tzinfo=UTC))
    )
    assert counts(day_1.totals)[:4] == (21, 14, 9, 4)


async def test_sections_agree_with_the_whole_report(pool, report):
    q = ReportQuery(campaign_id=CAMPAIGN_ID)
    ov = await overview(pool, q)
    assert ov.totals == report.totals and ov.by_channel == report.by_channel
    assert ov.funnel == report.funnel and ov.ai_vs_human == report.ai_vs_human
    assert await leaderboard(pool, q) == report.by_agent
    assert await by_day(pool, q) == report.by_day


async def test_the_seed_changes_details_not_numbers(pool, report):
    other = await campaign_report(pool, ReportQuery(campaign_id=RESEEDED))
    skip = {"campaign", "query"}
    assert other.model_dump(exclude=skip) == report.model_dump(exclude=skip)
    texts = await pool.fetch(
        "SELECT c.campaign_id, string_agg(u.text_redacted, '' ORDER BY c.id, u.seq) AS t "
        "FROM utterances u JOIN calls c ON c.id = u.call_id GROUP BY c.campaign_id"
    )
    assert len({r["t"] for r in texts}) == 2


async def test_the_store_projection_gives_the_same_report(pool, report):
    # the same table as events through Store.ingest (validation, redaction, projection): the
    # definitions hold on what the live path writes, not only on the fixture's own SQL
    via_store = await campaign_report(pool, ReportQuery(campaign_id=VIA_STORE))
    skip = {"campaign", "query"}
    assert via_store.model_dump(exclude=skip) == report.model_dump(exclude=skip)


async def test_voicemail_has_an_answer_time_but_is_not_answered(pool, report):
    picked_up = await pool.fetchval(
        "SELECT count(*) FROM calls WHERE campaign_id = $1 AND answered_at IS NOT NULL",
        CAMPAIGN_ID,
    )
    assert picked_up == 44  # 41 people + 3 voicemail greetings
    assert report.totals.answered == 41


async def test_empty_campaign(pool):
    r = await campaign_report(pool, ReportQuery(campaign_id=EMPTY))
    assert counts(r.totals) == (0, 0, 0, 0, 0, 0)
    assert r.totals.conversion_rate.rate is None and r.totals.avg_handle_seconds is None
    assert r.by_agent.agents == [] and r.by_day == []
    assert [s.calls for s in r.funnel["all"]] == [0, 0, 0, 0]
    assert all(s.of_previous is None for s in r.funnel["all"])
    assert r.ai_vs_human[0].verdict == "No calls yet on either side; nothing to compare."
    assert r.ai_vs_human[2].verdict == "No answered calls yet on either side; nothing to compare."


async def test_unknown_campaign_is_an_error(pool):
    q = ReportQuery(campaign_id="no-such-campaign")
    for section in (campaign_report, overview, leaderboard, by_day):
        with pytest.raises(UnknownCampaignError, match="no-such-campaign"):
            await section(pool, q)


def test_fixture_events_describe_the_same_calls():
    events = fixture_events(seed=7)
    assert [parse_event(e.model_dump(mode="json")) for e in events] == events
    by_type: dict[str, int] = {}
    for e in events:
        by_type[e.type] = by_type.get(e.type, 0) + 1
    # 60 calls; 44 picked up (41 people + 3 voicemail); all but LIVE ended; 47 suggestions
    # shown, 45 clicked (CB's second suggestion was never clicked: alice 1, bob 1)
    assert by_type["call_started"] == 60 and by_type["call_answered"] == 44
    assert by_type["call_ended"] == 59
    assert (by_type["suggestion_shown"], by_type["suggestion_feedback"]) == (47, 45)
    assert len({e.event_id for e in events}) == len(events)


def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "campaigns.report", "--database-url", database_url, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_report_command_text_and_json(database_url):
    out = _cli(database_url, "--campaign", CAMPAIGN_ID, "--min-calls", "10")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "AI converts 21.4% (95% CI 7.6–47.6%, n=14 answered) vs human 25.9%" in text
    assert "dialed 60 -> answered 41 (68.3%) -> engaged 22 (53.7%) -> converted 10" in text
    assert "alice" in text and "top" in text and "By day (UTC)" in text

    out = _cli(database_url, "--campaign", CAMPAIGN_ID, "--json", "--tz", "Asia/Shanghai")
    assert out.returncode == 0, out.stderr
    data = CampaignReport.model_validate(json.loads(out.stdout))
    assert counts(data.totals) == (60, 41, 22, 10, 4, 2)
    assert data.query.time_zone == "Asia/Shanghai"


def test_report_command_on_an_empty_campaign(database_url):
    out = _cli(database_url, "--campaign", EMPTY)
    assert out.returncode == 0, out.stderr
    assert "Conversion: No answered calls yet on either side; nothing to compare." in out.stdout
    assert out.stdout.count("no calls yet") == 2  # the leaderboard and the days


def test_report_command_unknown_campaign_and_bad_input(database_url):
    out = _cli(database_url, "--campaign", "no-such-campaign")
    assert out.returncode == 2 and "no campaign with id 'no-such-campaign'" in out.stderr
    out = _cli(database_url, "--campaign", CAMPAIGN_ID, "--tz", "Mars/Olympus")
    assert out.returncode == 2 and "unknown time zone" in out.stderr
    assert "Traceback" not in out.stderr
