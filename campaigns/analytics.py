"""Campaign analytics: what a supervisor's dashboard shows, computed in PostgreSQL.

Every section is one SQL statement over the same per-call facts (`_SQL`), grouped by the
grouping sets the section needs, so the sections can never disagree on what "engaged" or
"answered" means. The whole report is one statement with all the grouping sets: one pass over
the campaign's calls (and the suggestions shown on them), one snapshot, one round trip. Each
statement also carries the campaign row, so an unknown campaign id is told apart from an empty
campaign without a second query. The definitions, in words, are in `definitions()`.

Pass an `asyncpg.Pool` or an `asyncpg.Connection`; nothing here opens connections. Each
statement runs in its own short transaction with JIT off (see `_run`), or in the caller's
transaction when the connection is already in one.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from dialogue.leaderboard import AgentStanding, LeaderboardRule, rank_agents
from dialogue.types import CallRecord

from .events import Channel
from .stats import Comparison, Denominator, Proportion, compare, proportion

Db = asyncpg.Pool | asyncpg.Connection
CHANNELS: tuple[Channel, ...] = ("ai", "human")
NOT_ANSWERED = ("no_answer", "busy", "voicemail", "failed")


class UnknownCampaignError(LookupError):
    def __init__(self, campaign_id: str) -> None:
        super().__init__(f"no campaign with id {campaign_id!r}")
        self.campaign_id = campaign_id


class EngagementRule(BaseModel):
    """When an answered call counts as engaged. Defaults: the customer spoke at least twice and
    the call lasted at least 30 s from answer to hang-up."""

    model_config = ConfigDict(frozen=True)

    min_customer_turns: int = Field(2, ge=0)
    min_seconds: float = Field(30.0, ge=0)

    def describe(self) -> str:
        return (
            f"an answered call in which the customer spoke at least {self.min_customer_turns} "
            f"turn(s) and which lasted at least {self.min_seconds:g} s from answer to hang-up; "
            "a converted call always counts as engaged (so the funnel never widens)"
        )


class ReportQuery(BaseModel):
    """What to report on, and by which rules."""

    campaign_id: str = Field(min_length=1)
    channel: Channel | None = Field(None, description="only this channel; None: both")
    since: AwareDatetime | None = Field(None, description="calls started at or after this")
    until: AwareDatetime | None = Field(None, description="calls started before this")
    time_zone: str = Field("UTC", description="IANA zone whose calendar days `by_day` uses")
    engagement: EngagementRule = EngagementRule()
    leaderboard: LeaderboardRule = LeaderboardRule()
    confidence: float = Field(0.95, gt=0, lt=1)

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v


def definitions(rule: EngagementRule) -> dict[str, str]:
    """The metric definitions, in words; the report carries them so its numbers explain
    themselves."""
    return {
        "dialed": "every dial attempt placed for the campaign (one row in calls)",
        "answered": (
            "a person picked up: the call has an answer time (or the store marked it answered) "
            f"and did not end as {', '.join(NOT_ANSWERED)}"
        ),
        "engaged": rule.describe(),
        "converted": "answered calls whose outcome is converted",
        "opted_out": "answered calls in which the customer asked not to be called again",
        "handed_off": "answered calls passed on to a human",
        "answer_rate": "answered / dialed",
        "engagement_rate": "engaged / answered (per answered call)",
        "conversion_rate": "converted / answered (per answered call)",
        "conversion_per_dialed": "converted / dialed",
        "opt_out_rate": "opted out / answered",
        "hand_off_rate": "handed off / answered",
        "avg_handle_seconds": (
            "mean seconds from answer to hang-up over answered calls that have ended"
        ),
        "suggestion_acceptance": (
            "accepted / shown, over suggestions shown on human-channel calls; a suggestion "
            "never clicked counts as not accepted"
        ),
        "intervals": (
            "each rate carries a Wilson score interval; an AI-human gap carries Newcombe's "
            "hybrid score interval (1998, method 10) and the two-sided p of the pooled "
            "two-proportion z-test"
        ),
        "by_day": "calls grouped by the calendar day of their start time in the report's zone",
    }


class Metrics(BaseModel):
    dialed: int = 0
    answered: int = 0
    engaged: int = 0
    converted: int = 0
    opted_out: int = 0
    handed_off: int = 0
    handled: int = Field(0, description="answered calls that have ended (handle-time base)")
    handle_seconds: float = Field(0.0, description="answer-to-hang-up seconds of those calls")
    suggestions_shown: int = 0
    suggestions_accepted: int = 0
    answer_rate: Proportion
    engagement_rate: Proportion
    conversion_rate: Proportion
    conversion_per_dialed: Proportion
    opt_out_rate: Proportion
    hand_off_rate: Proportion
    suggestion_acceptance: Proportion
    avg_handle_seconds: float | None


_COUNTS = (
    "dialed",
    "answered",
    "engaged",
    "converted",
    "opted_out",
    "handed_off",
    "handled",
    "handle_seconds",
    "suggestions_shown",
    "suggestions_accepted",
)
# rate name -> (numerator, denominator); the denominators are what the dashboard labels say
_RATES: dict[str, tuple[str, str, Denominator]] = {
    "answer_rate": ("answered", "dialed", "dialed"),
    "engagement_rate": ("engaged", "answered", "answered"),
    "conversion_rate": ("converted", "answered", "answered"),
    "conversion_per_dialed": ("converted", "dialed", "dialed"),
    "opt_out_rate": ("opted_out", "answered", "answered"),
    "hand_off_rate": ("handed_off", "answered", "answered"),
    "suggestion_acceptance": ("suggestions_accepted", "suggestions_shown", "shown"),
}


def metrics_from(counts: Mapping[str, float], confidence: float = 0.95) -> Metrics:
    c = {k: counts.get(k) or 0 for k in _COUNTS}
    rates = {
        name: proportion(int(c[num]), int(c[den]), per, confidence)
        for name, (num, den, per) in _RATES.items()
    }
    aht = c["handle_seconds"] / c["handled"] if c["handled"] else None
    return Metrics(**c, **rates, avg_handle_seconds=aht)


class CampaignInfo(BaseModel):
    id: str
    name: str
    product: str
    language: str


class FunnelStage(BaseModel):
    stage: Literal["dialed", "answered", "engaged", "converted"]
    calls: int
    of_previous: float | None = Field(description="share of the stage before; None when empty")
    of_dialed: float | None


class Overview(BaseModel):
    campaign: CampaignInfo
    totals: Metrics
    by_channel: dict[Channel, Metrics]
    funnel: dict[str, list[FunnelStage]] = Field(description="'all', 'ai', 'human'")
    ai_vs_human: list[Comparison] = Field(description="empty when the query names one channel")


class AgentRow(BaseModel):
    agent_id: str
    channel: Channel
    metrics: Metrics
    calls: int = Field(description="answered calls: the n the rule ranks on")
    successes: int
    rate: float | None
    lower: float | None = Field(description="Wilson lower bound: what agents are ranked by")
    upper: float | None
    rank: int | None = Field(description="1 = best within its channel; None when not ranked")
    top: bool


class Leaderboard(BaseModel):
    rule: LeaderboardRule
    rule_text: str
    agents: list[AgentRow]


class DayRow(BaseModel):
    day: date
    totals: Metrics
    by_channel: dict[Channel, Metrics]


class CampaignReport(Overview):
    query: ReportQuery
    definitions: dict[str, str]
    by_agent: Leaderboard
    by_day: list[DayRow]


# --- SQL ----------------------------------------------------------------------------------

# the grouping sets a section can ask for, by the columns each groups on
_GROUP_COLUMNS = {"channel": "text", "agent_id": "text", "day": "date"}
_SETS: dict[str, tuple[str, ...]] = {
    "totals": (),
    "channel": ("channel",),
    "agent": ("channel", "agent_id"),
    "day": ("day",),
    "day_channel": ("day", "channel"),
}
_OVERVIEW = ("totals", "channel")
_AGENTS = ("totals", "agent")
_DAYS = ("totals", "day", "day_channel")
_ALL = ("totals", "channel", "agent", "day", "day_channel")


def _grouped(sets: Sequence[str]) -> list[str]:
    return [c for c in _GROUP_COLUMNS if any(c in _SETS[name] for name in sets)]


def _mask(grouped: list[str], name: str) -> int:
    # GROUPING(a, b, ...) sets the bit of each column a row is rolled up over, a's the highest
    n = len(grouped)
    return sum(1 << (n - 1 - i) for i, c in enumerate(grouped) if c not in _SETS[name])


_SQL = """
WITH calls_in AS (
    SELECT c.channel, c.agent_id,
           (c.started_at AT TIME ZONE $2)::date AS day,
           (c.answered_at IS NOT NULL OR coalesce(o.answered, false))
               AND coalesce(c.disposition, '') <> ALL ($5::text[]) AS answered,
           extract(epoch FROM c.ended_at - c.answered_at)::float8 AS talk_s,
           coalesce(o.customer_turns, 0) AS turns,
           coalesce(o.converted, false) AS converted,
           coalesce(o.opted_out, false) AS opted_out,
           coalesce(o.handed_off, false) AS handed_off
    FROM calls c
    LEFT JOIN outcomes o ON o.call_id = c.id
    WHERE {where}
), f AS (
    -- one row per call; outcomes count only on answered calls, so that
    -- converted <= engaged <= answered <= dialed
    SELECT channel, agent_id, day, 1 AS dialed, answered,
           CASE WHEN answered THEN talk_s END AS talk_s,
           answered AND (converted OR (turns >= $3 AND coalesce(talk_s >= $4, false)))
               AS engaged,
           answered AND converted AS converted,
           answered AND opted_out AS opted_out,
           answered AND handed_off AS handed_off,
           0 AS shown, 0 AS accepted
    FROM calls_in
    UNION ALL
    -- and one row per suggestion shown on a human call, which counts nothing else: cheaper
    -- than counting suggestions per call and joining those counts back to the calls
    SELECT c.channel, c.agent_id, (c.started_at AT TIME ZONE $2)::date, 0, false, NULL, false,
           false, false, false, 1, (s.feedback = 'accepted')::int
    FROM suggestions s JOIN calls c ON c.id = s.call_id
    WHERE {where} AND c.channel = 'human'
)
SELECT {grouping} AS g, {columns},
       CASE WHEN {grouping} = {rolled_up} THEN
           (SELECT json_build_object('id', id, 'name', name, 'product', product,
                                     'language', language)::text
            FROM campaigns WHERE id = $1) END AS campaign,
       sum(f.dialed)::int8 AS dialed,
       count(*) FILTER (WHERE f.answered) AS answered,
       count(*) FILTER (WHERE f.engaged) AS engaged,
       count(*) FILTER (WHERE f.converted) AS converted,
       count(*) FILTER (WHERE f.opted_out) AS opted_out,
       count(*) FILTER (WHERE f.handed_off) AS handed_off,
       count(f.talk_s) AS handled,
       coalesce(sum(f.talk_s), 0)::float8 AS handle_seconds,
       sum(f.shown)::int8 AS suggestions_shown,
       sum(f.accepted)::int8 AS suggestions_accepted
