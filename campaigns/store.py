"""The write side of the campaigns database: campaigns, contacts, do-not-call, call events.

`Store.ingest()` takes call events from any producer (models, dicts, JSON text), validates and
redacts each one (campaigns/validate.py), appends the good ones to the `events` log and projects
them into calls/utterances/suggestions/outcomes (campaigns/projection.py) in one transaction per
batch; a bad event is rejected alone, with its reason, into `rejected_events`. Delivery is
idempotent (event_id) and the projection does not depend on arrival order, so producers can
retry and redeliver freely.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import asyncpg
from pydantic import BaseModel, Field
from pydantic_core import to_json

from campaigns.db import Database, DatabaseUnavailable, is_unavailable
from campaigns.events import CallStarted
from campaigns.models import Campaign, Contact, normalize_phone
from campaigns.projection import BATCH_COLUMNS, COUNT_SQL, FILL_SQL, PROJECT_SQL
from campaigns.validate import (
    CleanEvent,
    PreparedBatch,
    RawEvent,
    Rejection,
    prepare_batch,
    redact_text,
)

log = logging.getLogger(__name__)

# Staging a batch, measured by bench/ingest.py (2-core EPYC, PostgreSQL 15): 100 rows take
# 0.6 ms with one INSERT ... unnest() and 0.5 ms with COPY, 1,000 rows 6.1 vs 5.3 ms, 10,000
# rows 81 vs 44 ms. COPY costs a round trip of its own (asyncpg introspects the table), so it is
# used from this size up. Staging is only ~10% of a batch; the projection is the rest.
COPY_THRESHOLD = 1000
MAX_BATCH = 10_000  # events per transaction; a longer input is split
# Concurrent ingests lock the calls they touch, hashed into this many advisory-lock buckets, so
# that a call_started and an event of the same call in two transactions cannot miss each other
# (the replay of pending events reads committed rows only). Few buckets keep the lock table small.
LOCK_BUCKETS = 64
LOCK_CLASS = 0x63770001  # first key of pg_advisory_xact_lock(int, int): "cw" + 1
_CLEAN_IN_THREAD = 256  # events: validation of a larger batch leaves the event loop free


class IngestResult(BaseModel):
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    pending: int = Field(0, description="accepted events whose call has not started yet")
    errors: list[str] = Field(default_factory=list)

    def __add__(self, other: IngestResult) -> IngestResult:
        return IngestResult(
            accepted=self.accepted + other.accepted,
            duplicates=self.duplicates + other.duplicates,
            rejected=self.rejected + other.rejected,
            pending=self.pending + other.pending,
            errors=self.errors + other.errors,
        )


class Store:
    def __init__(
        self, db: Database, *, copy_threshold: int = COPY_THRESHOLD, max_batch: int = MAX_BATCH
    ) -> None:
        self.db = db
        self.copy_threshold = copy_threshold
        self.max_batch = max_batch

    # -- campaigns and contacts ---------------------------------------------------------------

    async def upsert_campaign(self, campaign: Campaign) -> None:
        c = campaign
        await self._run(
            """
            INSERT INTO campaigns (id, name, product, language, window_start, window_end,
                                   max_attempts, settings)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)
            ON CONFLICT (id) DO UPDATE SET
                name = excluded.name, product = excluded.product, language = excluded.language,
                window_start = excluded.window_start, window_end = excluded.window_end,
                max_attempts = excluded.max_attempts, settings = excluded.settings
            """,
            c.id,
            c.name,
            c.product,
            c.language,
            c.window_start,
            c.window_end,
            c.max_attempts,
            to_json(c.settings).decode(),
        )

    async def upsert_contacts(self, contacts: Iterable[Contact]) -> int:
        """Insert or update contacts by (campaign, external id); returns how many were given.

        A do-not-call flag is never cleared by an import, and a number on the do-not-call
        register is flagged in every campaign it is imported into.
        """
        latest = {(c.campaign_id, c.external_id): c for c in contacts}  # last one wins
        if not latest:
            return 0
        rows = list(latest.values())
        now = datetime.now(UTC)
        consent_at = [(c.consent_at or now) if c.consent else None for c in rows]
        async with self._transaction() as conn:
            await conn.execute(
                """
                INSERT INTO do_not_call (phone_e164, reason, source)
                SELECT DISTINCT ON (p) p, coalesce(r, 'marked do-not-call in an imported list'),
                       'import'
                FROM unnest($1::text[], $2::text[], $3::bool[]) AS i(p, r, dnc)
                WHERE dnc
                ON CONFLICT (phone_e164) DO NOTHING
                """,
                [c.phone for c in rows],
                [c.dnc_reason for c in rows],
                [c.do_not_call for c in rows],
            )
            await conn.execute(
                """
                INSERT INTO contacts (campaign_id, external_id, phone_e164, name, time_zone,
                                      consent, consent_at, do_not_call, dnc_at, dnc_reason)
                SELECT i.campaign_id, i.external_id, i.phone, i.name, i.tz, i.consent,
                       i.consent_at, d.phone_e164 IS NOT NULL, d.at, d.reason
                FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                            $6::bool[], $7::timestamptz[])
                     AS i(campaign_id, external_id, phone, name, tz, consent, consent_at)
                LEFT JOIN do_not_call d ON d.phone_e164 = i.phone
                ON CONFLICT (campaign_id, external_id) DO UPDATE SET
                    phone_e164 = excluded.phone_e164, name = excluded.name,
                    time_zone = excluded.time_zone, consent = excluded.consent,
                    consent_at = excluded.consent_at,
                    do_not_call = contacts.do_not_call OR excluded.do_not_call,
                    dnc_at = CASE WHEN contacts.do_not_call THEN contacts.dnc_at
                                  ELSE excluded.dnc_at END,
                    dnc_reason = CASE WHEN contacts.do_not_call THEN contacts.dnc_reason
                                      ELSE excluded.dnc_reason END
                """,
                [c.campaign_id for c in rows],
                [c.external_id for c in rows],
                [c.phone for c in rows],
                [c.name for c in rows],
                [c.time_zone for c in rows],
                [c.consent for c in rows],
                consent_at,
            )
        return len(rows)

    async def mark_do_not_call(
        self, phone: str, reason: str, *, source: str = "manual", at: datetime | None = None
    ) -> int:
        """Put a number on the do-not-call register and flag it in every campaign.

        Returns how many contacts were newly flagged (0 is fine: the register still holds the
        number for lists imported later).
        """
        phone = normalize_phone(phone)
        reason, _ = redact_text(reason)
        at = at or datetime.now(UTC)
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO do_not_call (phone_e164, reason, source, at) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (phone_e164) DO NOTHING",
                phone,
                reason,
                source,
                at,
            )
            flagged = await conn.fetch(
                "UPDATE contacts SET do_not_call = true, dnc_at = $2, dnc_reason = $3"
                " WHERE phone_e164 = $1 AND NOT do_not_call RETURNING id",
                phone,
                at,
                reason,
            )
        return len(flagged)

    async def is_do_not_call(self, phone: str) -> bool:
        phone = normalize_phone(phone)
        return bool(
            await self._run(
                "SELECT EXISTS (SELECT 1 FROM do_not_call WHERE phone_e164 = $1)"
                " OR EXISTS (SELECT 1 FROM contacts WHERE phone_e164 = $1 AND do_not_call)",
                phone,
                fetch=True,
            )
        )

    async def pending_events(self) -> int:
        """Events in the log still waiting for their call_started."""
        return int(
            await self._run(
                "SELECT count(*) FROM events e WHERE NOT EXISTS "
                "(SELECT 1 FROM calls c WHERE c.id = e.call_id)",
                fetch=True,
            )
        )

    # -- events -------------------------------------------------------------------------------

    async def ingest(self, events: Iterable[RawEvent]) -> IngestResult:
        """Validate, log and project events; see the module docstring.

        Raises DatabaseUnavailable when the server cannot be reached (nothing of the failed
        batch is written: submit through StoreWriter to have such events kept and retried).
        """
        items = list(events)
        total = IngestResult()
        for start in range(0, len(items), self.max_batch):
            total += await self._ingest_batch(items[start : start + self.max_batch], start)
        return total

    async def _ingest_batch(self, raws: Sequence[RawEvent], offset: int) -> IngestResult:
        if len(raws) > _CLEAN_IN_THREAD:
            batch = await asyncio.to_thread(prepare_batch, raws, offset)
        else:
            batch = prepare_batch(raws, offset)
        return await self.write(batch)

    async def write(self, batch: PreparedBatch) -> IngestResult:
        """Write a batch that prepare_batch() made, in one transaction.

        ingest() is prepare_batch() + write(); a producer that wants the CPU-bound half in a
        thread of its own, overlapping the database half, calls the two itself.
        """
        good, rejected, duplicates = batch.good, batch.rejected, batch.duplicates
        try:
            return await self._write_retrying(good, rejected, duplicates)
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as err:
            # Validation should have caught it; find the culprit so one event cannot block the
            # rest (nor an outbox flush forever).
            log.warning("batch refused by the database (%s); retrying event by event", err)
            result = await self._write_retrying([], rejected, duplicates)
            for event in good:
                try:
                    result += await self._write_retrying([event], [], 0)
                except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as one:
                    refusal = Rejection(
                        event.index,
                        f"{event.type} {event.event_id} (call "
                        f"{event.call_id}): the database refused it: {one}",
                        event.payload,
                    )
                    result += await self._write_retrying([], [refusal], 0)
            return result

    async def _write_retrying(
        self, good: list[CleanEvent], rejected: list[Rejection], duplicates: int
    ) -> IngestResult:
        for attempt in range(5):
            try:
                return await self._write(good, list(rejected), duplicates)
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                if attempt == 4:
                    raise
                await asyncio.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")

    async def _write(
        self, good: list[CleanEvent], rejected: list[Rejection], duplicates: int
    ) -> IngestResult:
        accepted = pending = 0
        async with self._transaction() as conn:
            if good:
                buckets = sorted({zlib.crc32(e.call_id.encode()) % LOCK_BUCKETS for e in good})
                await conn.execute(
                    "SELECT pg_advisory_xact_lock($1, b) FROM unnest($2::int[]) AS b",
                    LOCK_CLASS,
                    buckets,
                )
                refused = await _check_starts(conn, good)
                if refused:
                    rejected += refused
                    dropped = {r.index for r in refused}
                    good = [e for e in good if e.index not in dropped]
            if good:
                await self._fill(conn, good)
                await conn.execute(PROJECT_SQL)
                counts = await conn.fetchrow(COUNT_SQL)
                accepted, pending = counts["accepted"], counts["pending"]
            if rejected:
                rejected.sort(key=lambda r: r.index)
                await conn.execute(
                    "INSERT INTO rejected_events (reason, raw)"
                    " SELECT * FROM unnest($1::text[], $2::text[])",
                    [r.reason for r in rejected],
                    [r.raw for r in rejected],
                )
        return IngestResult(
            accepted=accepted,
            duplicates=duplicates + len(good) - accepted,
            rejected=len(rejected),
            pending=pending,
            errors=[r.message() for r in rejected],
        )

    async def _fill(self, conn: asyncpg.Connection, good: list[CleanEvent]) -> None:
        if len(good) >= self.copy_threshold:
            await conn.copy_records_to_table(
                "_cw_batch",
                columns=BATCH_COLUMNS,
                records=[(e.event_id, e.call_id, e.type, e.at, e.payload) for e in good],
            )
        else:
            await conn.execute(
                FILL_SQL,
                [e.event_id for e in good],
                [e.call_id for e in good],
                [e.type for e in good],
                [e.at for e in good],
                [e.payload for e in good],
            )

    # -- plumbing -----------------------------------------------------------------------------

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection in a transaction; a lost server surfaces as DatabaseUnavailable,
        which is what tells StoreWriter to keep the events for later."""
        try:
            async with self.db.pool.acquire() as conn, conn.transaction():
                yield conn
        except Exception as err:
            if is_unavailable(err) and not isinstance(err, DatabaseUnavailable):
                raise DatabaseUnavailable(
                    f"PostgreSQL at {self.db.where} cannot be reached ({type(err).__name__}: "
                    f"{err}); nothing of this transaction was written"
                ) from err
            raise

    async def _run(self, sql: str, *args: object, fetch: bool = False) -> object:
        async with self._transaction() as conn:
            if fetch:
                return await conn.fetchval(sql, *args)
            return await conn.execute(sql, *args)


