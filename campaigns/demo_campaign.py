"""The demo campaign: a small campaign whose every report number can be counted by hand from the
table below.

Generated data, shipped because `callwise demo` (step 5) ingests it and reports on it; the
analytics and dashboard tests count their expected figures from the same table. Nothing else in
the product uses it. (Traffic for the benchmarks is bench/synthetic.py, not installed.)

60 calls over 3 days (2025-03-03..05): two human agents and one bot flow, 20 calls each. What a
call *is* (answered or not, how long, how many customer turns, how it ended, which suggestions
were shown and clicked) comes only from `KINDS` and `PLAN`; the seed changes nothing a report
counts, only the details around it (minutes within a slot, phone numbers, names, the words said,
suggestion texts and latencies, event ids), so a test can count from the table and check that two
seeds give the same report.

Calls are dialled from 02:00 UTC, one every 25 minutes per agent (plus up to 10 minutes of
seeded jitter), so every call starts between 02:00 and 04:40 UTC: 10:00-12:40 in Shanghai (the
same calendar day) and 21:00-23:40 the evening before in New York (EST, UTC-5, in early March).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

import asyncpg

from .events import (
    CallAnswered,
    CallEnded,
    CallEvent,
    CallStarted,
    Channel,
    Disposition,
    SuggestionFeedback,
    SuggestionShown,
    UtteranceSaid,
)

if TYPE_CHECKING:
    from .db import Database
    from .store import IngestResult

CAMPAIGN_ID = "fixture-installment"
CAMPAIGN_NAME = "Installment offer (fixture)"
PRODUCT = "credit card installments"
DAY1 = datetime(2025, 3, 3, 2, 0, tzinfo=UTC)
SLOT = timedelta(minutes=25)
RING = timedelta(seconds=15)  # dial -> pick-up on every answered (or machine-answered) call
RING_OUT = timedelta(seconds=30)  # dial -> give up on no answer / busy
Feedback = Literal["accepted", "dismissed"] | None


@dataclass(frozen=True)
class Kind:
    """One kind of call. `answered`: a person picked up. `talk_s`: answer to hang-up, None while
    the call is still on. `feedback`: one entry per suggestion shown on a human call (None:
    shown, never clicked)."""

    answered: bool
    talk_s: float | None
    customer_turns: int
    disposition: Disposition | None
    feedback: tuple[Feedback, ...] = ()
    machine: bool = False  # a voicemail greeting picked up: an answer time, but no person


# With the default engagement rule (>= 2 customer turns and >= 30 s, or converted):
#   engaged: CONV, QCONV (by conversion), ENG, CB (exactly at both limits), HAND
#   not engaged: SHORT, BRIEF (25 s), QUIET (1 turn), OPT, LIVE (not ended), and every unanswered
KINDS: dict[str, Kind] = {
    "NA": Kind(False, None, 0, "no_answer"),
    "BUSY": Kind(False, None, 0, "busy"),
    "VM": Kind(False, 20, 0, "voicemail", machine=True),
    "SHORT": Kind(True, 20, 1, "declined", ("dismissed",)),
    "BRIEF": Kind(True, 25, 3, "declined", ("accepted",)),
    "QUIET": Kind(True, 90, 1, "call_back", ("dismissed", "dismissed")),
    "ENG": Kind(True, 60, 3, "declined", ("accepted", "dismissed")),
    "CB": Kind(True, 30, 2, "call_back", ("accepted", None)),
    "CONV": Kind(True, 120, 4, "converted", ("accepted", "accepted", "dismissed")),
    "QCONV": Kind(True, 20, 1, "converted", ("accepted",)),
    "OPT": Kind(True, 10, 1, "do_not_call"),
    "HAND": Kind(True, 45, 2, "hand_off"),
    "LIVE": Kind(True, None, 2, None, ("accepted",)),
}

BOT = "flow:installment_offer_zh"
AGENTS: dict[str, Channel] = {"alice": "human", "bob": "human", BOT: "ai"}

# (agent, day 1..3) -> the kinds of its calls that day, in dialling order
PLAN: dict[tuple[str, int], tuple[str, ...]] = {
    ("alice", 1): ("CONV", "CONV", "ENG", "SHORT", "NA", "VM", "CB"),
    ("alice", 2): ("CONV", "ENG", "BRIEF", "QUIET", "NA", "NA", "OPT"),
    ("alice", 3): ("CONV", "QCONV", "ENG", "SHORT", "BUSY", "NA"),
    ("bob", 1): ("CONV", "ENG", "SHORT", "SHORT", "NA", "NA", "VM"),
    ("bob", 2): ("ENG", "BRIEF", "QUIET", "OPT", "NA", "BUSY", "NA"),
    ("bob", 3): ("CONV", "ENG", "CB", "SHORT", "NA", "LIVE"),
    (BOT, 1): ("CONV", "ENG", "HAND", "SHORT", "OPT", "NA", "NA"),
    (BOT, 2): ("QCONV", "ENG", "BRIEF", "SHORT", "SHORT", "NA", "VM"),
    (BOT, 3): ("CONV", "HAND", "QUIET", "OPT", "NA", "BUSY"),
}

_NAMES = ("王先生", "李女士", "张先生", "刘女士", "陈先生", "杨女士", "赵先生", "黄女士")
_AGENT_LINES = (
    "您好，这里是海港银行信用卡中心。",
    "您本期账单可以申请分期，手续费按期收取。",
    "请问您方便听我简单介绍一下吗？",
    "好的，我帮您记录一下。",
)
_CUSTOMER_LINES = ("嗯，你说。", "手续费是多少？", "我考虑一下。", "可以，帮我办吧。", "不需要了。")
_SUGGESTIONS = (
    "先确认客户身份，再说明分期手续费。",
    "客户问到费用时，直接告知每期费率。",
    "客户犹豫时，提出六期方案并说明可提前还款。",
)


@dataclass
class FixtureCall:
    call_id: str
    contact_external_id: str
    contact_name: str
    phone: str
    agent_id: str
    channel: Channel
    day: int
    kind: str
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    utterances: list[tuple[int, str, float, float, str]] = field(default_factory=list)
    suggestions: list[tuple[str, datetime, str, str, float, Feedback]] = field(default_factory=list)

    @property
    def spec(self) -> Kind:
        return KINDS[self.kind]


def _utterances(rng: random.Random, kind: Kind, role: str) -> list[tuple]:  # type: ignore[type-arg]
    if not kind.answered:
        return []
    # agent/bot and customer alternate, so "customer turns" is the same number whether a store
    # counts customer utterances or customer turns
    said = [role]
    for _ in range(kind.customer_turns):
        said += ["customer", role]
    step = (kind.talk_s or 40.0) / len(said)
    lines = {"customer": _CUSTOMER_LINES}
    return [
        (seq, who, seq * step, (seq + 0.8) * step, rng.choice(lines.get(who, _AGENT_LINES)))
        for seq, who in enumerate(said)
    ]


def fixture_calls(seed: int = 7) -> list[FixtureCall]:
    rng = random.Random(seed)
    calls: list[FixtureCall] = []
    for (agent, day), kinds in PLAN.items():
        channel = AGENTS[agent]
        for i, name in enumerate(kinds):
            kind = KINDS[name]
            n = len(calls)
            start = DAY1 + timedelta(days=day - 1) + i * SLOT
            start += timedelta(seconds=rng.randrange(600))
            picked_up = kind.answered or kind.machine
            answered = start + RING if picked_up else None
            if answered is not None:
                ended = None if kind.talk_s is None else answered + timedelta(seconds=kind.talk_s)
            else:
                ended = start + RING_OUT
            call = FixtureCall(
                call_id=f"fx-{n:03d}",
                contact_external_id=f"c{n:03d}",
                contact_name=rng.choice(_NAMES),
                phone="+86138" + "".join(rng.choice("0123456789") for _ in range(8)),
                agent_id=agent,
                channel=channel,
                day=day,
                kind=name,
                started_at=start,
                answered_at=answered,
                ended_at=ended,
            )
            call.utterances = _utterances(rng, kind, "agent" if channel == "human" else "bot")
            if channel == "human" and answered is not None:
                for j, fb in enumerate(kind.feedback):
                    call.suggestions.append(
                        (
                            f"{call.call_id}-s{j}",
                            answered + timedelta(seconds=5 * (j + 1)),
                            rng.choice(("llm", "exemplar")),
                            rng.choice(_SUGGESTIONS),
                            round(rng.uniform(20, 900), 1),
                            fb,
                        )
                    )
            calls.append(call)
    return calls


async def insert_campaign(
    db: asyncpg.Pool | asyncpg.Connection, campaign_id: str, name: str = CAMPAIGN_NAME
) -> None:
    await db.execute(
        "INSERT INTO campaigns (id, name, product, language) VALUES ($1, $2, $3, 'zh')",
        campaign_id,
        name,
        PRODUCT,
    )


async def insert_fixture_campaign(
    db: asyncpg.Pool | asyncpg.Connection, campaign_id: str = CAMPAIGN_ID, seed: int = 7
) -> list[FixtureCall]:
    """Write the campaign with plain SQL, in one transaction; returns the calls written.
    Call ids are prefixed with the campaign id, so several fixture campaigns can share a
    database."""
    calls = fixture_calls(seed)
    for c in calls:
        c.call_id = f"{campaign_id}/{c.call_id}"
        c.suggestions = [(f"{campaign_id}/{s[0]}", *s[1:]) for s in c.suggestions]
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            await _write(conn, campaign_id, calls)
    else:
        await _write(db, campaign_id, calls)
    return calls


async def _write(conn: asyncpg.Connection, campaign_id: str, calls: list[FixtureCall]) -> None:
    async with conn.transaction():
        await insert_campaign(conn, campaign_id)
        contact_ids = {}
        for c in calls:
            contact_ids[c.call_id] = await conn.fetchval(
                "INSERT INTO contacts (campaign_id, external_id, phone_e164, name, consent) "
                "VALUES ($1, $2, $3, $4, true) RETURNING id",
                campaign_id,
                c.contact_external_id,
                c.phone,
                c.contact_name,
            )
        await conn.executemany(
            "INSERT INTO calls (id, campaign_id, contact_id, channel, agent_id, started_at, "
            "answered_at, ended_at, disposition) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            [
                (
                    c.call_id,
                    campaign_id,
                    contact_ids[c.call_id],
                    c.channel,
                    c.agent_id,
                    c.started_at,
                    c.answered_at,
                    c.ended_at,
                    c.spec.disposition,
                )
                for c in calls
            ],
        )
        await conn.executemany(
            "INSERT INTO utterances (call_id, seq, role, start_s, end_s, text_redacted) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            [(c.call_id, *u) for c in calls for u in c.utterances],
        )
        await conn.executemany(
            "INSERT INTO suggestions (id, call_id, shown_at, source, text_redacted, latency_ms, "
            "feedback, feedback_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            [
                (sid, c.call_id, at, src, text, lat, fb, at + timedelta(seconds=3) if fb else None)
                for c in calls
                for sid, at, src, text, lat, fb in c.suggestions
            ],
        )
        # an outcome row exists once someone (or something) picked up; rings that nobody
        # answered have none, which the analytics must read as "nothing happened"
        await conn.executemany(
            "INSERT INTO outcomes (call_id, answered, converted, opted_out, handed_off, "
            "customer_turns) VALUES ($1, true, $2, $3, $4, $5)",
            [
                (
                    c.call_id,
                    c.spec.disposition == "converted",
                    c.spec.disposition == "do_not_call",
                    c.spec.disposition == "hand_off",
                    c.spec.customer_turns,
                )
                for c in calls
                if c.answered_at is not None
            ],
        )


def fixture_events(seed: int = 7, campaign_id: str = CAMPAIGN_ID) -> list[CallEvent]:
    """The same calls as the events a call runtime would send, for a store's ingest. Ordered
    by time; event ids are seeded, so a replay is idempotent."""
    rng = random.Random(f"events-{seed}")

    def eid() -> uuid.UUID:
        return uuid.UUID(int=rng.getrandbits(128), version=4)

    events: list[CallEvent] = []
    for c in fixture_calls(seed):
        cid = f"{campaign_id}/{c.call_id}"
        events.append(
            CallStarted(
                event_id=eid(),
                call_id=cid,
                at=c.started_at,
                campaign_id=campaign_id,
                contact_external_id=c.contact_external_id,
                channel=c.channel,
                agent_id=c.agent_id,
            )
        )
        if c.answered_at is not None:
            events.append(CallAnswered(event_id=eid(), call_id=cid, at=c.answered_at))
            for seq, role, start_s, end_s, text in c.utterances:
                at = c.answered_at + timedelta(seconds=end_s)
                events.append(
                    UtteranceSaid(
                        event_id=eid(),
                        call_id=cid,
                        at=at,
                        seq=seq,
                        role=role,
                        start_s=start_s,
                        end_s=end_s,
                        text=text,
                    )
                )
            for sid, at, source, text, latency, fb in c.suggestions:
                events.append(
                    SuggestionShown(
                        event_id=eid(),
                        call_id=cid,
                        at=at,
                        suggestion_id=f"{campaign_id}/{sid}",
                        source=source,
                        text=text,
                        latency_ms=latency,
                    )
                )
                if fb is not None:
                    events.append(
                        SuggestionFeedback(
                            event_id=eid(),
                            call_id=cid,
                            at=at + timedelta(seconds=3),
                            suggestion_id=f"{campaign_id}/{sid}",
                            feedback=fb,
                        )
                    )
        if c.ended_at is not None and c.spec.disposition is not None:
            events.append(
                CallEnded(
                    event_id=eid(), call_id=cid, at=c.ended_at, disposition=c.spec.disposition
                )
            )
    return sorted(events, key=lambda e: e.at)


async def ingest_fixture_campaign(
    db: Database, campaign_id: str = CAMPAIGN_ID, seed: int = 7
) -> IngestResult:
    """The same campaign through the store: campaign and contacts upserted, then the calls as
    events through `Store.ingest` (validation, redaction, projection), as live traffic would."""
    from .models import Campaign, Contact
    from .store import Store

    store = Store(db)
    await store.upsert_campaign(
        Campaign(id=campaign_id, name=CAMPAIGN_NAME, product=PRODUCT, language="zh")
    )
    await store.upsert_contacts(
        Contact(
            campaign_id=campaign_id,
            external_id=c.contact_external_id,
            phone=c.phone,
            name=c.contact_name,
            consent=True,
        )
        for c in fixture_calls(seed)
    )
    return await store.ingest(fixture_events(seed, campaign_id))
