"""The one event vocabulary of a call: every stage takes these in and passes these on.

A live call is a stream of events, each a small pydantic model discriminated on `type` (the
model is Pipecat's frames): speech stages emit transcript events, dialogue emits intents,
suggestions and alerts, the sidebar answers with feedback, the store persists a subset of the
same events (`STORED_TYPES`), never a second vocabulary.

Every event carries a unique `event_id` (made once by its producer, so a redelivery after an
outage is recognised), the `call_id` it belongs to and the wall time `at` it happened.
Transcript events carry `seq`, the index of the final utterance in the call: a later event with
the same `seq` and a higher `revision` replaces the earlier one (a speaker correction).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

# -- shared literals: defined here once, imported everywhere else -------------------------------
Role = Literal["agent", "customer", "bot", "unknown"]
"""Who spoke: the human agent, the customer, the voice bot, or not known (yet)."""
SpeakerRole = Literal["agent", "customer", "unknown"]
"""The roles speech can assign from audio (the bot's lines are known, not recognised)."""
Channel = Literal["ai", "human"]
"""Who handled the call for the campaign: the voice bot or a human agent."""
Disposition = Literal["converted", "declined", "call_back", "do_not_call", "hand_off",
                      "no_answer", "busy", "voicemail", "failed"]
"""How a call ended, as the campaign counts it."""
Outcome = Literal["converted", "engaged", "not_converted"]
"""A historical call's result, as the playbook ranks agents by it."""
SuggestionSource = Literal["llm", "exemplar", "policy", "override"]
Feedback = Literal["accepted", "dismissed"]
OverrideAction = Literal["stop_and_add_to_do_not_call", "transfer_to_human"]
AlertSeverity = Literal["info", "warning", "critical"]

_ID = Field(min_length=1, max_length=128)


def now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: UUID = Field(default_factory=uuid4)
    call_id: str = _ID
    at: AwareDatetime = Field(default_factory=now)


# -- the call's life --------------------------------------------------------------------------
class CallStarted(Event):
    type: Literal["call_started"] = "call_started"
    campaign_id: str = _ID
    contact_external_id: str | None = Field(None, max_length=128)
    channel: Channel
    agent_id: str = Field(min_length=1, max_length=128,
                          description="human agent id, or the bot flow id")


class CallAnswered(Event):
    type: Literal["call_answered"] = "call_answered"


_FREE = {"free_text": True}  # what someone wrote: the store redacts it (campaigns.validate)


class WrapUpNote(BaseModel):
    """The after-call note an agent saves with the disposition (drafted for them, editable)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", max_length=500, description="why the customer called (or was "
                        "called)", json_schema_extra=_FREE)
    agreed: str = Field("", max_length=1000, description="what was agreed or decided",
                        json_schema_extra=_FREE)
    next_step: str = Field("", max_length=500, description="who does what next, and when",
                           json_schema_extra=_FREE)


class CallEnded(Event):
    type: Literal["call_ended"] = "call_ended"
    disposition: Disposition | None = Field(
        None, description="None: the call ended with no outcome recorded (yet); a later "
        "call_ended with one (the agent's wrap-up) wins")
    reason: str | None = Field(None, max_length=500,
                               description="why the call ended, when not a normal hang-up")
    note: WrapUpNote | None = Field(None, description="the agent's wrap-up note")
    by: str | None = Field(None, max_length=128, description="the user who wrapped it up")


class WrapUpDrafted(Event):
    """A wrap-up note written for the agent from the redacted transcript, after the call: an
    extractive one at once, then the LLM's when it is ready (a screen keeps the agent's edits)."""

    type: Literal["wrap_up_draft"] = "wrap_up_draft"
    note: WrapUpNote
    source: Literal["llm", "extractive"]


# -- speech -----------------------------------------------------------------------------------
class SpeechStarted(Event):
    type: Literal["speech_started"] = "speech_started"
    channel: int = Field(0, ge=0, le=1)
    role: Role = "unknown"
    start_s: float = Field(ge=0)


class SpeechStopped(Event):
    type: Literal["speech_stopped"] = "speech_stopped"
    channel: int = Field(0, ge=0, le=1)
    role: Role = "unknown"
    end_s: float = Field(ge=0)


class TranscriptPartial(Event):
    """Provisional words of an utterance still being spoken; superseded by the next partial of
    the same `utterance_id` and, in the end, by its final."""

    type: Literal["transcript_partial"] = "transcript_partial"
    utterance_id: str = _ID
    channel: int = Field(0, ge=0, le=1)
    role: Role = "unknown"
    speaker: str | None = Field(None, max_length=64)
    start_s: float = Field(ge=0)
    end_s: float = Field(ge=0)
    text: str
    stable_text: str = ""
    language: str | None = Field(None, max_length=16)


class UtteranceSaid(Event):
    """A final utterance: its words never change. With `provisional`, the speaker is the
    diarizer's first guess (mono calls); a later revision of the same `seq` settles it."""

    type: Literal["utterance"] = "utterance"
    seq: int = Field(ge=0)
    revision: int = Field(0, ge=0)
    utterance_id: str | None = Field(None, max_length=128)
    channel: int = Field(0, ge=0, le=1)
    role: Role
    speaker: str | None = Field(None, max_length=64)
    provisional: bool = False
    start_s: float = Field(ge=0)
    end_s: float = Field(ge=0)
    text: str = Field(description="redacted again by the store before it is written")
    language: str | None = Field(None, max_length=16)
    intent: str | None = Field(None, max_length=64)