async def _check_starts(conn: asyncpg.Connection, good: list[CleanEvent]) -> list[Rejection]:
    """Rejections for call_started events whose campaign (or named contact) does not exist."""
    starts = {e.index: (e, e.event) for e in good if isinstance(e.event, CallStarted)}
    if not starts:
        return []
    rows = await conn.fetch(
        """
        SELECT i.idx, cp.id IS NOT NULL AS campaign_ok,
               i.ext IS NULL OR k.id IS NOT NULL AS contact_ok
        FROM unnest($1::int[], $2::text[], $3::text[]) AS i(idx, campaign, ext)
        LEFT JOIN campaigns cp ON cp.id = i.campaign
        LEFT JOIN contacts k ON k.campaign_id = i.campaign AND k.external_id = i.ext
        """,
        list(starts),
        [s.campaign_id for _, s in starts.values()],
        [s.contact_external_id for _, s in starts.values()],
    )
    refused = []
    for row in rows:
        clean_event, start = starts[row["idx"]]
        head = f"call_started {start.event_id} (call {start.call_id})"
        if not row["campaign_ok"]:
            reason = (
                f"{head}: campaign {start.campaign_id!r} does not exist; create it before "
                "its calls start"
            )
        elif not row["contact_ok"]:
            reason = (
                f"{head}: contact {start.contact_external_id!r} is not in campaign "
                f"{start.campaign_id!r}"
            )
        else:
            continue
        refused.append(Rejection(clean_event.index, reason, clean_event.payload))
    return refused
