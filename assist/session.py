"""One live call, from audio to events: the file to read to see how a call flows.

    media in ──accept()──> CallTranscriber (speech/: VAD, streaming Whisper, diarizer, roles)
        │ partial ───────────────────────────────> TranscriptPartial
        │ final ──> seq, redaction ──> UtteranceSaid (with the customer's intent)
        │             customer turn ──> dialogue, off the loop:
        │                intent ───────────────────> IntentDetected
        │                opt-out, hand-off ───────> OverrideRaised, ComplianceAlert, scripted card
        │                the policy fact asked ────> SuggestionShown (policy, at once, first
        │                                            when no top agent's reply states it whole)
        │                top agents' replies ──────> SuggestionShown (source exemplar, at once;
        │                                            the one answering the asked slot first)
        │                LLM reply, streamed ──────> SuggestionDraft ... then SuggestionShown (llm)
        │                                            or SuggestionWithheld (guardrail, LLM down,
        │                                            superseded by the customer's next turn)
        │             agent turn ──> guardrails ──> ComplianceAlert (forbidden claim, card read out)
        │                        disclosures ──> DisclosureStatus made (due at the start; overdue
        │                                        and a ComplianceAlert once the audio clock
        │                                        passes the deadline without it)
        │             customer turn with a card number ──> ComplianceAlert (pii_spoken, redacted)
        └ end() ──> flush ──> CallEnded; the session is released (the runtime keeps its story
                              and drafts the wrap-up note)

Every event goes to `publish` (the runtime: the hub for screens, the store writer for the
record). The 20 ms audio path never waits on dialogue: finals queue up for one worker task per
call, and the CPU-bound steps (redaction, encoders, retrieval) run on the runtime's dialogue
thread. A mono call acts on the diarizer's provisional speaker at once and sends a revision of
the same `seq` when the speaker is settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from core.events import (
    CallAnswered,
    CallEnded,
    CallEvent,
    CallStarted,
    Citation,
    ComplianceAlert,
    DisclosureStatus,
    IntentDetected,
    OverrideRaised,
    Role,
    SuggestionDraft,
    SuggestionFeedback,
    SuggestionShown,
    SuggestionWithheld,
    TranscriptPartial,
    UtteranceSaid,
)
from core.ids import new_id
from dialogue.guardrails import DisclosureTracker, check
from dialogue.llm import LLMError
from dialogue.redaction import redact
from dialogue.suggest import Assist, Suggester, Suggestion
from dialogue.types import Turn
from speech import CallConfig, CallTranscriber, SpeechModels, Utterance

from .bus import CallMeta

log = logging.getLogger(__name__)

Publish = Callable[[CallEvent, CallMeta], None]


class CallInfo(BaseModel):
    """What a call is, validated at the edge (see `assist.runtime.CallInfo.from_params`)."""

    call_id: str = Field(min_length=1, max_length=128)
    agent_id: str | None = Field(None, max_length=128)
    campaign_id: str = Field("inbound", min_length=1, max_length=128)
    contact_id: str | None = Field(None, max_length=128)
    channel: Literal["human", "ai"] = "human"
    language: str | None = Field(None, description="a Whisper code; None: detect per turn")
    layout: Literal["mono", "stereo"] = "mono"
    channel_roles: list[Literal["agent", "customer", "unknown"]] | None = None
    first_speaker: Literal["agent", "customer"] | None = Field(
        "agent", description="mono: who speaks first (the agent answers an inbound call; on an "
        "outbound call the callee does); None: leave roles to the voice alone")


class SessionConfig(BaseModel):
    draft_interval_s: float = Field(0.15, description="at most one draft event this often")
    story_limit: int = Field(5000, description="events kept for a screen that (re)connects")
    llm: bool = True
    disclosure_grace_s: float = Field(
        4.0, description="how long after a disclosure's deadline to wait for the final of an "
        "utterance still being transcribed before calling it overdue")


@dataclass
class _Turn:
    seq: int
    role: Role
    text: str  # redacted
    revision: int = 0
    utterance_id: str | None = None
    intent: str | None = None


@dataclass
class _Pending:
    """The LLM reply being written for one customer turn."""

    suggestion_id: str
    seq: int
    task: asyncio.Task[None]


class CallSession:
    def __init__(self, info: CallInfo, speech: SpeechModels, suggester: Suggester | None,
                 publish: Publish, executor: Executor,
                 config: SessionConfig | None = None) -> None:
        self.info = info
        self.meta = CallMeta(info.call_id, info.agent_id, info.campaign_id)
        self.config = config or SessionConfig()
        self.suggester = suggester
        self._publish_to = publish
        self._executor = executor
        self.story: deque[CallEvent] = deque(maxlen=self.config.story_limit)
        self.skipped_frames = 0
        self.ended = False
        self._turns: list[_Turn] = []
        self._by_utterance: dict[str, _Turn] = {}
        self._shown: set[str] = set()
        self._pending: _Pending | None = None
        self._finals: asyncio.Queue[Utterance | None] = asyncio.Queue()
        self.disclosures = DisclosureTracker(automated=info.channel == "ai")
        self._audio_s = [0.0, 0.0]  # audio received per channel: the call's clock
        self._overdue_rules: set[str] = set()
        self._alerted: set[tuple[int, str]] = set()
        self._next_due = self._first_due()
        speech_config = CallConfig(call_id=info.call_id, layout=info.layout,
                                   provisional_finals=info.layout == "mono")
        speech_config.streaming.language = info.language
        speech_config.roles.first_speaker = info.first_speaker
        if info.channel_roles and info.layout == "stereo":
            speech_config.roles.channel_roles = list(info.channel_roles)
        self.transcriber = CallTranscriber(speech, speech_config, self._on_utterance)
        self._worker = asyncio.create_task(self._work(), name=f"call-{info.call_id}")
        self._end_lock = asyncio.Lock()

    # ---- the call's edges ----------------------------------------------------------------
    def start(self) -> None:
        i = self.info
        self._publish(CallStarted(call_id=i.call_id, campaign_id=i.campaign_id,
                                  contact_external_id=i.contact_id, channel=i.channel,
                                  agent_id=i.agent_id or "unassigned"))
        # Media only flows once the call is connected: a streamed call is an answered call.
        self._publish(CallAnswered(call_id=i.call_id))
        for rule in self.disclosures.rules:
            self._publish(DisclosureStatus(call_id=i.call_id, rule=rule.name, why=rule.why,
                                           due_s=rule.due_seconds, status="due"))

    def accept(self, channel: int, samples: np.ndarray, sample_rate: int) -> None:
        """Float32 samples of one channel at their own rate; returns at once."""
        if not self.ended:
            self.transcriber.accept(channel, samples, sample_rate)
            self._audio_s[channel] += len(samples) / sample_rate
            if self._next_due is not None and self.elapsed_s >= self._next_due:
                self._overdue()

    @property
    def writing_reply(self) -> bool:
        """Whether the LLM is writing a reply for this call now."""
        return self._pending is not None and not self._pending.task.done()

    @property
    def elapsed_s(self) -> float:
        """Seconds of the call so far, by its audio (a replay faster than real time agrees)."""
        return max(self._audio_s)

    async def end(self, reason: str | None = None) -> None:
        """Flush speech, let the last turn's cards out, record the end. Safe to call twice."""
        async with self._end_lock:
            if self.ended:
                return
            self.ended = True
            try:
                await self.transcriber.finish()
            except Exception:
                log.exception("call %s: speech failed while finishing; the words so far stay",
                              self.info.call_id)
            await self._finals.put(None)
            await self._worker
            pending = self._pending
            if pending is not None:
                # The agent may still read the reply for the customer's last words: let it
                # finish, within reason.
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(pending.task), 10.0)
                self._supersede("the call ended")
            self._publish(CallEnded(call_id=self.info.call_id, reason=reason))

    def feedback(self, suggestion_id: str, feedback: Literal["accepted", "dismissed"],
                 by: str | None) -> SuggestionFeedback:
        if suggestion_id not in self._shown:
            raise KeyError(suggestion_id)
        event = SuggestionFeedback(call_id=self.info.call_id, suggestion_id=suggestion_id,
                                   feedback=feedback, by=by)
        self._publish(event)
        return event

    # ---- speech -> turns -----------------------------------------------------------------
    async def push(self, u: Utterance) -> None:
        """An utterance as speech emits it (the transcriber's sink; tests feed this directly)."""
        await self._on_utterance(u)

    async def settled(self) -> None:
        """Wait until every final so far has been through dialogue (not the LLM's reply)."""
        await self._finals.join()

    async def _on_utterance(self, u: Utterance) -> None:
        if not u.final:
            self._publish(TranscriptPartial(
                call_id=u.call_id, utterance_id=u.utterance_id, channel=u.channel, role=u.role,
                speaker=u.speaker, start_s=u.start, end_s=max(u.end, u.start),
                text=redact(u.text).text, stable_text=redact(u.stable_text).text,
                language=u.language))
            return
        # Dialogue is slower than speech: queue, so the transcriber is never held up.
        self._finals.put_nowait(u)

    async def _work(self) -> None:
        while True:
            u = await self._finals.get()
            try:
                if u is None:
                    return
                await self._final(u)
            except Exception:
                log.exception("call %s: a turn failed in dialogue; the call goes on",
                              self.info.call_id)
            finally:
                self._finals.task_done()

    async def _final(self, u: Utterance) -> None:
        loop = asyncio.get_running_loop()
        role: Role = u.role
        replaced = self._by_utterance.get(u.replaces) if u.replaces else None
        if replaced is not None and replaced.revision == 0 and replaced.role == role \
                and replaced.text and not self._settled_part_changes(u, replaced):
            # The guess was right: the settled speaker only confirms it.
            replaced.revision = 1
            self._by_utterance[u.utterance_id] = replaced
            self._publish(self._utterance_event(replaced, u))
            return
        if replaced is not None and replaced.revision == 0:
            turn = replaced  # the same seq, now settled: a revision
            turn.revision, turn.role = 1, role
        else:
            turn = _Turn(seq=len(self._turns), role=role, text="")
            self._turns.append(turn)
        turn.utterance_id = u.utterance_id
        self._by_utterance[u.utterance_id] = turn
        checked = await loop.run_in_executor(self._executor, check, u.text,
                                             "agent" if role == "agent" else "customer")
        turn.text = checked.text
        if role != "customer":
            # A mono call's speaker not known yet may be the agent reading it out.
            self._disclosed(turn, u)
        if role == "agent" or self.suggester is None or self.info.channel == "ai":
            turn.intent = None
            self._publish(self._utterance_event(turn, u))
            self._agent_alerts(turn, checked.findings)
            return
        # The customer (or a party not yet known: better a card too many than none).
        history = self._history()
        try:
            assist: Assist = await loop.run_in_executor(
                self._executor, self.suggester.instant, self.info.call_id, history,
                u.language if u.language in ("en", "zh") else None)
        except Exception:
            # The words stay on screen and in the record; only this turn's cards are lost.
            log.exception("call %s: dialogue failed on turn %d", self.info.call_id, turn.seq)
            self._publish(self._utterance_event(turn, u))
            self._customer_alerts(turn, checked.findings)
            return
        turn.intent = assist.intent.label
        self._publish(self._utterance_event(turn, u))
        self._customer_alerts(turn, checked.findings)
        self._publish(IntentDetected(call_id=self.info.call_id, seq=turn.seq,
                                     intent=assist.intent.label,
                                     confidence=min(1.0, max(0.0, assist.intent.confidence)),
                                     top=[(k, float(p)) for k, p in assist.intent.top][:3],
                                     latency_ms=assist.intent_ms))
        self._cards(turn, u, assist, history)

    def _settled_part_changes(self, u: Utterance, turn: _Turn) -> bool:
        # A provisional utterance split into two speakers: its text differs from the guess.
        return redact(u.text).text != turn.text

    def _utterance_event(self, turn: _Turn, u: Utterance) -> UtteranceSaid:
        return UtteranceSaid(call_id=self.info.call_id, seq=turn.seq, revision=turn.revision,
                             utterance_id=u.utterance_id, channel=u.channel, role=turn.role,
                             speaker=u.speaker, provisional=u.provisional, start_s=u.start,
                             end_s=max(u.end, u.start), text=turn.text, language=u.language,
                             intent=turn.intent)

    def _history(self) -> list[Turn]:
        return [Turn(speaker="agent" if t.role == "agent" else "customer", text=t.text)
                for t in self._turns if t.text]

    # ---- dialogue -> cards ---------------------------------------------------------------
    def _cards(self, turn: _Turn, u: Utterance, assist: Assist, history: list[Turn]) -> None:
        assert self.suggester is not None
        latency = _since(u.audio_end_wallclock)
        self._supersede("the customer spoke again")
        if assist.override is not None:
            o = assist.override
            action = o.action or "transfer_to_human"
            self._publish(OverrideRaised(call_id=self.info.call_id, seq=turn.seq,
                                         action=action,  # type: ignore[arg-type]
                                         rule=o.rule, why=o.why))
            self._publish(ComplianceAlert(call_id=self.info.call_id, seq=turn.seq,
                                          kind="override", rule=o.rule, severity="critical",
                                          why=o.why, role="customer"))
            line = self.suggester.override_suggestion(assist)
            if line is not None:
                self._show(line, turn, assist, 0, latency, ())
            return
        cards = self.suggester.exemplar_suggestions(assist, history)
        for rank, (card, exemplar) in enumerate(cards[: self.suggester.config.k]):
            self._show(card, turn, assist, rank, latency, (exemplar,) if exemplar else ())
        if self.suggester.llm is not None and self.config.llm:
            sid = new_id()
            task = asyncio.create_task(self._llm_reply(sid, turn, u, assist, history),
                                       name=f"llm-{self.info.call_id}-{turn.seq}")
            self._pending = _Pending(sid, turn.seq, task)

    def _show(self, s: Suggestion, turn: _Turn, assist: Assist, rank: int,
              latency_ms: float | None, exemplars: tuple, suggestion_id: str | None = None
              ) -> None:
        by_call = {e.call_id: e for e in assist.exemplars}
        cited = list(exemplars) or [by_call[c] for c in s.grounded_in if c in by_call]
        sid = suggestion_id or new_id()
        self._shown.add(sid)
        self._publish(SuggestionShown(
            call_id=self.info.call_id, suggestion_id=sid, seq=turn.seq, rank=rank,
            source=s.source, text=s.text, intent=assist.intent.label,
            citations=[Citation(call_id=e.call_id, agent_id=e.agent_id, outcome=e.outcome,
                                score=e.score, context=redact(e.context).text) for e in cited],
            latency_ms=latency_ms))

    async def _llm_reply(self, sid: str, turn: _Turn, u: Utterance, assist: Assist,
                         history: list[Turn]) -> None:
        assert self.suggester is not None
        pending = self._pending
        pieces: list[str] = []
        last_draft = 0.0
        try:
            async for piece in self.suggester.generate(assist, history):
                pieces.append(piece)
                now = time.monotonic()
                if now - last_draft >= self.config.draft_interval_s:
                    last_draft = now
                    self._publish(SuggestionDraft(call_id=self.info.call_id, suggestion_id=sid,
                                                  seq=turn.seq, text=redact("".join(pieces)).text,
                                                  latency_ms=_since(u.audio_end_wallclock)))
        except LLMError as exc:
            self._withhold(sid, turn.seq, "llm_error", [], str(exc))
            return
        finally:
            if pending is not None and self._pending is pending:
                self._pending = None
        reply, findings = self.suggester.finish("".join(pieces), assist, history)
        if reply is None:
            self._withhold(sid, turn.seq, "guardrail" if findings else "empty",
                           [f.rule for f in findings], "; ".join(f.why for f in findings))
            return
        self._show(reply, turn, assist, 0, _since(u.audio_end_wallclock), (), sid)

    def _supersede(self, why: str) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and not pending.task.done():
            pending.task.cancel()
            self._withhold(pending.suggestion_id, pending.seq, "superseded", [], why)

    def _withhold(self, sid: str, seq: int, reason: Literal["guardrail", "llm_error",
                  "superseded", "empty"], rules: list[str], detail: str) -> None:
        self._publish(SuggestionWithheld(call_id=self.info.call_id, suggestion_id=sid, seq=seq,
                                         reason=reason, rules=rules, detail=detail[:500]))

    def _agent_alerts(self, turn: _Turn, findings: list) -> None:  # type: ignore[type-arg]
        for f in findings:
            if f.kind == "forbidden_claim":
                self._alert(turn, "forbidden_claim", f.rule, "critical", f.why)
            elif f.kind == "pii" and turn.role == "agent":
                self._alert(turn, "pii_spoken", f.rule, "warning", f.why)

    def _customer_alerts(self, turn: _Turn, findings: list) -> None:  # type: ignore[type-arg]
        # What the customer reads out is redacted before anyone sees it; the agent is told, so
        # they do not ask for it again or write it down.
        kinds = sorted({f.rule for f in findings if f.kind == "pii"})
        if kinds:
            self._alert(turn, "pii_spoken", kinds[0], "info",
                        f"the customer said a {', '.join(k.replace('_', ' ') for k in kinds)}: "
                        "redacted from the transcript "
                        "and the record; do not write it down")

    def _alert(self, turn: _Turn, kind: Literal["forbidden_claim", "pii_spoken"], rule: str,
               severity: Literal["info", "warning", "critical"], why: str) -> None:
        # A speaker correction re-reads the same words: one alert per line and rule.
        if (turn.seq, rule) in self._alerted:
            return
        self._alerted.add((turn.seq, rule))
        self._publish(ComplianceAlert(call_id=self.info.call_id, seq=turn.seq, kind=kind,
                                      rule=rule[:128], severity=severity, why=why[:500],
                                      role=turn.role))

    # ---- disclosures ---------------------------------------------------------------------
    def _first_due(self) -> float | None:
        dues = [r.due_seconds for r in self.disclosures.rules
                if r.due_seconds is not None and r.name not in self.disclosures.made
                and r.name not in self._overdue_rules]
        return min(dues) + self.config.disclosure_grace_s if dues else None

    def _disclosed(self, turn: _Turn, u: Utterance) -> None:
        for name in self.disclosures.hear(turn.text, "agent", u.start):
            rule = next(r for r in self.disclosures.rules if r.name == name)
            self._publish(DisclosureStatus(call_id=self.info.call_id, rule=name, why=rule.why,
                                           due_s=rule.due_seconds, status="made",
                                           said_at_s=u.start, seq=turn.seq))
        self._next_due = self._first_due()

    def _overdue(self) -> None:
        """Disclosures whose deadline (plus the grace for a final still on its way) the call's
        audio has passed: each reported once, as a status and as a compliance alert."""
        now = self.elapsed_s - self.config.disclosure_grace_s
        for finding in self.disclosures.overdue(now):
            rule = next(r for r in self.disclosures.rules if r.name == finding.rule)
            self._overdue_rules.add(rule.name)
            self._publish(DisclosureStatus(call_id=self.info.call_id, rule=rule.name,
                                           why=rule.why, due_s=rule.due_seconds,
                                           status="overdue"))
            self._publish(ComplianceAlert(
                call_id=self.info.call_id, kind="disclosure_missing", rule=rule.name,
                severity="warning", role="agent",
                why=f"not said within {rule.due_seconds:g} s: {rule.why}"[:500]))
        self._next_due = self._first_due()

    # ---- out -----------------------------------------------------------------------------
    def _publish(self, event: CallEvent) -> None:
        if event.type not in ("transcript_partial", "suggestion_draft"):
            self.story.append(event)
        try:
            self._publish_to(event, self.meta)
        except Exception:
            log.exception("call %s: publishing %s failed", self.info.call_id, event.type)


def _since(wallclock: float | None) -> float | None:
    return None if wallclock is None else max(0.0, (time.monotonic() - wallclock) * 1000)
