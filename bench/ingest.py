"""Ingest rate into PostgreSQL, and the bulk loader for the query benchmarks.

    python -m bench.ingest                       # batch sizes 1/100/1000/10000, COPY vs unnest
    python -m bench.ingest --load 100000         # + load 100k synthetic calls (~1M events)
    python -m bench.ingest --load 1000000 --only-load --url postgresql://.../callwise_1m --keep

Runs in a fresh scratch database (dropped afterwards) on the server tests/pg.py finds, unless
--url names one. Each measured call is one realistic answered call of 10 events (start, answer,
6 utterances, a suggestion, end); a batch is one Store.ingest() call, one transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, percentile
from bench.synthetic import AGENT_LINES, CUSTOMER_LINES, load_synthetic
from campaigns.db import connect
from campaigns.events import (
    CallAnswered,
    CallEnded,
    CallEvent,
    CallStarted,
    SuggestionShown,
    UtteranceSaid,
)
from campaigns.models import Campaign, Contact
from campaigns.outbox import Outbox, StoreWriter
from campaigns.store import Store
from campaigns.validate import clean, prepare_batch
from tests.pg import find_server

CAMPAIGN = "bench-campaign"
EVENTS_FOR_BATCH = {1: 3_000, 100: 30_000, 1000: 60_000, 10000: 100_000}


def ten_event_call(rng: random.Random, n: int) -> list[CallEvent]:
    def eid() -> uuid.UUID:
        return uuid.UUID(int=rng.getrandbits(128), version=4)

    call_id = f"bench-{n:09d}"
    t = datetime(2025, 10, 1, 2, tzinfo=UTC) + timedelta(seconds=n)
    out: list[CallEvent] = [
        CallStarted(
            event_id=eid(),
            call_id=call_id,
            at=t,
            campaign_id=CAMPAIGN,
            contact_external_id=f"c{n % 1000}",
            channel=rng.choice(("ai", "human")),
            agent_id=f"agent-{n % 20:02d}",
        ),
        CallAnswered(event_id=eid(), call_id=call_id, at=t + timedelta(seconds=8)),
    ]
    for seq in range(6):
        customer = seq % 2 == 1
        text = rng.choice(CUSTOMER_LINES["affirm"]) if customer else AGENT_LINES[seq // 2]
        if seq == 3:
            text += " 我的卡号是 6222 0212 3456 7890 128"  # redaction has work to do
        out.append(
            UtteranceSaid(
                event_id=eid(),
                call_id=call_id,
                at=t + timedelta(seconds=10 + 4 * seq),
                seq=seq,
                role="customer" if customer else "agent",
                start_s=4.0 * seq,
                end_s=4.0 * seq + 3,
                text=text,
            )
        )
    out.append(
        SuggestionShown(
            event_id=eid(),
            call_id=call_id,
            at=t + timedelta(seconds=30),
            suggestion_id=f"{call_id}-s",
            source="llm",
            text="先确认身份。",
            latency_ms=420.0,
        )
    )
    out.append(
        CallEnded(
            event_id=eid(),
            call_id=call_id,
            at=t + timedelta(seconds=60),
            disposition=rng.choice(("declined", "converted", "call_back")),
        )
    )
    return out


@contextlib.asynccontextmanager
async def database(url: str | None, keep: bool) -> AsyncIterator[tuple[str, str]]:
    if url:
        yield url, "given by --url"
        return
    server = await find_server()
    try:
        yield await server.create_database("callwise_bench"), server.origin
        if keep:
            server.created.clear()  # leave it for the query benchmarks
    finally:
        await server.close()


async def bench_batches(dsn: str, sizes: list[int], copy_modes: list[str]) -> None:
    rng = random.Random(7)
    async with await connect(dsn) as db:
        store = Store(db)
        await store.upsert_campaign(Campaign(id=CAMPAIGN, name="bench"))
        await store.upsert_contacts(
            Contact(campaign_id=CAMPAIGN, external_id=f"c{i}", phone=f"+86139{i:08d}", consent=True)
            for i in range(1000)
        )
        sample = [e for n in range(2000) for e in ten_event_call(rng, n)]
        t = time.perf_counter()
        for e in sample:
            clean(e)
        py_rate = len(sample) / (time.perf_counter() - t)
        print(f"validation + redaction alone (Python, one core): {py_rate:,.0f} events/s")
        print(
            f"{'batch':>6} {'fill':>6} {'events':>8} {'events/s':>10} "
            f"{'batch p50 ms':>13} {'batch p95 ms':>13}"
        )
        n = 10_000
        for size in sizes:
            for mode in copy_modes:
                if size == 1 and mode == "copy":
                    continue
                store.copy_threshold = 1 if mode == "copy" else 10**9
                calls = EVENTS_FOR_BATCH.get(size, size * 10) // 10
                events = [e for i in range(calls) for e in ten_event_call(rng, n + i)]
                n += calls
                latencies = []
                started = time.perf_counter()
                for i in range(0, len(events), size):
                    t = time.perf_counter()
                    result = await store.ingest(events[i : i + size])
                    latencies.append((time.perf_counter() - t) * 1000)
                    assert result.rejected == 0, result.errors
                wall = time.perf_counter() - started
                print(
                    f"{size:>6} {mode:>6} {len(events):>8} {len(events) / wall:>10,.0f} "
                    f"{percentile(latencies, 50):>13.1f} {percentile(latencies, 95):>13.1f}"
                )


async def bench_writer(dsn: str, producers: int = 200) -> None:
    """The live path: concurrent calls each submitting their events one by one through
    StoreWriter, which groups whatever arrives during a commit into the next transaction."""
    rng = random.Random(13)
    calls = [ten_event_call(rng, 2 * 10**8 + n) for n in range(producers)]
    with tempfile.TemporaryDirectory() as tmp:
        async with await connect(dsn) as db:
            writer = StoreWriter(Outbox(Path(tmp) / "outbox.sqlite3"), Store(db))
            latencies: list[float] = []

            async def producer(events: list[CallEvent]) -> None:
                for event in events:
                    t = time.perf_counter()
                    await writer.submit(event)
                    latencies.append((time.perf_counter() - t) * 1000)

            started = time.perf_counter()
            await asyncio.gather(*(producer(c) for c in calls))
            wall = time.perf_counter() - started
            await writer.close()
    total = sum(len(c) for c in calls)
    assert writer.delivered.accepted == total and writer.queued == 0
    print(
        f"StoreWriter, {producers} calls submitting one event at a time: {total / wall:,.0f} "
        f"events/s, submit p50 {percentile(latencies, 50):.1f} ms, "
        f"p95 {percentile(latencies, 95):.1f} ms"
    )


async def bench_fill(dsn: str, sizes: list[int]) -> None:
    """The staging step alone (rolled back): COPY against one INSERT ... unnest()."""
    rng = random.Random(11)
    async with await connect(dsn) as db:
        store = Store(db)
        print(f"{'rows':>6} {'unnest ms':>10} {'copy ms':>10}   (staging only, median of 7)")
        for size in sizes:
            events = [e for n in range(size // 10) for e in ten_event_call(rng, 10**8 + n)]
            good = prepare_batch(events).good
            timings: dict[str, list[float]] = {"unnest": [], "copy": []}
            for _ in range(7):
                for mode in timings:
                    store.copy_threshold = 1 if mode == "copy" else 10**9
                    async with db.acquire() as conn:
                        tx = conn.transaction()
                        await tx.start()
                        t = time.perf_counter()
                        await store._fill(conn, good)
                        timings[mode].append((time.perf_counter() - t) * 1000)
                        await tx.rollback()
            print(
                f"{size:>6} {percentile(timings['unnest'], 50):>10.1f} "
                f"{percentile(timings['copy'], 50):>10.1f}"
            )


async def bench_load(dsn: str, calls: int, seed: int) -> None:
    async with await connect(dsn) as db:
        started = time.perf_counter()
        result = await load_synthetic(db, calls, seed)
        wall = time.perf_counter() - started
        async with db.acquire() as conn:
            size = await conn.fetchval(
                "SELECT pg_size_pretty(pg_database_size(current_database()))"
            )
            rows = {
                t: await conn.fetchval(f"SELECT count(*) FROM {t}")
                for t in ("calls", "events", "utterances", "suggestions", "contacts")
            }
    print(
        f"load_synthetic({calls:,} calls, seed={seed}): {result.accepted:,} events in "
        f"{wall:,.1f} s = {result.accepted / wall:,.0f} events/s, {calls / wall:,.0f} calls/s; "
        f"database {size}; rows {rows}"
    )


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", help="use this database (it is written to) instead of a scratch one")
    ap.add_argument("--sizes", default="1,100,1000,10000")
    ap.add_argument("--fill", default="unnest,copy", help="unnest, copy or both")
    ap.add_argument("--load", type=int, default=0, help="also load this many synthetic calls")
    ap.add_argument("--only-load", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    async with database(args.url, args.keep) as (dsn, origin):
        async with await connect(dsn) as db, db.acquire() as conn:
            version = await conn.fetchval("SHOW server_version")
        print(f"PostgreSQL {version} ({origin}); database {dsn.rsplit('/', 1)[-1]}")
        if not args.only_load:
            sizes = [int(s) for s in args.sizes.split(",")]
            await bench_batches(dsn, sizes, args.fill.split(","))
            if any(s >= 100 for s in sizes):
                await bench_fill(dsn, [s for s in sizes if s >= 100])
            await bench_writer(dsn)
        if args.load:
            await bench_load(dsn, args.load, args.seed)


if __name__ == "__main__":
    asyncio.run(main())
