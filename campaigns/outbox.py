"""Losing no call event when PostgreSQL is down: a local durable outbox and a writer around it.

`StoreWriter.submit()` writes straight to the database while it answers. When it does not, the
event goes to the `Outbox`, a SQLite file on local disk, and a background task retries with
exponential backoff, draining the outbox oldest first once the server is back; new events queue
behind the old ones meanwhile. A batch is removed from the outbox only after its transaction
committed; if the commit happened but its acknowledgement was lost, the batch is sent again and
the store's idempotency (event_id) makes that a no-op.

Why SQLite and not an append-only JSONL file: delivered events must be removed, and with JSONL
that needs a separately fsynced "delivered up to" offset plus periodic rewriting of the file,
and a crash mid-write leaves a torn last line to detect. SQLite (stdlib, WAL, synchronous=FULL)
gives an fsynced append per submit, atomic removal after delivery and FIFO order by rowid with
none of that code. The outbox holds redacted JSON only (a raw card number never touches disk),
and the file is created 0600.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

from campaigns.db import DatabaseUnavailable, connect, is_unavailable
from campaigns.embedded import default_data_dir
from campaigns.store import IngestResult, Store
from campaigns.validate import RawEvent, Rejection, clean, rejection_text

log = logging.getLogger(__name__)


def default_outbox_path() -> Path:
    return default_data_dir() / "outbox.sqlite3"


class Outbox:
    """A durable FIFO of event JSON texts. Blocking (fsync): call it from a worker thread."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path else default_outbox_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # fsync the WAL at every commit
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox ("
            " id INTEGER PRIMARY KEY AUTOINCREMENT, payload TEXT NOT NULL, queued_at REAL NOT NULL)"
        )

    def append(self, payloads: list[str]) -> None:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO outbox (payload, queued_at) VALUES (?, ?)",
                    [(p, now) for p in payloads],
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def peek(self, limit: int) -> list[tuple[int, str]]:
        with self._lock:
            return self._db.execute(
                "SELECT id, payload FROM outbox ORDER BY id LIMIT ?", (limit,)
            ).fetchall()

    def remove(self, ids: list[int]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
            self._db.execute("COMMIT")

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def outbox_text(raw: RawEvent) -> str:
    """What the outbox keeps: the validated event with its texts redacted, or, for an event the
    store will reject anyway, the rejection (its reason and redacted raw text), so that it is
    recorded as that rejection on delivery and its redacted raw text is not read as an event."""
    item = clean(raw)
    return rejection_text(item) if isinstance(item, Rejection) else item.payload


class StoreWriter:
    """Submit events; they reach the database now, or later from the outbox, exactly once.

    Concurrent submits are grouped: while one transaction commits, the events submitted
    meanwhile gather and go together in the next (group commit), so a hundred live calls
    submitting one event each cost a few commits, not a hundred fsyncs.

    Give it a `Store`, or `open_store` (an async callable) when the database may be down at
    start-up; the writer then opens it on its first successful attempt.
    """

    def __init__(
        self,
        outbox: Outbox,
        store: Store | None = None,
        *,
        open_store: Callable[[], Awaitable[Store]] | None = None,
        batch_size: int = 1000,
        min_backoff_s: float = 0.25,
        max_backoff_s: float = 30.0,
        ingest_timeout_s: float = 15.0,
    ) -> None:
        if store is None and open_store is None:
            raise ValueError("StoreWriter needs a store or an open_store callable")
        self.outbox = outbox
        self.store = store
        self._open_store = open_store
        self._owns_store = store is None
        self.batch_size = batch_size
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        # A server that vanished without closing its sockets would hang a query for as long as
        # TCP takes to notice (hours); a live call must not wait on that.
        self.ingest_timeout_s = ingest_timeout_s
        self.delivered = IngestResult()  # what reached the database, summed
        self._queued = len(outbox)
        self._waiting: list[tuple[list[RawEvent], asyncio.Future[None]]] = []
        self._submitted = asyncio.Event()
        self._queued_more = asyncio.Event()
        self._drain_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    @classmethod
    async def open(
        cls, url: str | None = None, outbox_path: Path | str | None = None, **kwargs: Any
    ) -> StoreWriter:
        """A writer on DATABASE_URL (or `url`, or the embedded server) that starts even while
        the database is unreachable."""

        async def open_store() -> Store:
            return Store(await connect(url))

        writer = cls(Outbox(outbox_path), open_store=open_store, **kwargs)
        await writer.start()
        return writer

    @property
    def queued(self) -> int:
        """Events waiting in the outbox."""
        return self._queued

    async def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._commit_loop(), name="callwise-writer-commit"),
            asyncio.create_task(self._flush_loop(), name="callwise-outbox-flush"),
        ]
        if self._queued:
            log.info(
                "outbox %s holds %d events from before; delivering", self.outbox.path, self._queued
            )
            self._queued_more.set()

    async def submit(self, event: RawEvent) -> None:
        await self.submit_many([event])

    async def submit_many(self, events: Iterable[RawEvent]) -> None:
        """Returns once the events are committed in PostgreSQL or fsynced in the outbox."""
        if self._closing:
            raise RuntimeError("StoreWriter is closed")
        items = list(events)
        if not items:
            return
        await self.start()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((items, done))
        self._submitted.set()
        await done

    async def flush(self) -> int:
        """Deliver what the outbox holds now; returns how many events are left (0: all in).
        Raises DatabaseUnavailable while the database is still away."""
        while self._queued:
            await self._drain_once()
        return self._queued

    async def close(self, drain_timeout_s: float = 5.0) -> None:
        """Finish the submits under way, try to deliver what is queued, then stop; anything
        left stays in the outbox file and is delivered by the next writer on it."""
        self._closing = True
        while self._waiting:
            self._submitted.set()
            await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._queued:
            try:
                await asyncio.wait_for(self.flush(), drain_timeout_s)
            except Exception as err:
                log.warning(
                    "%d events stay in the outbox %s: %s", self._queued, self.outbox.path, err
                )
        if self._owns_store and self.store is not None:
            await self.store.db.close()
            self.store = None
        self.outbox.close()

    async def __aenter__(self) -> StoreWriter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- internals ----------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            await self._submitted.wait()
            self._submitted.clear()
            while self._waiting:
                group, size = [], 0
                while self._waiting and size < self.batch_size:
                    group.append(self._waiting.pop(0))
                    size += len(group[-1][0])
                try:
                    await self._deliver([e for items, _ in group for e in items])
                except Exception as err:  # the outbox itself failed (disk full?): tell them
                    for _, done in group:
                        if not done.done():
                            done.set_exception(err)
                else:
                    for _, done in group:
                        if not done.done():
                            done.set_result(None)

    async def _deliver(self, items: list[RawEvent]) -> None:
        # Straight to the database only while nothing waits in the outbox, so that the queue
        # drains oldest first.
        if self._queued == 0 and self.store is not None:
            try:
                result = await self._bounded(self.store.ingest(items))
            except DatabaseUnavailable as err:
                log.warning("database unavailable, keeping events in the outbox: %s", err)
            except Exception:
                log.exception("ingest failed; keeping the events in the outbox to retry")
            else:
                self._note(result)
                return
        texts = await asyncio.to_thread(lambda: [outbox_text(e) for e in items])
        await asyncio.to_thread(self.outbox.append, texts)
        self._queued += len(texts)
        self._queued_more.set()

    async def _flush_loop(self) -> None:
        backoff = self.min_backoff_s
        while True:
            if self._queued == 0:
                self._queued_more.clear()
                await self._queued_more.wait()
                continue
            try:
                await self._drain_once()
                backoff = self.min_backoff_s
            except Exception as err:
                if not is_unavailable(err):
                    log.exception("outbox delivery failed; will retry")
                # full jitter: many writers coming back together do not hit the server at once
                delay = random.uniform(self.min_backoff_s, backoff)
                log.info(
                    "outbox: %d events waiting, retrying in %.1f s (%s)", self._queued, delay, err
                )
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, self.max_backoff_s)

    async def _drain_once(self) -> None:
        async with self._drain_lock:
            store = await self._ensure_store()
            rows = await asyncio.to_thread(self.outbox.peek, self.batch_size)
            if not rows:
                self._queued = 0
                return
            self._note(await self._bounded(store.ingest([payload for _, payload in rows])))
            await asyncio.to_thread(self.outbox.remove, [i for i, _ in rows])
            self._queued = max(0, self._queued - len(rows))

    async def reachable_store(self, timeout_s: float = 2.0) -> Store | None:
        """The store for a quick read (is this campaign known?), or None while the database is
        away: the caller goes on without it."""
        try:
            return await asyncio.wait_for(self._ensure_store(), timeout_s)
        except (TimeoutError, DatabaseUnavailable, OSError) as err:
            log.info("database not reachable for a read: %s", err)
            return None

    async def _ensure_store(self) -> Store:
        if self.store is None:
            assert self._open_store is not None
            self.store = await self._open_store()
        return self.store

    async def _bounded(self, ingest: Coroutine[Any, Any, IngestResult]) -> IngestResult:
        """The ingest's result, or DatabaseUnavailable after ingest_timeout_s.

        Not asyncio.wait_for: it waits for the cancelled ingest to finish, and on a connection
        that went silent its ROLLBACK hangs too. The abandoned attempt is left to die with its
        connection; if its commit did land after all, the outbox copy is a harmless duplicate.
        """
        task = asyncio.ensure_future(ingest)
        done, _ = await asyncio.wait({task}, timeout=self.ingest_timeout_s)
        if task in done:
            return task.result()
        task.cancel()
        task.add_done_callback(_abandoned)
        raise DatabaseUnavailable(
            f"PostgreSQL did not answer within {self.ingest_timeout_s:g} s (ingest_timeout_s)"
        )

    def _note(self, result: IngestResult) -> None:
        self.delivered += result
        del self.delivered.errors[:-100]  # a long-lived writer keeps the latest reasons only
        for error in result.errors:
            log.warning("event rejected: %s", error)


def _abandoned(task: asyncio.Task[IngestResult]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("an abandoned ingest ended with %r", task.exception())
