"""The outbound-call flow format: pydantic models for a scripted flow and how it is loaded.

A flow is data (a YAML file; the examples ship in `dialogue/data/flows/`): states with the bot's
lines, intent-driven transitions, slots, retries and exits. Structure is checked here; what needs
the whole flow (reachability, disclosures, forbidden claims, template variables) is checked in
`flow_check`.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .types import OVERRIDE_INTENT_ACTIONS

ExitName = Literal["converted", "declined", "call_back", "do_not_call", "hand_off"]
SlotType = Literal["months", "time_phrase", "amount", "date"]
Language = Literal["en", "zh"]

# The labels the intent model predicts (plus OUT_OF_SCOPE, which the engine handles itself).
INTENTS = frozenset(
    """affirm deny confirm_identity wrong_person ask_who_is_calling check_balance repayment_date
    late_fee card_lost installment_inquiry interest_rate will_repay cannot_pay not_interested
    call_back_later stop_calling ask_for_human complaint""".split()
)
# Intents that end the call in every state; a flow cannot route them elsewhere.
# What each guardrail override action means for an automated call.
OVERRIDE_EXITS: dict[str, ExitName] = {
    "stop_and_add_to_do_not_call": "do_not_call",
    "transfer_to_human": "hand_off",
}
GLOBAL_INTENTS: dict[str, ExitName] = {
    intent: OVERRIDE_EXITS[action] for intent, action in OVERRIDE_INTENT_ACTIONS.items()
}
DEFAULT_QUESTION_INTENTS = tuple(
    "check_balance repayment_date late_fee card_lost installment_inquiry interest_rate".split()
)


class FlowError(ValueError):
    """A flow that cannot be used: the message names the file, the state and what is wrong."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Transition(_Strict):
    """Where an intent (or a filled slot, or running out of retries) leads.

    In YAML a bare string is a state name: `affirm: offer` means `affirm: {to: offer}`.
    """

    to: str | None = Field(None, description="the next state")
    exit: ExitName | None = Field(None, description="end the call with this outcome")
    stay: bool = Field(False, description="answer with `say` and stay in the state")
    say: str | None = Field(
        None, description="said first; for an exit, instead of the exit's own line"
    )

    @model_validator(mode="before")
    @classmethod
    def _state_name_shorthand(cls, data: Any) -> Any:
        return {"to": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _exactly_one_target(self) -> Transition:
        targets = [self.to is not None, self.exit is not None, self.stay]
        if sum(targets) != 1:
            raise ValueError("a transition needs exactly one of `to`, `exit` or `stay: true`")
        return self

    def describe(self) -> str:
        if self.exit:
            return f"exit {self.exit}"
        return "stay" if self.stay else str(self.to)


class SlotSpec(_Strict):
    type: SlotType
    choices: list[int] | None = Field(
        None, description="allowed values (months: defaults to 3, 6, 12)"
    )

    @model_validator(mode="after")
    def _choices_are_months(self) -> SlotSpec:
        if self.choices is not None and self.type != "months":
            raise ValueError(f"`choices` applies to months slots, not {self.type}")
        return self

    def allowed(self) -> list[int] | None:
        if self.choices is None and self.type == "months":
            return [3, 6, 12]
        return self.choices


class State(_Strict):
    say: str = Field(description="the bot's line on entering the state")
    offer: bool = Field(
        False, description="makes an offer or discusses the account: disclosures must come first"
    )
    on: dict[str, Transition] = Field(default_factory=dict, description="intent → transition")
    fill: str | None = Field(None, description="slot filled in this state")
    next: Transition | None = Field(None, description="where to go once `fill` is filled")
    retries: int | None = Field(None, ge=0, description="reprompts before `fallback`")
    reprompt: str | None = Field(None, description="said on no match (default: `say`)")
    fallback: Transition | None = None
    free_questions: bool = Field(False, description="answer questions here, then `resume`")
    resume: str | None = Field(None, description="said after an answer (default: reprompt)")
    no_answer: str | None = Field(None, description="said when a question cannot be answered")

    @model_validator(mode="before")
    @classmethod
    def _yaml11_on_key(cls, data: Any) -> Any:
        # yaml.safe_load reads the key `on:` as the boolean True (YAML 1.1); accept such data.
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data


class ExitSpec(_Strict):
    say: str = Field(description="the bot's last line for this outcome")


class Flow(_Strict):
    id: str
    language: Language
    description: str = ""
    variables: list[str] = Field(
        default_factory=list, description="call variables the lines use, given at call start"
    )
    slots: dict[str, SlotSpec] = Field(default_factory=dict)
    start: str | None = Field(None, description="first state (default: the first listed)")
    retries: int = Field(2, ge=0, description="default reprompts per state")
    fallback: Transition | None = Field(None, description="default when retries run out")
    no_answer: str | None = Field(None, description="default line for unanswerable questions")
    question_intents: list[str] = Field(default_factory=lambda: list(DEFAULT_QUESTION_INTENTS))
    max_free_questions: int = Field(3, ge=0, description="answered questions per state visit")
    max_turns: int = Field(40, ge=1, description="customer turns before a hand-off")
    states: dict[str, State] = Field(min_length=1)
    exits: dict[ExitName, ExitSpec]

    @model_validator(mode="after")
    def _whole_flow_is_sound(self) -> Flow:
        from .flow_check import find_problems  # it walks the models defined in this module

        problems = find_problems(self)
        if problems:
            raise ValueError(
                f"flow {self.id!r} is invalid:\n" + "\n".join(f"  - {p}" for p in problems)
            )
        return self

    @property
    def start_state(self) -> str:
        return self.start or next(iter(self.states))

    def retries_for(self, state: str) -> int:
        own = self.states[state].retries
        return self.retries if own is None else own

    def fallback_for(self, state: str) -> Transition:
        fallback = self.states[state].fallback or self.fallback
        assert fallback is not None, "checked at load time"
        return fallback

    def reprompt_for(self, state: str) -> str:
        s = self.states[state]
        return s.reprompt or s.say

    def resume_for(self, state: str) -> str:
        return self.states[state].resume or self.reprompt_for(state)

    def no_answer_for(self, state: str) -> str:
        line = self.states[state].no_answer or self.no_answer
        assert line is not None, "checked at load time"
        return line

    @classmethod
    def load(cls, path: str | Path) -> Flow:
        """Read and check a flow file; any problem is a FlowError naming the file and state."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise FlowError(f"{path}: cannot read the flow: {e}") from None
        return cls.from_yaml(text, source=str(path))

    @classmethod
    def from_yaml(cls, text: str, source: str = "<string>") -> Flow:
        """Like `load`, from YAML text; `source` names it in errors."""
        try:
            data = yaml.load(text, Loader=_FlowYamlLoader)  # a SafeLoader: no arbitrary objects
        except yaml.YAMLError as e:
            raise FlowError(f"{source}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise FlowError(f"{source}: a flow is a YAML mapping with `id`, `states`, `exits`")
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise FlowError(f"{source}: {_describe(e, data.get('id'))}") from None


class _FlowYamlLoader(yaml.SafeLoader):
    """YAML 1.2 booleans: `on`, `off`, `yes` and `no` stay strings (`on:` is a key we use)."""


_BOOL = "tag:yaml.org,2002:bool"
_FlowYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_FlowYamlLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _describe(error: ValidationError, flow_id: object) -> str:
    lines = []
    for e in error.errors():
        message = str(e["msg"]).removeprefix("Value error, ")
        where = " → ".join(str(part) for part in e["loc"])
        lines.append(f"{where}: {message}" if where else message)
    if len(lines) == 1 and lines[0].startswith("flow "):
        return lines[0]
    return f"flow {flow_id!r} is invalid:\n" + "\n".join(f"  - {line}" for line in lines)


def placeholders(line: str) -> list[str]:
    """The `{name}` fields of a line; raises ValueError for `{0}`, `{a.b}`, `{a!r}`, `{a:>3}`."""
    names = []
    for _literal, field, spec, conversion in string.Formatter().parse(line):
        if field is None:
            continue
        if not field.isidentifier() or spec or conversion:
            raise ValueError(f"placeholder {{{field}}} must be a plain {{name}}")
        names.append(field)
    return names


def render(line: str, values: dict[str, str]) -> str:
    return line.format_map(values)
