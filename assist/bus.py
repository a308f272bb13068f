"""Events out of calls to whoever watches them: sidebars, supervisors, the store writer.

Each subscriber has its own bounded queue, filled without ever waiting: a browser that stops
reading cannot delay a call's transcript or anyone else's. A subscriber that falls too far
behind is dropped (it gets `Lagged` and is told to reconnect); on reconnecting it receives each
live call's story so far, so nothing on its screen is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from core.events import CallEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CallMeta:
    """What access rules need to know about a call."""

    call_id: str
    agent_id: str | None
    campaign_id: str


EventFilter = Callable[[CallEvent, CallMeta], bool]


class Lagged(Exception):
    """The subscriber fell behind by more than its queue holds."""


class Subscription:
    def __init__(self, hub: Hub, accepts: EventFilter, maxsize: int) -> None:
        self._hub, self.accepts = hub, accepts
        self._queue: asyncio.Queue[CallEvent | None] = asyncio.Queue(maxsize)
        self.lagged = False
        self.closed = False

    def push(self, event: CallEvent) -> None:
        if self.closed:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.lagged = True
            self._drop()

    def _drop(self) -> None:
        # Free the memory now and wake the reader: it stops at the marker.
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._hub.unsubscribe(self)
            if self._queue.empty():
                self._queue.put_nowait(None)

    async def get(self) -> CallEvent:
        if self.closed and self._queue.empty():
            # Closed while events were still queued: they were delivered, no marker is left.
            raise StopAsyncIteration
        event = await self._queue.get()
        if event is None:
            if self.lagged:
                raise Lagged("fell behind; reconnect to get the calls' story so far")
            raise StopAsyncIteration
        return event

    def __aiter__(self) -> AsyncIterator[CallEvent]:
        return self

    async def __anext__(self) -> CallEvent:
        return await self.get()

    def pending(self) -> int:
        return self._queue.qsize()


class Hub:
    """One per process: every call publishes here, every watcher subscribes here."""

    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()

    def subscribe(self, accepts: EventFilter, maxsize: int = 2000) -> Subscription:
        sub = Subscription(self, accepts, maxsize)
        self._subscriptions.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscriptions.discard(sub)

    def publish(self, event: CallEvent, meta: CallMeta) -> None:
        for sub in list(self._subscriptions):
            try:
                wanted = sub.accepts(event, meta)
            except Exception:
                log.exception("subscriber filter failed; dropping that subscriber")
                sub.close()
                continue
            if wanted:
                sub.push(event)

    def __len__(self) -> int:
        return len(self._subscriptions)
