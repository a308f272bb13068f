"""What a supervisor's list shows of each call, kept up to date from the call's own events.

A stage like every other: feed it events, read `summary()`. The runtime keeps one per live or
recently ended call, so `GET /api/calls` answers without replaying anyone's story.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from core.events import CallEvent, Disposition


class CallSummary(BaseModel):
    call_id: str
    agent_id: str | None
    campaign_id: str
    started_at: datetime | None = None
    ended_at: datetime | None = Field(None, description="None while the call is live")
    live: bool = True
    intent: str | None = Field(None, description="the customer's latest intent")
    open_alerts: int = Field(0, description="alerts not resolved since: forbidden claims, "
                             "card numbers read out, overrides, disclosures still overdue")
    cards_shown: int = 0
    accepted: int = 0
    dismissed: int = 0
    acceptance: float | None = Field(None, description="accepted / cards shown so far")
    disposition: Disposition | None = None
    wrapped_up: bool = False


class SummaryTracker:
    def __init__(self, call_id: str, agent_id: str | None, campaign_id: str) -> None:
        self._summary = CallSummary(call_id=call_id, agent_id=agent_id, campaign_id=campaign_id)
        self._shown: set[str] = set()
        self._feedback: dict[str, str] = {}
        self._alerts: set[str] = set()  # event ids of open alerts
        self._overdue: dict[str, str] = {}  # disclosure rule -> its alert's event id

    def observe(self, event: CallEvent) -> None:
        s = self._summary
        match event.type:
            case "call_started":
                s.started_at = event.at
            case "intent":
                s.intent = event.intent
            case "suggestion_shown":
                self._shown.add(event.suggestion_id)
            case "suggestion_feedback":
                self._feedback[event.suggestion_id] = event.feedback  # the latest counts
            case "compliance_alert" if event.severity != "info":
                self._alerts.add(str(event.event_id))
                if event.kind == "disclosure_missing":
                    self._overdue[event.rule] = str(event.event_id)
            case "disclosure" if event.status == "made" and event.rule in self._overdue:
                self._alerts.discard(self._overdue.pop(event.rule))
            case "call_ended":
                s.live = False
                s.ended_at = s.ended_at or event.at
                if event.disposition is not None:
                    s.disposition, s.wrapped_up = event.disposition, True
            case _:
                pass

    def summary(self) -> CallSummary:
        s = self._summary.model_copy()
        s.cards_shown = len(self._shown)
        s.accepted = sum(1 for f in self._feedback.values() if f == "accepted")
        s.dismissed = sum(1 for f in self._feedback.values() if f == "dismissed")
        s.acceptance = s.accepted / s.cards_shown if s.cards_shown else None
        s.open_alerts = len(self._alerts)
        return s
