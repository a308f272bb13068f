"""Outbound-call flow engine: the script decides every bot turn; an LLM only answers questions.

A `Flow` (YAML, see `flow_schema`) is checked in full when it is loaded. A `FlowSession` plays
it for one call: `start()` gives the opening line, `await hear(text)` the reply to each customer
utterance. Order of precedence on every utterance:

1. customer overrides: a guardrail opt-out or hand-off finding, or the intents `stop_calling`,
   `ask_for_human`, `complaint`, end the call at once whatever the state;
2. the state's `on` transition for the predicted intent;
3. the state's `fill` slot, when the utterance holds a value for it;
4. a free question (out of scope, or a question intent) where the state allows them: answered by
   the `FreeQuestionAnswerer`, then the state's `resume` line; the answer never moves the call;
5. otherwise a reprompt, and after `retries` of them the state's `fallback`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import date
from typing import Literal, Protocol

from pydantic import BaseModel, Field, computed_field

from . import guardrails
from .flow_check import iter_lines
from .flow_schema import (
    GLOBAL_INTENTS,
    OVERRIDE_EXITS,
    ExitName,
    Flow,
    FlowError,
    SlotSpec,
    State,
    Transition,
    placeholders,
    render,
)
from .flow_slots import SlotValue, extract
from .types import IntentClassifier, IntentPrediction

__all__ = [
    "BotTurn",
    "Exchange",
    "Flow",
    "FlowError",
    "FlowFinishedError",
    "FlowSession",
    "FreeQuestionAnswerer",
    "SlotSpec",
    "SlotValue",
    "Transition",
]

log = logging.getLogger(__name__)

AnsweredBy = Literal["script", "llm"]


class FreeQuestionAnswerer(Protocol):
    async def answer(self, question: str, state: str, flow: Flow) -> str: ...


class FlowFinishedError(RuntimeError):
    """The session is not in a state to hear the customer (not started, or the call ended)."""


class BotTurn(BaseModel):
    text: str = Field(description="what the bot says")
    state: str = Field(description="the state after this turn (where the call ended, if it did)")
    intent: IntentPrediction | None = Field(None, description="the prediction for the utterance")
    slots: dict[str, SlotValue] = Field(default_factory=dict, description="filled so far")
    exit: ExitName | None = None
    reason: str = Field(description="why the engine said this, step by step")
    answered_by: AnsweredBy = "script"
    guardrail: guardrails.Finding | None = Field(None, description="the override that ended it")

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented idiom
    @property
    def done(self) -> bool:
        return self.exit is not None


class Exchange(BaseModel):
    customer: str | None = Field(description="the utterance (redacted); None for the opening")
    intent: IntentPrediction | None
    bot: BotTurn


@dataclass
class _Reply:
    lines: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    exit: ExitName | None = None
    answered_by: AnsweredBy = "script"
    guardrail: guardrails.Finding | None = None


class FlowSession:
    """One outbound call playing one flow."""

    def __init__(
        self,
        flow: Flow,
        classifier: IntentClassifier,
        variables: dict[str, str],
        answerer: FreeQuestionAnswerer | None = None,
        *,
        today: date | None = None,
        answer_timeout_s: float = 8.0,
    ) -> None:
        _check_override_actions()
        self.flow = flow
        self.classifier = classifier
        self.variables = _call_variables(flow, variables)
        self.answerer = answerer
        self.today = today or date.today()  # dates the customer says are resolved against it
        self.answer_timeout_s = answer_timeout_s
        self.state = flow.start_state
        self.slots: dict[str, SlotValue] = {}
        self.history: list[Exchange] = []
        self.exit: ExitName | None = None
        self._started = False
        self._turns = 0
        self._retries = 0  # no-match turns in the current visit of `state`
        self._questions = 0  # free questions answered in the current visit

    @property
    def done(self) -> bool:
        return self.exit is not None

    def start(self) -> BotTurn:
        if self._started:
            raise FlowFinishedError("start() was already called for this session")
        self._started = True
        reply = _Reply(steps=["start"])
        self._enter(self.flow.start_state, "", reply, frozenset())
        return self._record(None, None, reply)

    async def hear(self, text: str) -> BotTurn:
        if not self._started:
            raise FlowFinishedError("call start() before hear()")
        if self.exit is not None:
            raise FlowFinishedError(
                f"the call has ended ({self.exit}, in state {self.state!r}); hear() cannot go on"
            )
        checked = guardrails.check(text, "customer")
        heard = checked.text  # redacted: card numbers reach neither the model nor the history
        intent = self.classifier.predict(heard) if heard.strip() else None
        self._turns += 1
        reply = self._customer_override(checked.override, intent)
        if reply is None:
            reply = await self._in_state(heard, intent)
        return self._record(heard, intent, reply)

    # ---- deciding --------------------------------------------------------------------------

    def _customer_override(
        self, override: guardrails.Finding | None, intent: IntentPrediction | None
    ) -> _Reply | None:
        reply = _Reply()
        if override is not None:
            reply.guardrail = override
            reply.steps.append(f"guardrail {override.rule}: {override.why}")
            self._end(OVERRIDE_EXITS[override.action or ""], reply)
        elif intent is not None and intent.label in GLOBAL_INTENTS:
            reply.steps.append(f"intent {intent.label}")
            self._end(GLOBAL_INTENTS[intent.label], reply)
        elif self._turns > self.flow.max_turns:
            # A call going round in circles is better finished by a person.
            reply.steps.append(f"{self.flow.max_turns} turns without an outcome")
            self._end("hand_off", reply)
        else:
            return None
        return reply

    async def _in_state(self, heard: str, intent: IntentPrediction | None) -> _Reply:
        state = self._current
        reply = _Reply()
        if intent is not None and (transition := state.on.get(intent.label)) is not None:
            reply.steps.append(f"intent {intent.label}")
            self._follow(transition, heard, reply, frozenset())
        elif state.fill and (value := self._extract(state.fill, heard)) is not None:
            self._fill(state.fill, value, reply)
            assert state.next is not None, "checked at load time"
            self._follow(state.next, heard, reply, frozenset({self.state}))
        elif self._is_free_question(state, intent):
            await self._answer(heard, intent, reply)
        else:
            self._no_match(intent, reply)
        return reply

    def _is_free_question(self, state: State, intent: IntentPrediction | None) -> bool:
        if not state.free_questions or intent is None:
            return False
        if self._questions >= self.flow.max_free_questions:
            return False  # keeps the call moving; further questions count as no match
        return not intent.in_scope or intent.label in self.flow.question_intents

    def _follow(
        self, transition: Transition, heard: str, reply: _Reply, visited: frozenset[str]
    ) -> None:
        if transition.say:
            reply.lines.append(self._render(transition.say))
        if transition.exit is not None:
            self._end(transition.exit, reply, own_line=transition.say is not None)
        elif transition.stay:
            reply.steps.append(f"stay in {self.state}")
            if not transition.say:
                reply.lines.append(self._render(self.flow.reprompt_for(self.state)))
        else:
            assert transition.to is not None
            self._enter(transition.to, heard, reply, visited)

    def _enter(self, name: str, heard: str, reply: _Reply, visited: frozenset[str]) -> None:
        """Move to state `name`. If the utterance that led here already holds the state's slot
        ("busy, call me tomorrow at 3"), fill it and go straight on instead of asking for it."""
        self.state, self._retries, self._questions = name, 0, 0
        reply.steps.append(name)
        state = self._current
        if state.fill and name not in visited and heard:
            value = self._extract(state.fill, heard)
            if value is not None:
                self._fill(state.fill, value, reply)
                assert state.next is not None, "checked at load time"
                self._follow(state.next, heard, reply, visited | {name})
                return
        reply.lines.append(self._render(state.say))

    def _no_match(self, intent: IntentPrediction | None, reply: _Reply) -> None:
        heard_as = intent.label if intent is not None else "nothing heard"
        allowed = self.flow.retries_for(self.state)
        if self._retries < allowed:
            self._retries += 1
            reply.steps.append(f"no match ({heard_as}): reprompt {self._retries} of {allowed}")
            reply.lines.append(self._render(self.flow.reprompt_for(self.state)))
            return
        reply.steps.append(f"{allowed} retries without a match ({heard_as})")
        # The utterance matched nothing, so it is not read again for a slot on the way out.
        self._follow(self.flow.fallback_for(self.state), "", reply, frozenset())

    async def _answer(self, question: str, intent: IntentPrediction | None, reply: _Reply) -> None:
        self._questions += 1
        label = intent.label if intent is not None else "?"
        answer, why = await self._ask_answerer(question)
        if answer is not None:
            reply.lines.append(answer)
            reply.answered_by = "llm"
            reply.steps.append(f"free question ({label}) answered by the LLM")
        else:
            reply.lines.append(self._render(self.flow.no_answer_for(self.state)))
            reply.steps.append(f"free question ({label}): {why}, no_answer line")
        reply.lines.append(self._render(self.flow.resume_for(self.state)))
        reply.steps.append(f"resume {self.state}")

    async def _ask_answerer(self, question: str) -> tuple[str | None, str]:
        """(answer, why not): the answer only if it arrived in time and passes the guardrails."""
        if self.answerer is None:
            return None, "no answerer"
        try:
            async with asyncio.timeout(self.answer_timeout_s):
                answer = await self.answerer.answer(question, self.state, self.flow)
        except TimeoutError:
            return None, f"no answer within {self.answer_timeout_s:g} s"
        except Exception as e:  # a failing LLM must not drop the call: the script covers for it
            log.warning("free-question answerer failed in state %s: %r", self.state, e)
            return None, f"the answerer failed ({type(e).__name__})"
        checked = guardrails.check(answer.strip(), "bot")
        if not checked.text:
            return None, "empty answer"
        if checked.blocked:
            rule = next(f.rule for f in checked.findings if f.kind == "forbidden_claim")
            return None, f"answer withheld (forbidden claim {rule})"
        if any(f.kind == "pii" for f in checked.findings):
            return None, "answer withheld (it contains personal data)"
        return checked.text, "answered"

    # ---- state changes ---------------------------------------------------------------------

    def _end(self, exit_name: ExitName, reply: _Reply, own_line: bool = False) -> None:
        if not own_line:
            reply.lines.append(self._render(self.flow.exits[exit_name].say))
        reply.steps.append(f"exit {exit_name}")
        reply.exit = self.exit = exit_name

    def _fill(self, slot: str, value: SlotValue, reply: _Reply) -> None:
        self.slots[slot] = value
        reply.steps.append(f"slot {slot} = {value.value!r}")

    def _extract(self, slot: str, heard: str) -> SlotValue | None:
        return extract(self.flow.slots[slot], heard, self.today)

    def _record(self, heard: str | None, intent: IntentPrediction | None, reply: _Reply) -> BotTurn:
        joiner = "" if self.flow.language == "zh" else " "
        turn = BotTurn(
            text=joiner.join(reply.lines),
            state=self.state,
            intent=intent,
            slots=dict(self.slots),
            exit=reply.exit,
            reason=" → ".join(reply.steps),
            answered_by=reply.answered_by,
            guardrail=reply.guardrail,
        )
        self.history.append(Exchange(customer=heard, intent=intent, bot=turn))
        return turn

    @property
    def _current(self) -> State:
        return self.flow.states[self.state]

    def _render(self, line: str) -> str:
        return render(line, self.variables | {k: v.say for k, v in self.slots.items()})


def _call_variables(flow: Flow, given: dict[str, str]) -> dict[str, str]:
    """The flow's call variables from `given`; missing ones fail now, not mid-call."""
    values = {name: str(given.get(name, "")).strip() for name in flow.variables}
    missing = [name for name, value in values.items() if not value]
    if missing:
        uses = {name: _first_use(flow, name) for name in missing}
        listed = ", ".join(f"{name} (used in {where})" for name, where in uses.items())
        raise FlowError(f"flow {flow.id!r} needs call variable(s): {listed}")
    slot_names = {slot: slot for slot in flow.slots}
    for line in iter_lines(flow):
        checked = guardrails.check(render(line.text, values | slot_names), "bot")
        if checked.blocked:
            finding = next(f for f in checked.findings if f.kind == "forbidden_claim")
            raise FlowError(
                f"flow {flow.id!r}: with these call variables {line.where} makes a forbidden "
                f"claim {finding.rule} ({finding.why}): {finding.evidence!r}"
            )
    return values


def _first_use(flow: Flow, variable: str) -> str:
    return next(
        (line.where for line in iter_lines(flow) if variable in placeholders(line.text)),
        "no line",
    )


def _check_override_actions() -> None:
    for rule in guardrails.load_rules().override:
        if rule.action not in OVERRIDE_EXITS:
            raise FlowError(
                f"guardrail override {rule.name!r} has action {rule.action!r}, which the flow "
                f"engine cannot carry out (known: {', '.join(OVERRIDE_EXITS)})"
            )
