"""Dashboard query latency: each campaign report section and the whole report, p50/p95.

    python -m bench.analytics                          # 100k and 1M calls, scratch databases
    python -m bench.analytics --calls 100000 --repeat 30
    python -m bench.analytics --url postgresql://.../callwise_1m --no-load

Each size is loaded into a fresh scratch database (on the server tests/pg.py finds; dropped
afterwards unless --keep) with bench.synthetic.load_synthetic, through the store as live
traffic, then ANALYZEd. The report is asked for the campaign with the most calls, the way the
dashboard asks for it: a section is one statement on a pool connection; "report" is all of them
in one statement. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine, percentile
from campaigns.analytics import (
    ReportQuery,
    by_day,
    campaign_report,
    leaderboard,
    overview,
)
from campaigns.db import Database, connect
from tests.pg import find_server

SECTIONS: dict[str, Callable[..., Awaitable[object]]] = {
    "overview (totals, channels, funnel, AI vs human)": overview,
    "leaderboard (per agent)": leaderboard,
    "by day": by_day,
    "whole report (one statement)": campaign_report,
}


@contextlib.asynccontextmanager
async def database(url: str | None, calls: int, keep: bool) -> AsyncIterator[str]:
    if url:
        yield url
        return
    server = await find_server()
    try:
        yield await server.create_database(f"callwise_bench_analytics_{calls}")
        if keep:
            server.created.clear()
    finally:
        await server.close()


async def load(db: Database, calls: int, seed: int) -> None:
    from bench.synthetic import load_synthetic

    started = time.perf_counter()
    result = await load_synthetic(db, calls, seed)
    wall = time.perf_counter() - started
    async with db.acquire() as conn:
        await conn.execute("ANALYZE")
    print(f"  loaded {calls:,} calls ({result.accepted:,} events) in {wall:,.0f} s")


async def describe(db: Database) -> str:
    async with db.acquire() as conn:
        settings = {
            s: await conn.fetchval(f"SHOW {s}")
            for s in ("server_version", "jit", "work_mem", "max_parallel_workers_per_gather")
        }
        rows = {
            t: await conn.fetchval(f"SELECT count(*) FROM {t}")
            for t in ("calls", "outcomes", "suggestions")
        }
    facts = ", ".join(f"{k} {v}" for k, v in settings.items())
    return f"  PostgreSQL {facts}; rows: " + ", ".join(f"{t} {n:,}" for t, n in rows.items())


async def time_sections(db: Database, campaign_id: str, repeat: int) -> None:
    query = ReportQuery(campaign_id=campaign_id)
    print(f"  {'section':<50} {'p50 ms':>9} {'p95 ms':>9} {'runs':>5}")
    for name, section in SECTIONS.items():
        for _ in range(2):  # warm the cache and the prepared statement
            await section(db.pool, query)
        ms = []
        for _ in range(repeat):
            t = time.perf_counter()
            await section(db.pool, query)
            ms.append((time.perf_counter() - t) * 1000)
        print(f"  {name:<50} {percentile(ms, 50):>9.1f} {percentile(ms, 95):>9.1f} {repeat:>5}")


async def bench_size(args: argparse.Namespace, calls: int) -> None:
    print(f"\n{calls:,} calls, seed {args.seed}" + (" (already loaded)" if args.no_load else ""))
    async with database(args.url, calls, args.keep) as dsn, await connect(dsn) as db:
        if not args.no_load:
            await load(db, calls, args.seed)
        print(await describe(db))
        async with db.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT campaign_id, count(*) AS n FROM calls GROUP BY 1 ORDER BY 2 DESC LIMIT 1"
            )
        if row is None:
            print("  no calls in this database; nothing to time")
            return
        print(f"  campaign {row['campaign_id']!r}: {row['n']:,} calls")
        await time_sections(db, row["campaign_id"], args.repeat)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=20, help="timed runs per section")
    ap.add_argument("--url", help="use this database instead of a scratch one per size")
    ap.add_argument("--no-load", action="store_true", help="time what --url already holds")
    ap.add_argument("--keep", action="store_true", help="keep the scratch databases")
    args = ap.parse_args()
    if args.no_load and not args.url:
        ap.error("--no-load needs --url")
    if args.url and len(args.calls) > 1:
        ap.error("--url holds one load: give one --calls")
    print(f"machine: {machine()}")
    for calls in args.calls:
        await bench_size(args, calls)


if __name__ == "__main__":
    asyncio.run(main())