# -- dialogue ---------------------------------------------------------------------------------
class IntentDetected(Event):
    type: Literal["intent"] = "intent"
    seq: int = Field(ge=0, description="the customer utterance it was read from")
    intent: str = Field(max_length=64)
    confidence: float = Field(ge=0, le=1)
    top: list[tuple[str, float]] = Field(default_factory=list)
    latency_ms: float | None = Field(None, ge=0)


class Citation(BaseModel):
    """Where an exemplar came from: a top agent's reply on a real call, and how it ended."""

    model_config = ConfigDict(extra="forbid")

    call_id: str = Field(max_length=128)
    agent_id: str = Field(max_length=128)
    outcome: Outcome
    score: float | None = None
    context: str = Field("", description="the customer's words that agent answered (redacted)")


class SuggestionDraft(Event):
    """The LLM's reply as it streams, not yet guarded: the sidebar shows it as a draft only."""

    type: Literal["suggestion_draft"] = "suggestion_draft"
    suggestion_id: str = _ID
    seq: int = Field(ge=0)
    text: str = Field(description="the draft so far")
    latency_ms: float | None = Field(None, ge=0, description="since the customer's audio "
                                     "ended (the first draft's is the LLM's first text)")


class SuggestionShown(Event):
    type: Literal["suggestion_shown"] = "suggestion_shown"
    suggestion_id: str = _ID
    seq: int | None = Field(None, ge=0, description="the customer utterance it answers")
    rank: int = Field(0, ge=0, description="0: the first card the agent sees")
    source: SuggestionSource
    text: str
    intent: str | None = Field(None, max_length=64)
    citations: list[Citation] = Field(default_factory=list)
    latency_ms: float | None = Field(None, ge=0,
                                     description="end of the customer's speech -> this card")


class SuggestionWithheld(Event):
    """An LLM reply the agent will not see, and why (a guardrail, the LLM down, superseded)."""

    type: Literal["suggestion_withheld"] = "suggestion_withheld"
    suggestion_id: str = _ID
    seq: int | None = Field(None, ge=0)
    reason: Literal["guardrail", "llm_error", "superseded", "empty"]
    rules: list[str] = Field(default_factory=list)
    detail: str = Field("", max_length=500)


class SuggestionFeedback(Event):
    type: Literal["suggestion_feedback"] = "suggestion_feedback"
    suggestion_id: str = _ID
    feedback: Feedback
    by: str | None = Field(None, max_length=128, description="the user who gave it")


class ComplianceAlert(Event):
    type: Literal["compliance_alert"] = "compliance_alert"
    seq: int | None = Field(None, ge=0)
    kind: Literal["forbidden_claim", "pii_spoken", "disclosure_missing", "override"]
    rule: str = Field(max_length=128)
    severity: AlertSeverity = "warning"
    why: str = Field(max_length=500)
    role: Role = "unknown"


class DisclosureStatus(Event):
    """Where a required disclosure stands on our side of the call: `due` at the start (with its
    deadline, seconds into the call), then `made` when it is said or `overdue` when the deadline
    passed without it (a ComplianceAlert goes with that)."""

    type: Literal["disclosure"] = "disclosure"
    rule: str = Field(max_length=128)
    why: str = Field(max_length=500)
    due_s: float | None = Field(None, ge=0, description="None: before the call ends")
    status: Literal["due", "made", "overdue"]
    said_at_s: float | None = Field(None, ge=0)
    seq: int | None = Field(None, ge=0, description="the utterance that made it")


class OverrideRaised(Event):
    """The customer opted out or asked for a human: everything else yields to this."""

    type: Literal["override"] = "override"
    seq: int = Field(ge=0)
    action: OverrideAction
    rule: str = Field(max_length=128)
    why: str = Field(max_length=500)


# -- the voice bot (outbound calls) -----------------------------------------------------------
class BotSay(Event):
    type: Literal["bot_say"] = "bot_say"
    say_id: str = _ID
    text: str


class BotSaid(Event):
    """What the callee actually heard: the text up to where playback stopped."""

    type: Literal["bot_said"] = "bot_said"
    say_id: str = _ID
    text: str
    interrupted: bool = False


CallEvent = Annotated[
    CallStarted | CallAnswered | CallEnded | SpeechStarted | SpeechStopped | TranscriptPartial
    | UtteranceSaid | IntentDetected | SuggestionDraft | SuggestionShown | SuggestionWithheld
    | SuggestionFeedback | ComplianceAlert | DisclosureStatus | OverrideRaised | BotSay | BotSaid
    | WrapUpDrafted,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[CallEvent] = TypeAdapter(CallEvent)

# What the system of record keeps of a call: the rest (partials, drafts, speech edges) is live
# state for screens, worthless once the call is over.
StoredEvent = Annotated[
    CallStarted | CallAnswered | CallEnded | UtteranceSaid | SuggestionShown | SuggestionWithheld
    | SuggestionFeedback | ComplianceAlert | OverrideRaised | BotSaid,
    Field(discriminator="type"),
]
STORED_ADAPTER: TypeAdapter[StoredEvent] = TypeAdapter(StoredEvent)
STORED_TYPES = frozenset(
    cls.model_fields["type"].default
    for cls in (CallStarted, CallAnswered, CallEnded, UtteranceSaid, SuggestionShown,
                SuggestionWithheld, SuggestionFeedback, ComplianceAlert, OverrideRaised, BotSaid)
)


def parse_event(raw: str | bytes | dict) -> CallEvent:  # type: ignore[type-arg]
    """Any event from JSON text or a dict; raises pydantic.ValidationError with every problem."""
    if isinstance(raw, dict):
        return EVENT_ADAPTER.validate_python(raw)
    return EVENT_ADAPTER.validate_json(raw)
