"""The live-call runtime of one process: the models, the live calls, the hub and the record.

Transports (assist/app.py: Twilio Media Streams, raw PCM, file replay) validate a call's
metadata into a `CallInfo`, `open_call` it and feed its audio to the `CallSession`
(assist/session.py, where the call's flow is told). Everything a session publishes goes two
ways: to the hub (screens: bounded queues, may drop a slow reader) and to the store writer
(the record: never dropped; an outage parks events in the outbox until PostgreSQL is back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Literal
from uuid import uuid4

from pydantic import BaseModel, Field, ValidationError

from campaigns.models import Campaign
from campaigns.outbox import StoreWriter
from core.events import STORED_TYPES, CallEnded, CallEvent, Disposition, SuggestionFeedback
from dialogue.suggest import Suggester
from speech import SpeechModels
from speech.asr import check_language

from .bus import CallMeta, EventFilter, Hub, Subscription
from .session import CallInfo, CallSession, SessionConfig

if TYPE_CHECKING:
    from .settings import AppSettings

log = logging.getLogger(__name__)

DEFAULT_CAMPAIGN = "inbound"
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$")

__all__ = ["CallInfo", "CallRejected", "CallSession", "Runtime", "RuntimeConfig", "UnknownCall"]


class CallRejected(Exception):
    """A call the runtime will not take; `reason` fits a websocket close frame."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason.encode()[:120].decode(errors="ignore")


class UnknownCall(LookupError):
    pass


class RuntimeConfig(BaseModel):
    max_calls: int = Field(64, ge=1, description="live calls at once; more are refused")
    ended_calls_kept: int = Field(500, ge=0, description="ended calls whose wrap-up and "
                                  "feedback are still accepted (metadata only)")
    default_language: str | None = "en"
    default_campaign: str = DEFAULT_CAMPAIGN
    session: SessionConfig = Field(default_factory=SessionConfig)


