"""Typed results that leave `dialogue/`: the contract other packages (and the CLI) rely on."""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import BaseModel, Field

from core.events import Outcome

OUT_OF_SCOPE = "out_of_scope"
# Customer intents that override everything else in a call, with the guardrail action
# (rules/guardrails.toml) each one means; a matching guardrail phrase means the same.
OVERRIDE_INTENT_ACTIONS = {
    "stop_calling": "stop_and_add_to_do_not_call",
    "ask_for_human": "transfer_to_human",
    "complaint": "transfer_to_human",
}


class IntentPrediction(BaseModel):
    label: str = Field(description=f"the intent, or '{OUT_OF_SCOPE}' below the model's threshold")
    confidence: float = Field(ge=0.0, le=1.0, description="probability of the best intent")
    best: str = Field(description="the best intent even when it fell below the threshold")
    top: list[tuple[str, float]] = Field(default_factory=list, description="top-3 (intent, p)")

    @property
    def in_scope(self) -> bool:
        return self.label != OUT_OF_SCOPE


class IntentClassifier(Protocol):
    def predict(self, text: str) -> IntentPrediction: ...


class Turn(BaseModel):
    speaker: Literal["agent", "customer"]
    text: str


class CallRecord(BaseModel):
    """One historical call: who handled it, what was said, and how it ended."""

    call_id: str
    agent_id: str
    language: str = "en"
    scenario: str = ""
    outcome: Outcome
    turns: list[Turn]


class Exemplar(BaseModel):
    """A top agent's reply in a situation like the live one, with where it came from."""

    context: str = Field(description="the customer's words the agent answered (redacted)")
    reply: str = Field(description="what the agent said next (redacted)")
    intent: str | None = None
    call_id: str
    agent_id: str
    outcome: Outcome
    language: str
    score: float = Field(description="cosine similarity to the live context")
    accepted: int = Field(0, description="times agents accepted this reply as a card")
    dismissed: int = Field(0, description="times agents dismissed it")

    @property
    def demoted(self) -> bool:
        """Agents keep dismissing it: it goes below the cards they take."""
        return is_demoted(self.accepted, self.dismissed)


def is_demoted(accepted: int, dismissed: int) -> bool:
    return dismissed >= 3 and dismissed >= 2 * accepted
