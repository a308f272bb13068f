"""Deterministic synthetic campaign traffic, for the ingest and query benchmarks.

Benchmark and test data, not product code: it lives in bench/ (not installed with the wheel) and
is used by bench/ingest.py, bench/analytics.py and tests/test_store.py.

The mix is meant to look like a Mandarin outbound sales operation, so that the query benchmarks
see realistic selectivity: two campaigns (card upgrade, personal loan), each dialled by about
twenty human agents of uneven skill and by its own bot flow, over 60 days. Calls fall inside the
calling window in the contact's time zone; an unanswered contact is retried (up to 3 attempts, a
day or two apart), an answered one is not called again, and nobody on the do-not-call register is
dialled. About 40% of attempts are answered; 3-5% of answered calls convert, the bot a little
less often than the humans, and more often the longer the customer engages. An answered call
carries ~20 events (start, answer, ~17 utterances, suggestions with feedback on human calls,
end), an unanswered one 2 (start, end): ~10 events per call on average.

Everything derives from (seed, contact number), so the same arguments always give the same
rows, and a smaller load is a prefix of a larger one.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from campaigns.db import Database
from campaigns.events import (
    CallAnswered,
    CallEnded,
    CallEvent,
    CallStarted,
    SuggestionFeedback,
    SuggestionShown,
    UtteranceSaid,
)
from campaigns.models import Campaign, Contact
from campaigns.store import IngestResult, Store
from campaigns.validate import PreparedBatch, prepare_batch, redact_text

FIRST_DAY = datetime(2025, 9, 1, tzinfo=UTC)
DAYS = 60
MAX_ATTEMPTS = 3
ANSWER_RATE = 0.40
MEAN_CUSTOMER_TURNS = 8


@dataclass(frozen=True)
class CampaignSpec:
    id: str
    name: str
    product: str
    bot_flow: str
    agents: tuple[str, ...]


CAMPAIGNS = (
    CampaignSpec(
        "cw-card-upgrade",
        "信用卡升级",
        "credit_card",
        "bot-card-upgrade-v3",
        tuple(f"agent-{i:02d}" for i in range(1, 11)),
    ),
    CampaignSpec(
        "cw-personal-loan",
        "个人消费贷",
        "personal_loan",
        "bot-loan-offer-v2",
        tuple(f"agent-{i:02d}" for i in range(11, 21)),
    ),
)
# Per-agent conversion rate of answered calls: uneven on purpose, so a leaderboard means
# something (mean about 4.7%); the bot flows convert a little less (3.9%).
AGENT_SKILL = {f"agent-{i:02d}": 0.025 + 0.045 * ((i * 7) % 20) / 19 for i in range(1, 21)}
BOT_CONVERSION = 0.039

AGENT_LINES = (
    "您好，我是银行客服，请问是{name}本人吗？",
    "这次给您介绍一下我们的新权益。",
    "您的额度可以提升，年费首年免收。",
    "分期手续费目前有优惠活动。",
    "我理解您的顾虑，我再解释一下。",
    "您看这个方案合适吗？",
    "好的，那我帮您登记一下。",
    "感谢您的耐心，祝您生活愉快。",
)
CUSTOMER_LINES = {
    "affirm": ("好的", "嗯，可以的", "行，你说吧"),
    "confirm_identity": ("对，我就是", "是我本人"),
    "ask_who_is_calling": ("你是哪里？", "哪个银行的？"),
    "interest_rate": ("利息多少？", "年化利率是多少？"),
    "installment_inquiry": ("可以分几期？", "分期怎么算？"),
    "late_fee": ("逾期会有滞纳金吗？",),
    "not_interested": ("不需要，谢谢", "暂时没兴趣"),
    "call_back_later": ("我现在在忙，晚点再说", "下午再打给我吧"),
    "complaint": ("你们怎么老打电话", "上次的问题还没解决"),
}
SUGGESTIONS = ("可以强调首年免年费。", "先确认客户身份再介绍产品。", "回答利率问题时说明年化口径。")
# Lines are stored as given, so they must already be what redaction would leave.
for _line in (*AGENT_LINES, *SUGGESTIONS, *(x for v in CUSTOMER_LINES.values() for x in v)):
    assert redact_text(_line) == (_line, None), _line
ZONES = (("Asia/Shanghai", 0.95), ("Asia/Urumqi", 0.05))


def campaigns() -> list[Campaign]:
    return [
        Campaign(
            id=c.id,
            name=c.name,
            product=c.product,
            language="zh",
            window_start=time(9),
            window_end=time(20),
        )
        for c in CAMPAIGNS
    ]


def contact(seed: int, number: int) -> Contact:
    rng = random.Random(f"{seed}:contact:{number}")
    spec = CAMPAIGNS[number % len(CAMPAIGNS)]
    zone = "Asia/Shanghai" if rng.random() < ZONES[0][1] else ZONES[1][0]
    return Contact(
        campaign_id=spec.id,
        external_id=f"ext-{number:09d}",
        phone=f"+861{3 + number % 7}{number:09d}",
        name=f"客户{number}",
        time_zone=zone,
        consent=rng.random() < 0.97,
        consent_at=FIRST_DAY - timedelta(days=rng.randint(30, 400)),
        do_not_call=rng.random() < 0.01,
    )


def contact_calls(seed: int, number: int) -> list[list[CallEvent]]:
    """The attempts on one contact, each as its events in time order."""
    person = contact(seed, number)
    if person.do_not_call or not person.consent:
        return []  # the dialer never places these calls
    rng = random.Random(f"{seed}:calls:{number}")
    spec = CAMPAIGNS[number % len(CAMPAIGNS)]
    zone = ZoneInfo(person.time_zone)
    day = rng.randrange(DAYS)
    attempts: list[list[CallEvent]] = []
    for attempt in range(MAX_ATTEMPTS):
        local = datetime.combine((FIRST_DAY + timedelta(days=day)).date(), time(9), zone)
        # evenings are busier and answer a little more often
        minute = int(rng.triangular(0, 11 * 60 - 5, 8 * 60))
        started = (local + timedelta(minutes=minute, seconds=rng.randrange(60))).astimezone(UTC)
        call_id = f"call-{seed}-{number:09d}-{attempt}"
        answered = rng.random() < ANSWER_RATE * (1.1 if minute > 8 * 60 else 0.95)
        events = _call(rng, spec, person, call_id, started, answered)
        attempts.append(events)
        day += rng.choice((1, 1, 2))
        if answered or day >= DAYS:
            break
    return attempts


def synthetic_contacts(
    calls: int, seed: int = 0
) -> Iterator[tuple[Contact, list[list[CallEvent]]]]:
    """Contacts in list order with their attempts, until exactly `calls` calls were placed
    (contacts that are never dialled, for want of consent or being on the do-not-call list,
    are yielded too: they are part of the imported list)."""
    made = number = 0
    while made < calls:
        attempts = contact_calls(seed, number)[: calls - made]
        made += len(attempts)
        yield contact(seed, number), attempts
        number += 1


async def load_synthetic(
    db: Database, calls: int, seed: int = 0, *, batch_events: int = 10_000
) -> IngestResult:
    """Create the campaigns and contacts and ingest `calls` calls, batch by batch.

    The events go through the same validation, redaction and projection as live traffic
    (Store.write of prepare_batch); the next batch is generated and validated in a thread while
    the database writes the current one, which keeps both cores busy on a small machine.
    """
    store = Store(db)
    for c in campaigns():
        await store.upsert_campaign(c)
    source = _chunks(synthetic_contacts(calls, seed), batch_events)
    total = IngestResult()
    upcoming = asyncio.create_task(asyncio.to_thread(next, source, None))
    while (chunk := await upcoming) is not None:
        upcoming = asyncio.create_task(asyncio.to_thread(next, source, None))
        people, batch = chunk
        await store.upsert_contacts(people)
        result = await store.write(batch)
        if result.rejected:
            upcoming.cancel()
            raise AssertionError(f"synthetic events were rejected: {result.errors[:3]}")
        total += result
    return total


def _chunks(
    contacts: Iterator[tuple[Contact, list[list[CallEvent]]]], batch_events: int
) -> Iterator[tuple[list[Contact], PreparedBatch]]:
    people: list[Contact] = []
    events: list[CallEvent] = []
    for person, attempts in contacts:
        people.append(person)
        for call in attempts:
            events.extend(call)
        if len(events) >= batch_events:
            yield people, prepare_batch(events)
            people, events = [], []
    if people:
        yield people, prepare_batch(events)


# -- one call -----------------------------------------------------------------------------------


def _call(
    rng: random.Random,
    spec: CampaignSpec,
    person: Contact,
    call_id: str,
    started: datetime,
    answered: bool,
) -> list[CallEvent]:
    def eid() -> uuid.UUID:
        return uuid.UUID(int=rng.getrandbits(128), version=4)

    ai = rng.random() < 0.5
    agent = spec.bot_flow if ai else rng.choice(spec.agents)
    events: list[CallEvent] = [
        CallStarted(
            event_id=eid(),
            call_id=call_id,
            at=started,
            campaign_id=spec.id,
            contact_external_id=person.external_id,
            channel="ai" if ai else "human",
            agent_id=agent,
        )
    ]
    if not answered:
        disposition = rng.choices(("no_answer", "busy", "voicemail", "failed"), (70, 12, 13, 5))[0]
        ring = timedelta(seconds=rng.randint(15, 40))
        events.append(
            CallEnded(event_id=eid(), call_id=call_id, at=started + ring, disposition=disposition)
        )
        return events
    at = started + timedelta(seconds=rng.randint(5, 25))
    events.append(CallAnswered(event_id=eid(), call_id=call_id, at=at))
    turns = max(1, min(20, round(rng.gauss(MEAN_CUSTOMER_TURNS, 3))))
    clock = 0.0
    speaker = "bot" if ai else "agent"
    suggestion_at = rng.randrange(1, turns + 1) if not ai else -1
    for seq in range(2 * turns + 1):
        customer = seq % 2 == 1
        if customer:
            intent = rng.choice(tuple(CUSTOMER_LINES))
            text = rng.choice(CUSTOMER_LINES[intent])
        else:
            intent, text = None, AGENT_LINES[min(seq // 2, len(AGENT_LINES) - 1)]
            text = text.format(name=person.name[:1] + "先生")
        length = round(rng.uniform(1.2, 6.0), 2)
        start_s, end_s = round(clock, 2), round(clock + length, 2)
        clock = end_s + round(rng.uniform(0.2, 1.0), 2)
        said = at + timedelta(seconds=end_s)
        events.append(
            UtteranceSaid(
                event_id=eid(),
                call_id=call_id,
                at=said,
                seq=seq,
                role="customer" if customer else speaker,
                start_s=start_s,
                end_s=end_s,
                text=text,
                intent=intent,
            )
        )
        if customer and seq // 2 + 1 == suggestion_at:
            events.extend(_suggestion(rng, eid, call_id, said, seq))
    disposition = _disposition(rng, ai, agent, turns)
    events.append(
        CallEnded(
            event_id=eid(),
            call_id=call_id,
            at=at + timedelta(seconds=clock + 2),
            disposition=disposition,
        )
    )
    return events


def _suggestion(
    rng: random.Random, eid: Callable[[], uuid.UUID], call_id: str, at: datetime, seq: int
) -> list[CallEvent]:
    sid = f"{call_id}-s{seq}"
    shown = at + timedelta(milliseconds=rng.randint(300, 1500))
    out: list[CallEvent] = [
        SuggestionShown(
            event_id=eid(),
            call_id=call_id,
            at=shown,
            suggestion_id=sid,
            source=rng.choices(("llm", "exemplar"), (3, 2))[0],
            text=rng.choice(SUGGESTIONS),
            latency_ms=round(rng.uniform(250, 1400), 1),
        )
    ]
    choice = rng.choices(("accepted", "dismissed", None), (55, 30, 15))[0]
    if choice is not None:
        out.append(
            SuggestionFeedback(
                event_id=eid(),
                call_id=call_id,
                at=shown + timedelta(seconds=rng.uniform(1, 8)),
                suggestion_id=sid,
                feedback=choice,
            )
        )
    return out


def _disposition(rng: random.Random, ai: bool, agent: str, turns: int) -> str:
    rate = BOT_CONVERSION if ai else AGENT_SKILL[agent]
    # engaged customers convert more; the factor averages ~1 over the turn distribution
    if rng.random() < rate * turns / MEAN_CUSTOMER_TURNS:
        return "converted"
    outcomes = ("do_not_call", "hand_off", "call_back", "declined")
    weights = (3, 7, 12, 78) if ai else (3, 0, 14, 83)
    return rng.choices(outcomes, weights)[0]