def call_info(params: Mapping[str, str], *, layout: str, call_id: str | None = None,
              default_language: str | None = None,
              channel_roles: list[str] | None = None,
              default_campaign: str = DEFAULT_CAMPAIGN) -> CallInfo:
    """A call's metadata from Twilio's customParameters or a /pcm query, checked: call_id,
    agent_id, campaign_id, contact_id, language, channel (human|ai), direction
    (inbound|outbound) and first_speaker (agent|customer; mono calls)."""
    def ident(name: str, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not isinstance(value, str) or not _SAFE_ID.match(value):
            raise CallRejected(f"bad {name}: letters, digits and ._:@+- only, at most 128")
        return value

    cid = ident("call_id", params.get("call_id") or call_id) or uuid4().hex
    try:
        language = check_language(params.get("language") or default_language)
    except ValueError as exc:
        raise CallRejected(f"bad language: {exc}") from exc
    channel = params.get("channel") or "human"
    if channel not in ("human", "ai"):
        raise CallRejected("bad channel: human or ai")
    direction = params.get("direction") or "inbound"
    if direction not in ("inbound", "outbound"):
        raise CallRejected("bad direction: inbound or outbound")
    first = params.get("first_speaker") or ("agent" if direction == "inbound" else "customer")
    if first not in ("agent", "customer"):
        raise CallRejected("bad first_speaker: agent or customer")
    try:
        return CallInfo(call_id=cid, agent_id=ident("agent_id", params.get("agent_id")),
                        campaign_id=ident("campaign_id", params.get("campaign_id"))
                        or default_campaign,
                        contact_id=ident("contact_id", params.get("contact_id")),
                        channel=channel, language=language, layout=layout,  # type: ignore[arg-type]
                        channel_roles=channel_roles,  # type: ignore[arg-type]
                        first_speaker=first)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise CallRejected(f"bad call parameters: {exc.errors()[0]['msg']}") from exc


CallInfo.from_params = staticmethod(call_info)  # type: ignore[attr-defined]


class Runtime:
    def __init__(self, speech: SpeechModels, suggester: Suggester | None,
                 writer: StoreWriter | None = None, config: RuntimeConfig | None = None) -> None:
        self.speech, self.suggester, self.writer = speech, suggester, writer
        self.config = config or RuntimeConfig()
        self.hub = Hub()
        # One thread for dialogue's CPU work: the encoders are not re-entrant, and the loop
        # that reads every call's frames must never run it.
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="callwise-dialogue")
        self._calls: dict[str, CallSession] = {}
        self._ended: OrderedDict[str, CallMeta] = OrderedDict()
        self._known_campaigns: set[str] = set()
        self._record: asyncio.Queue[CallEvent] = asyncio.Queue()
        self._recorder: asyncio.Task[None] | None = None
        self._closing = False
        self._warm_up: asyncio.Task[None] | None = None
        if suggester is not None and suggester.llm is not None:
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to warm it on
                self._warm_up = asyncio.create_task(self._warm(suggester),
                                                    name="callwise-llm-warm")

    async def _warm(self, suggester: Suggester) -> None:
        try:
            await suggester.warm_up(self.config.default_language or "en")
        except Exception as exc:  # the LLM is down: calls get exemplars and say why
            log.warning("LLM warm-up failed: %s", exc)

    async def ready(self) -> None:
        """Wait for the LLM to have read its system prompt (calls may start before)."""
        if self._warm_up is not None:
            await self._warm_up

    @classmethod
    async def load(cls, settings: AppSettings | None = None, *, database: bool = True,
                   llm: bool = True) -> Runtime:
        """The bundled models, the embedded LLM (or CALLWISE_LLM_BASE_URL) and the store, as
        the process's one settings object says."""
        from dialogue.defaults import default_intent_model, default_playbook, policy_text
        from dialogue.llm import LLMError, make_client

        from .settings import AppSettings

        settings = settings or AppSettings()
        speech = await asyncio.to_thread(SpeechModels.load, settings.speech)
        classifier = await asyncio.to_thread(default_intent_model)
        playbook = await asyncio.to_thread(default_playbook, classifier)
        client = None
        if llm:
            try:
                client = await asyncio.to_thread(make_client, settings.llm)
            except LLMError as exc:
                log.warning("no LLM (%s): suggestions come from top agents' replies only", exc)
        suggester = Suggester(classifier, playbook, client, policy_text())
        writer = (await StoreWriter.open(settings.database_url, settings.outbox_path)
                  if database else None)
        config = RuntimeConfig(max_calls=settings.max_calls,
                               default_language=settings.default_language)
        return cls(speech, suggester, writer, config)

    # ---- calls ---------------------------------------------------------------------------
    async def open_call(self, info: CallInfo) -> CallSession:
        if self._closing:
            raise CallRejected("server shutting down")
        if info.call_id in self._calls:
            raise CallRejected(f"call {info.call_id} is already live")
        if len(self._calls) >= self.config.max_calls:
            raise CallRejected(f"server full ({self.config.max_calls} live calls)")
        await self._check_campaign(info.campaign_id)
        if info.call_id in self._calls:  # another socket won the race during the check
            raise CallRejected(f"call {info.call_id} is already live")
        try:
            session = CallSession(info, self.speech, self.suggester, self._publish,
                                  self.executor, self.config.session)
        except ValueError as exc:
            raise CallRejected(str(exc)) from exc
        self._calls[info.call_id] = session
        session.start()
        log.info("call %s started (%s, agent %s, campaign %s)", info.call_id, info.layout,
                 info.agent_id, info.campaign_id)
        return session

    async def end_call(self, session: CallSession, reason: str | None = None) -> None:
        try:
            await session.end(reason)
        finally:
            if self._calls.get(session.info.call_id) is session:
                del self._calls[session.info.call_id]
                self._ended[session.info.call_id] = session.meta
                while len(self._ended) > self.config.ended_calls_kept:
                    self._ended.popitem(last=False)
            log.info("call %s ended (%s)", session.info.call_id, reason or "hang-up")

    def session(self, call_id: str) -> CallSession | None:
        return self._calls.get(call_id)

    def live_calls(self) -> list[CallMeta]:
        return [s.meta for s in self._calls.values()]

    def meta(self, call_id: str) -> CallMeta | None:
        live = self._calls.get(call_id)
        return live.meta if live is not None else self._ended.get(call_id)

    # ---- screens -------------------------------------------------------------------------
    def subscribe(self, accepts: EventFilter, maxsize: int = 2000
                  ) -> tuple[Subscription, list[CallEvent]]:
        """A subscription and the story so far of every live call it may see, taken together
        (nothing runs between the two), so no event is missed or seen twice."""
        sub = self.hub.subscribe(accepts, maxsize)
        story = [e for s in self._calls.values() for e in s.story if accepts(e, s.meta)]
        return sub, story

    async def feedback(self, call_id: str, suggestion_id: str,
                       feedback: Literal["accepted", "dismissed"], by: str | None
                       ) -> SuggestionFeedback:
        live = self._calls.get(call_id)
        if live is None:
            if call_id not in self._ended:
                raise UnknownCall(f"no live or recent call {call_id}")
            # The call is over, the card was on screen: the store knows whether it exists.
            event = SuggestionFeedback(call_id=call_id, suggestion_id=suggestion_id,
                                       feedback=feedback, by=by)
            self._publish(event, self._ended[call_id])
            return event
        try:
            return live.feedback(suggestion_id, feedback, by)
        except KeyError as exc:
            raise UnknownCall(f"no suggestion {suggestion_id} on call {call_id}") from exc

    async def wrap_up(self, call_id: str, disposition: Disposition, by: str | None) -> CallEnded:
        """The agent's outcome for the call: a later call_ended that carries it."""
        meta = self.meta(call_id)
        if meta is None:
            raise UnknownCall(f"no live or recent call {call_id}")
        event = CallEnded(call_id=call_id, disposition=disposition,
                          reason=f"wrap-up by {by}" if by else None)
        live = self._calls.get(call_id)
        if live is not None:
            live.story.append(event)
        self._publish(event, meta)
        return event

    # ---- out -----------------------------------------------------------------------------
    def _publish(self, event: CallEvent, meta: CallMeta) -> None:
        self.hub.publish(event, meta)
        if self.writer is not None and event.type in STORED_TYPES:
            self._record.put_nowait(event)
            if self._recorder is None or self._recorder.done():
                self._recorder = asyncio.create_task(self._record_loop(), name="callwise-record")

    async def _record_loop(self) -> None:
        assert self.writer is not None
        while True:
            batch = [await self._record.get()]
            while not self._record.empty() and len(batch) < 500:
                batch.append(self._record.get_nowait())
            try:
                # Returns once committed or fsynced in the outbox: a database outage costs
                # nothing but the wait.
                await self.writer.submit_many(batch)
            except Exception:
                log.exception("%d events could not be recorded", len(batch))
            finally:
                for _ in batch:
                    self._record.task_done()

    async def recorded(self) -> None:
        """Wait until every event published so far is in PostgreSQL or the outbox."""
        if self.writer is not None:
            await self._record.join()

    async def _check_campaign(self, campaign_id: str) -> None:
        if self.writer is None or campaign_id in self._known_campaigns:
            return
        store = await self.writer.reachable_store()
        if store is None:
            return  # the store keeps the call in rejected_events if the campaign is unknown
        exists = await store.db.pool.fetchval(
            "SELECT 1 FROM campaigns WHERE id = $1", campaign_id)
        if not exists:
            if campaign_id != self.config.default_campaign:
                raise CallRejected(f"unknown campaign {campaign_id}")
            await store.upsert_campaign(Campaign(
                id=campaign_id, name="Inbound calls", product="inbound",
                language=self.config.default_language or "en"))
        self._known_campaigns.add(campaign_id)

    async def aclose(self) -> None:
        """End every live call (their words are kept), record everything, free the models."""
        self._closing = True
        if self._warm_up is not None:
            self._warm_up.cancel()
        await asyncio.gather(*(self.end_call(s, "server shutting down")
                               for s in list(self._calls.values())), return_exceptions=True)
        await self.recorded()
        if self._recorder is not None:
            self._recorder.cancel()
        if self.writer is not None:
            await self.writer.close()
        if self.suggester is not None and self.suggester.llm is not None:
            await self.suggester.llm.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
