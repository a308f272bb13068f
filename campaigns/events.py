"""The call events the store ingests: the contract between the call runtime and the database.

Every event carries a unique `event_id` (a UUID the producer makes once), so delivering an event
twice (a retry, an outbox flush after an outage) changes nothing. Events of one call may arrive
in any order; the store projects them into calls, utterances, suggestions and outcomes.
"""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

Channel = Literal["ai", "human"]
Disposition = Literal["converted", "declined", "call_back", "do_not_call", "hand_off",
                      "no_answer", "busy", "voicemail", "failed"]


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: UUID
    call_id: str = Field(min_length=1, max_length=128)
    at: AwareDatetime


class CallStarted(_Event):
    type: Literal["call_started"] = "call_started"
    campaign_id: str = Field(min_length=1)
    contact_external_id: str | None = None
    channel: Channel
    agent_id: str = Field(min_length=1, description="human agent id, or the bot flow id")


class CallAnswered(_Event):
    type: Literal["call_answered"] = "call_answered"


class UtteranceSaid(_Event):
    type: Literal["utterance"] = "utterance"
    seq: int = Field(ge=0)
    role: Literal["agent", "bot", "customer", "unknown"]
    start_s: float = Field(ge=0)
    end_s: float = Field(ge=0)
    text: str = Field(description="redacted again by the store before it is written")
    intent: str | None = None


class SuggestionShown(_Event):
    type: Literal["suggestion_shown"] = "suggestion_shown"
    suggestion_id: str = Field(min_length=1)
    source: Literal["llm", "exemplar", "override"]
    text: str
    latency_ms: float | None = Field(None, ge=0)


class SuggestionFeedback(_Event):
    type: Literal["suggestion_feedback"] = "suggestion_feedback"
    suggestion_id: str = Field(min_length=1)
    feedback: Literal["accepted", "dismissed"]


class CallEnded(_Event):
    type: Literal["call_ended"] = "call_ended"
    disposition: Disposition


CallEvent = Annotated[
    CallStarted | CallAnswered | UtteranceSaid | SuggestionShown | SuggestionFeedback | CallEnded,
    Field(discriminator="type"),
]
EVENT_ADAPTER: TypeAdapter[CallEvent] = TypeAdapter(CallEvent)


def parse_event(raw: str | bytes | dict) -> CallEvent:  # type: ignore[type-arg]
    """One event from JSON text or a dict; raises pydantic.ValidationError with every problem."""
    if isinstance(raw, dict):
        return EVENT_ADAPTER.validate_python(raw)
    return EVENT_ADAPTER.validate_json(raw)
