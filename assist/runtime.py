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
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, ValidationError

from campaigns.models import Campaign
from campaigns.outbox import StoreWriter
from core.events import (
    STORED_TYPES,
    CallEnded,
    CallEvent,
    Disposition,
    SuggestionFeedback,
    UtteranceSaid,
    WrapUpDrafted,
    WrapUpNote,
)
from core.ids import new_id
from dialogue.suggest import Suggester
from dialogue.types import Turn
from dialogue.wrapup import draft_note
from speech import SpeechModels
from speech.asr import check_language

from .bus import CallMeta, EventFilter, Hub, Subscription
from .call_summary import CallSummary, SummaryTracker
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
                                  "feedback are still accepted")
    ended_stories_kept: int = Field(100, ge=0, description="of those, the most recent whose "
                                    "events a reconnecting screen still gets (the wrap-up view)")
    wrap_up_drafts: bool = Field(True, description="draft a wrap-up note when a call ends")
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

    cid = ident("call_id", params.get("call_id") or call_id) or new_id()
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


@dataclass
class CallLog:
    """What the runtime keeps of a call for screens, live or recently ended."""

    meta: CallMeta
    story: deque[CallEvent]
    tracker: SummaryTracker
    wrap_up: asyncio.Task[None] | None = field(default=None, repr=False)


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
        self._logs: OrderedDict[str, CallLog] = OrderedDict()  # live and recent ended calls
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
            await suggester.warm_up()
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
        from dialogue.defaults import (
            current_playbook,
            default_facts,
            default_intent_model,
            policy_text,
        )
        from dialogue.llm import LLMError, make_client

        from .settings import AppSettings

        settings = settings or AppSettings()
        speech = await asyncio.to_thread(SpeechModels.load, settings.speech)
        classifier = await asyncio.to_thread(default_intent_model)
        playbook = await asyncio.to_thread(current_playbook, classifier, settings.playbooks())
        client = None
        if llm:
            try:
                client = await asyncio.to_thread(make_client, settings.llm)
            except LLMError as exc:
                log.warning("no LLM (%s): suggestions come from top agents' replies only", exc)
        suggester = Suggester(classifier, playbook, client, policy_text(),
                              facts=default_facts())
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
        self._logs.pop(info.call_id, None)  # a call id reused after its call ended
        self._logs[info.call_id] = CallLog(session.meta, session.story, SummaryTracker(
            info.call_id, info.agent_id, info.campaign_id))
        session.start()
        log.info("call %s started (%s, agent %s, campaign %s)", info.call_id, info.layout,
                 info.agent_id, info.campaign_id)
        return session

    async def end_call(self, session: CallSession, reason: str | None = None) -> None:
        try:
            await session.end(reason)
        finally:
            call_id = session.info.call_id
            if self._calls.get(call_id) is session:
                del self._calls[call_id]
                self._logs.move_to_end(call_id)
                self._forget_old_calls()
                record = self._logs.get(call_id)
                if record is not None and self.config.wrap_up_drafts and not self._closing:
                    record.wrap_up = asyncio.create_task(
                        self._draft_wrap_up(record, session.info.language),
                        name=f"wrap-up-{call_id}")
            log.info("call %s ended (%s)", call_id, reason or "hang-up")

    def _forget_old_calls(self) -> None:
        ended = [k for k in self._logs if k not in self._calls]  # oldest first
        drop = max(0, len(ended) - self.config.ended_calls_kept)
        for call_id in ended[:drop]:
            del self._logs[call_id]
        kept = ended[drop:]
        for call_id in kept[:max(0, len(kept) - self.config.ended_stories_kept)]:
            self._logs[call_id].story = deque(maxlen=0)  # the summary stays

    async def _draft_wrap_up(self, record: CallLog, language: str | None) -> None:
        """An extractive note at once, then the LLM's (the agent may be typing already: a
        screen keeps their edits)."""
        lines = _latest_utterances(record.story)
        if not lines:
            return
        turns = [Turn(speaker="agent" if e.role in ("agent", "bot") else "customer", text=e.text)
                 for e in lines]
        language = language or next((e.language for e in lines if e.language), None)
        llm = self.suggester.llm if self.suggester is not None else None

        def publish(note: WrapUpNote, source: Literal["llm", "extractive"]) -> None:
            event = WrapUpDrafted(call_id=record.meta.call_id, note=note, source=source)
            record.story.append(event)
            self._publish(event, record.meta)

        try:
            publish(*await draft_note(None, turns, language))
            if llm is not None:
                await self._llm_idle()
                note, source = await draft_note(llm, turns, language)
                if source == "llm":
                    publish(note, source)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("call %s: the wrap-up draft failed; the agent writes it",
                          record.meta.call_id)

    async def wrap_up_drafted(self, call_id: str, timeout_s: float = 60.0) -> None:
        """Wait (at most `timeout_s`) for an ended call's wrap-up drafts to be published."""
        record = self._logs.get(call_id)
        if record is not None and record.wrap_up is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(record.wrap_up), timeout_s)

    async def _llm_idle(self, patience_s: float = 60.0) -> None:
        """Wait (a while) until no live call is waiting for its LLM reply: those are read out
        to a customer now, a wrap-up note can wait seconds."""
        deadline = asyncio.get_running_loop().time() + patience_s
        # polled: a reply starts and ends many times a minute, and nothing waits on it otherwise
        while any(s.writing_reply for s in self._calls.values()) \
                and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.5)

    def session(self, call_id: str) -> CallSession | None:
        return self._calls.get(call_id)

    def live_calls(self) -> list[CallMeta]:
        return [s.meta for s in self._calls.values()]

    def meta(self, call_id: str) -> CallMeta | None:
        record = self._logs.get(call_id)
        return record.meta if record is not None else None

    def summaries(self, live_only: bool = True) -> list[CallSummary]:
        """What the supervisor's list shows, oldest call first."""
        return [r.tracker.summary() for k, r in self._logs.items()
                if not live_only or k in self._calls]

    # ---- screens -------------------------------------------------------------------------
    def subscribe(self, accepts: EventFilter, maxsize: int = 2000, *,
                  ended: Callable[[CallMeta, CallSummary], bool] | None = None
                  ) -> tuple[Subscription, list[CallEvent]]:
        """A subscription and the story so far of every live call it may see, taken together
        (nothing runs between the two), so no event is missed or seen twice. `ended` picks the
        ended calls whose story comes too (a sidebar reconnecting during the wrap-up)."""
        sub = self.hub.subscribe(accepts, maxsize)
        story = [e for k, r in self._logs.items()
                 if k in self._calls or (ended is not None and ended(r.meta, r.tracker.summary()))
                 for e in r.story if accepts(e, r.meta)]
        return sub, story

    async def feedback(self, call_id: str, suggestion_id: str,
                       feedback: Literal["accepted", "dismissed"], by: str | None
                       ) -> SuggestionFeedback:
        live = self._calls.get(call_id)
        if live is None:
            record = self._logs.get(call_id)
            if record is None:
                raise UnknownCall(f"no live or recent call {call_id}")
            # The call is over, the card was on screen: the store knows whether it exists.
            event = SuggestionFeedback(call_id=call_id, suggestion_id=suggestion_id,
                                       feedback=feedback, by=by)
            record.story.append(event)
            self._publish(event, record.meta)
            return event
        try:
            return live.feedback(suggestion_id, feedback, by)
        except KeyError as exc:
            raise UnknownCall(f"no suggestion {suggestion_id} on call {call_id}") from exc

    async def wrap_up(self, call_id: str, disposition: Disposition, by: str | None,
                      note: WrapUpNote | None = None) -> CallEnded:
        """The agent's outcome for the call, with their note: a later call_ended that carries
        it (saved again, the latest wins)."""
        record = self._logs.get(call_id)
        if record is None:
            raise UnknownCall(f"no live or recent call {call_id}")
        event = CallEnded(call_id=call_id, disposition=disposition, note=note, by=by,
                          reason=f"wrap-up by {by}" if by else None)
        if call_id not in self._calls:  # a live session's story is appended by itself
            record.story.append(event)
        else:
            self._calls[call_id].story.append(event)
        self._publish(event, record.meta)
        return event

    # ---- out -----------------------------------------------------------------------------
    def _publish(self, event: CallEvent, meta: CallMeta) -> None:
        record = self._logs.get(meta.call_id)
        if record is not None:
            record.tracker.observe(event)
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
        drafts = [r.wrap_up for r in self._logs.values() if r.wrap_up is not None]
        for task in drafts:
            task.cancel()
        await asyncio.gather(*drafts, return_exceptions=True)
        await self.recorded()
        if self._recorder is not None:
            self._recorder.cancel()
        if self.writer is not None:
            await self.writer.close()
        if self.suggester is not None and self.suggester.llm is not None:
            await self.suggester.llm.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


def _latest_utterances(story: deque[CallEvent]) -> list[UtteranceSaid]:
    """The call's lines in order, each at its latest revision."""
    latest: dict[int, UtteranceSaid] = {}
    for e in story:
        if e.type == "utterance" and (e.seq not in latest or e.revision >= latest[e.seq].revision):
            latest[e.seq] = e
    return [latest[k] for k in sorted(latest)]
