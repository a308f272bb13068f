"""The call events the store ingests: the stored subset of the one vocabulary in core.events.

Every event carries a unique `event_id` (a UUID the producer makes once), so delivering an event
twice (a retry, an outbox flush after an outage) changes nothing. Events of one call may arrive
in any order; the store projects them into calls, utterances, suggestions and outcomes, and keeps
the rest (alerts, overrides, withheld suggestions, what the bot said) in the events log.
"""

from __future__ import annotations

from core.events import (
    STORED_ADAPTER,
    STORED_TYPES,
    CallAnswered,
    CallEnded,
    CallStarted,
    Channel,
    ComplianceAlert,
    Disposition,
    OverrideRaised,
    StoredEvent,
    SuggestionFeedback,
    SuggestionShown,
    SuggestionWithheld,
    UtteranceSaid,
)

CallEvent = StoredEvent
EVENT_ADAPTER = STORED_ADAPTER

__all__ = [
    "EVENT_ADAPTER", "STORED_TYPES", "CallAnswered", "CallEnded", "CallEvent", "CallStarted",
    "Channel", "ComplianceAlert", "Disposition", "OverrideRaised", "SuggestionFeedback",
    "SuggestionShown", "SuggestionWithheld", "UtteranceSaid", "parse_event",
]


def parse_event(raw: str | bytes | dict) -> CallEvent:  # type: ignore[type-arg]
    """One stored event from JSON text or a dict; raises pydantic.ValidationError."""
    if isinstance(raw, dict):
        return EVENT_ADAPTER.validate_python(raw)
    return EVENT_ADAPTER.validate_json(raw)