FROM f
GROUP BY GROUPING SETS ({sets})
"""


def build_sql(query: ReportQuery, sets: Sequence[str]) -> tuple[str, list[object]]:
    """The statement and its arguments for these grouping sets (names from `_SETS`)."""
    rule = query.engagement
    args: list[object] = [
        query.campaign_id,
        query.time_zone,
        rule.min_customer_turns,
        float(rule.min_seconds),
        list(NOT_ANSWERED),
    ]
    # optional filters are added as SQL only when given: a generic plan for "$n IS NULL OR ..."
    # could not use the (campaign_id, started_at) index for a date range
    where = ["c.campaign_id = $1"]
    for column, op, value in (
        ("channel", "=", query.channel),
        ("started_at", ">=", query.since),
        ("started_at", "<", query.until),
    ):
        if value is not None:
            args.append(value)
            where.append(f"c.{column} {op} ${len(args)}")
    used = _grouped(sets)
    # GROUPING() takes only columns the statement groups on; a column no set uses is NULL
    grouping = f"GROUPING({', '.join(f'f.{c}' for c in used)})" if used else "0"
    columns = [f"f.{c}" if c in used else f"NULL::{t} AS {c}" for c, t in _GROUP_COLUMNS.items()]
    sets_sql = ", ".join("(" + ", ".join(f"f.{c}" for c in _SETS[name]) + ")" for name in sets)
    sql = _SQL.format(
        where=" AND ".join(where),
        grouping=grouping,
        columns=", ".join(columns),
        rolled_up=_mask(used, "totals"),
        sets=sets_sql,
    )
    return sql, args


async def _run(conn: asyncpg.Connection, sql: str, args: list[object]) -> list[asyncpg.Record]:
    if conn.is_in_transaction():
        return await conn.fetch(sql, *args)  # the caller's transaction, the caller's settings
    async with conn.transaction():
        # At a million calls JIT compiling this statement takes 1-2 s and saves less than that
        # (measured: 3.7 s without, 4.0-5.7 s with); SET LOCAL ends with the transaction.
        await conn.execute("SET LOCAL jit = off")
        return await conn.fetch(sql, *args)


async def _fetch(
    db: Db, query: ReportQuery, sets: Sequence[str]
) -> dict[str, list[asyncpg.Record]]:
    sql, args = build_sql(query, sets)
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            rows = await _run(conn, sql, args)
    else:
        rows = await _run(db, sql, args)
    used = _grouped(sets)
    by_mask = {_mask(used, name): name for name in sets}
    out: dict[str, list[asyncpg.Record]] = {name: [] for name in sets}
    for row in rows:
        out[by_mask[row["g"]]].append(row)
    campaign = out["totals"][0]["campaign"]
    if campaign is None:
        raise UnknownCampaignError(query.campaign_id)
    return out


# --- sections from rows -------------------------------------------------------------------


def _metrics(row: asyncpg.Record | None, q: ReportQuery) -> Metrics:
    return metrics_from(dict(row) if row is not None else {}, q.confidence)


def _channels(q: ReportQuery) -> tuple[Channel, ...]:
    return (q.channel,) if q.channel else CHANNELS


def _funnel(m: Metrics) -> list[FunnelStage]:
    stages = [
        ("dialed", m.dialed),
        ("answered", m.answered),
        ("engaged", m.engaged),
        ("converted", m.converted),
    ]
    out, prev = [], None
    for stage, calls in stages:
        out.append(
            FunnelStage(
                stage=stage,  # type: ignore[arg-type]
                calls=calls,
                of_previous=None if prev is None else (calls / prev if prev else None),
                of_dialed=calls / m.dialed if m.dialed else None,
            )
        )
        prev = calls
    return out


# (metric name in the verdict, Metrics field) for the AI-vs-human comparisons
COMPARED = (
    ("answer", "answer_rate"),
    ("engagement", "engagement_rate"),
    ("conversion", "conversion_rate"),
    ("conversion_per_dialed", "conversion_per_dialed"),
    ("opt_out", "opt_out_rate"),
    ("hand_off", "hand_off_rate"),
)


def _overview(rows: dict[str, list[asyncpg.Record]], q: ReportQuery) -> Overview:
    total = rows["totals"][0]
    by_channel_rows = {r["channel"]: r for r in rows["channel"]}
    by_channel = {ch: _metrics(by_channel_rows.get(ch), q) for ch in _channels(q)}
    totals = _metrics(total, q)
    funnel = {"all": _funnel(totals)} | {ch: _funnel(m) for ch, m in by_channel.items()}
    versus = []
    if q.channel is None:
        ai, human = by_channel["ai"], by_channel["human"]
        versus = [
            compare(name, getattr(ai, field), getattr(human, field), q.confidence)
            for name, field in COMPARED
        ]
    return Overview(
        campaign=CampaignInfo(**json.loads(total["campaign"])),
        totals=totals,
        by_channel=by_channel,
        funnel=funnel,
        ai_vs_human=versus,
    )


def _successes(m: Metrics, rule: LeaderboardRule) -> int:
    return {"converted": m.converted, "engaged": m.engaged}.get(
        rule.outcome, m.answered - m.converted
    )


def _rank(tallies: Iterable[tuple[str, int, int]], rule: LeaderboardRule) -> list[AgentStanding]:
    """dialogue.leaderboard.rank_agents on counts: the top-performer rule is the one the
    playbook uses, not a copy of it. rank_agents counts call records, so each agent's tally is
    replayed as two records (a success, a miss), each repeated; no per-call object is built, and
    the replay costs ~0.4 us per answered call (0.15 s at 400k)."""
    miss = "not_converted" if rule.outcome != "not_converted" else "converted"
    records: list[Iterable[CallRecord]] = []
    for agent, n, k in tallies:
        hit_rec = CallRecord(call_id="", agent_id=agent, outcome=rule.outcome, turns=[])
        miss_rec = CallRecord(call_id="", agent_id=agent, outcome=miss, turns=[])  # type: ignore[arg-type]
        records += [itertools.repeat(hit_rec, k), itertools.repeat(miss_rec, n - k)]
    return rank_agents(itertools.chain.from_iterable(records), rule)


def _leaderboard(rows: dict[str, list[asyncpg.Record]], q: ReportQuery) -> Leaderboard:
    rule = q.leaderboard
    agents: list[AgentRow] = []
    for ch in _channels(q):
        # ranked within a channel: a bot flow never takes a human agent's top-performer slot,
        # and the top human agents are the ones whose replies feed the playbook
        metrics = {r["agent_id"]: _metrics(r, q) for r in rows["agent"] if r["channel"] == ch}
        standings = _rank(
            ((a, m.answered, _successes(m, rule)) for a, m in metrics.items() if m.answered),
            rule,
        )
        for s in standings:
            agents.append(
                AgentRow(
                    agent_id=s.agent_id,
                    channel=ch,
                    metrics=metrics[s.agent_id],
                    **s.model_dump(exclude={"agent_id"}),
                )
            )
        for a in sorted(a for a, m in metrics.items() if not m.answered):
            agents.append(
                AgentRow(
                    agent_id=a,
                    channel=ch,
                    metrics=metrics[a],
                    calls=0,
                    successes=0,
                    rate=None,
                    lower=None,
                    upper=None,
                    rank=None,
                    top=False,
                )
            )
    text = (
        f"{rule.describe()} Here a call is an answered call of this campaign, and agents are "
        "ranked within their channel (human agents among human agents, bot flows among bot "
        "flows)."
    )
    return Leaderboard(rule=rule, rule_text=text, agents=agents)


def _days(rows: dict[str, list[asyncpg.Record]], q: ReportQuery) -> list[DayRow]:
    split: dict[date, dict[Channel, Metrics]] = {}
    for r in rows["day_channel"]:
        split.setdefault(r["day"], {})[r["channel"]] = _metrics(r, q)
    return [
        DayRow(
            day=r["day"],
            totals=_metrics(r, q),
            by_channel={
                ch: split.get(r["day"], {}).get(ch) or _metrics(None, q) for ch in _channels(q)
            },
        )
        for r in sorted(rows["day"], key=lambda r: r["day"])
    ]


# --- the public API -----------------------------------------------------------------------


async def overview(db: Db, query: ReportQuery) -> Overview:
    """Totals, per channel, funnel, and AI vs human: one statement."""
    return _overview(await _fetch(db, query, _OVERVIEW), query)


async def leaderboard(db: Db, query: ReportQuery) -> Leaderboard:
    """Per agent, ranked by the playbook's top-performer rule: one statement."""
    return _leaderboard(await _fetch(db, query, _AGENTS), query)


async def by_day(db: Db, query: ReportQuery) -> list[DayRow]:
    """Per calendar day in `query.time_zone`, in total and per channel: one statement."""
    return _days(await _fetch(db, query, _DAYS), query)


async def campaign_report(db: Db, query: ReportQuery | str) -> CampaignReport:
    """Every section from one statement (one scan, one snapshot). Raises UnknownCampaignError."""
    q = query if isinstance(query, ReportQuery) else ReportQuery(campaign_id=query)
    rows = await _fetch(db, q, _ALL)
    return CampaignReport(
        **dict(_overview(rows, q)),
        query=q,
        definitions=definitions(q.engagement),
        by_agent=_leaderboard(rows, q),
        by_day=_days(rows, q),
    )
