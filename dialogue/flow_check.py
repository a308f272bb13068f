"""Load-time checks that need the whole flow, so a bad script fails before any call is made.

- structure: unknown intents, states, slots and exits; missing `next`, `fallback`, `no_answer`;
- every bot line passes the guardrails (no forbidden claim) and uses only known placeholders;
- walking the states reachable from the start: unreachable states, offer states (and the
  `converted` exit) reachable before the required bot disclosures were made, and slot
  placeholders said before their slot can have been filled.

The walk is a must-analysis: what is true at a state is what holds on *every* path to it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import guardrails
from .flow_schema import GLOBAL_INTENTS, INTENTS, ExitName, placeholders, render
from .types import OUT_OF_SCOPE

if TYPE_CHECKING:
    from .flow_schema import Flow, State, Transition

# Exits that any state can take (customer opt-out or hand-off), so every flow needs their lines.
ALWAYS_REACHABLE_EXITS: tuple[ExitName, ...] = ("do_not_call", "hand_off")


@dataclass(frozen=True)
class Line:
    where: str  # e.g. "state 'offer' → on affirm → say"
    text: str


@dataclass(frozen=True)
class Edge:
    source: str
    label: str  # "on affirm", "next", "fallback"
    transition: Transition
    # A `next` edge can be taken on the turn the state is entered (the slot was in the same
    # utterance), so the source state's own line may never have been said.
    says_source: bool
    fills: str | None = None


@dataclass(frozen=True)
class Facts:
    """What holds on every path into a state: slots filled and disclosures made."""

    filled: frozenset[str] = frozenset()
    disclosed: frozenset[str] = frozenset()

    def meet(self, other: Facts) -> Facts:
        return Facts(self.filled & other.filled, self.disclosed & other.disclosed)


def find_problems(flow: Flow) -> list[str]:
    problems = _structure(flow) + _line_problems(flow)
    if problems:
        return problems  # the walk below needs a well-formed graph
    return _walk_problems(flow)


# ---- structure ------------------------------------------------------------------------------


def _structure(flow: Flow) -> list[str]:
    out = []
    if flow.start is not None and flow.start not in flow.states:
        out.append(f"start state {flow.start!r} is not defined under `states`")
    for exit_name in ALWAYS_REACHABLE_EXITS:
        if exit_name not in flow.exits:
            out.append(f"exit {exit_name!r} is missing under `exits`: any state can end in it")
    out += [
        f"question_intents: unknown intent {i!r}" for i in flow.question_intents if i not in INTENTS
    ]
    out += [
        f"{name!r} is declared both as a variable and as a slot"
        for name in flow.variables
        if name in flow.slots
    ]
    if flow.fallback is not None:
        out += _target_problems(flow, "flow fallback", flow.fallback, may_stay=False)
    for name, state in flow.states.items():
        out += _state_structure(flow, name, state)
    filled = {s.fill for s in flow.states.values()}
    out += [f"slot {s!r} is declared but no state fills it" for s in flow.slots if s not in filled]
    return out


def _state_structure(flow: Flow, name: str, state: State) -> list[str]:
    where = f"state {name!r}"
    out = []
    for intent, transition in state.on.items():
        out += _intent_problems(where, intent)
        out += _target_problems(flow, f"{where} → on {intent}", transition, may_stay=True)
    if state.fill is not None and state.fill not in flow.slots:
        out.append(f"{where}: fills unknown slot {state.fill!r} (declare it under `slots`)")
    if state.fill is not None and state.next is None:
        out.append(f"{where}: fills {state.fill!r} but has no `next` for when it is filled")
    if state.next is not None:
        if state.fill is None:
            out.append(f"{where}: has `next` but no `fill`")
        out += _target_problems(flow, f"{where} → next", state.next, may_stay=False)
    if state.fallback is not None:
        out += _target_problems(flow, f"{where} → fallback", state.fallback, may_stay=False)
    elif flow.fallback is None:
        out.append(f"{where}: no `fallback` for when retries run out, and no flow `fallback`")
    if state.free_questions and not (state.no_answer or flow.no_answer):
        out.append(f"{where}: free_questions needs a `no_answer` line (state or flow)")
    return out


def _intent_problems(where: str, intent: str) -> list[str]:
    if intent == OUT_OF_SCOPE:
        return [f"{where}: `on: {intent}` is not allowed: retries and free_questions handle it"]
    if intent in GLOBAL_INTENTS:
        exit_name = GLOBAL_INTENTS[intent]
        return [f"{where}: `on: {intent}` never fires: it always ends the call ({exit_name})"]
    if intent not in INTENTS:
        return [f"{where}: unknown intent {intent!r} (known: {', '.join(sorted(INTENTS))})"]
    return []


def _target_problems(flow: Flow, where: str, transition: Transition, may_stay: bool) -> list[str]:
    if transition.stay and not may_stay:
        return [f"{where}: cannot be `stay`; it must lead to a state or an exit"]
    if transition.to is not None and transition.to not in flow.states:
        return [f"{where}: unknown state {transition.to!r}"]
    if transition.exit is not None and transition.exit not in flow.exits:
        return [f"{where}: exit {transition.exit!r} is not defined under `exits`"]
    return []


# ---- every line: placeholders and forbidden claims -------------------------------------------


def iter_lines(flow: Flow) -> Iterator[Line]:
    """Every line the bot can say, with where it is written."""
    for name, state in flow.states.items():
        where = f"state {name!r}"
        yield Line(f"{where} → say", state.say)
        for field in ("reprompt", "resume", "no_answer"):
            if text := getattr(state, field):
                yield Line(f"{where} → {field}", text)
        for label, transition in _labelled_transitions(state):
            if transition.say:
                yield Line(f"{where} → {label} → say", transition.say)
    if flow.no_answer:
        yield Line("flow no_answer", flow.no_answer)
    if flow.fallback is not None and flow.fallback.say:
        yield Line("flow fallback → say", flow.fallback.say)
    for name, spec in flow.exits.items():
        yield Line(f"exit {name!r} → say", spec.say)


def _labelled_transitions(state: State) -> Iterator[tuple[str, Transition]]:
    yield from ((f"on {intent}", t) for intent, t in state.on.items())
    if state.next is not None:
        yield "next", state.next
    if state.fallback is not None:
        yield "fallback", state.fallback


def _line_problems(flow: Flow) -> list[str]:
    known = set(flow.variables) | set(flow.slots)
    out = []
    for line in iter_lines(flow):
        try:
            names = placeholders(line.text)
        except ValueError as e:
            out.append(f"{line.where}: {e}")
            continue
        out += [
            f"{line.where}: unknown placeholder {{{n}}} (declare it under `variables` or `slots`)"
            for n in names
            if n not in known
        ]
        checked = guardrails.check(sample(line.text), "bot")
        out += [
            f"{line.where}: forbidden claim {f.rule} ({f.why}): {f.evidence!r}"
            for f in checked.findings
            if f.kind == "forbidden_claim"
        ]
    return out


def sample(line: str) -> str:
    """The line with each placeholder replaced by its name, for checks before a call has values."""
    return render(line, {n: n for n in placeholders(line)})


# ---- the walk from the start state -----------------------------------------------------------


def edges(flow: Flow, source: str) -> list[Edge]:
    """Transitions that move to another state or end the call (`stay` moves nowhere)."""
    state = flow.states[source]
    out = [
        Edge(source, f"on {intent}", t, says_source=True)
        for intent, t in state.on.items()
        if not t.stay
    ]
    if state.next is not None:
        out.append(Edge(source, "next", state.next, says_source=False, fills=state.fill))
    out.append(Edge(source, "fallback", flow.fallback_for(source), says_source=True))
    return out


def required_disclosures() -> list[guardrails.PatternRule]:
    return guardrails.DisclosureTracker(automated=True).rules


def _disclosed_by(line: str, rules: list[guardrails.PatternRule]) -> set[str]:
    text = sample(line)
    return {r.name for r in rules if r.search(text)}


def _after(flow: Flow, facts: Facts, edge: Edge, rules: list[guardrails.PatternRule]) -> Facts:
    """What holds once `edge` is taken, before the target state's own line."""
    said = [flow.states[edge.source].say] if edge.says_source else []
    if edge.transition.say:
        said.append(edge.transition.say)
    disclosed = set(facts.disclosed)
    for line in said:
        disclosed |= _disclosed_by(line, rules)
    filled = (facts.filled | {edge.fills}) if edge.fills else facts.filled
    return Facts(frozenset(filled), frozenset(disclosed))


def analyse(flow: Flow, rules: list[guardrails.PatternRule]) -> dict[str, Facts]:
    """Facts at the entry of every state reachable from the start (absent: unreachable)."""
    facts = {flow.start_state: Facts()}
    work = [flow.start_state]
    while work:
        source = work.pop()
        for edge in edges(flow, source):
            target = edge.transition.to
            if target is None:
                continue
            after = _after(flow, facts[source], edge, rules)
            merged = facts[target].meet(after) if target in facts else after
            if merged != facts.get(target):
                facts[target] = merged
                work.append(target)
    return facts


def _walk_problems(flow: Flow) -> list[str]:
    rules = required_disclosures()
    facts = analyse(flow, rules)
    out = [
        f"state {name!r} is unreachable from the start state {flow.start_state!r}"
        for name in flow.states
        if name not in facts
    ]
    out += _disclosure_problems(flow, facts, rules)
    out += _slot_placeholder_problems(flow, facts, rules)
    return out


def _disclosure_problems(
    flow: Flow, facts: dict[str, Facts], rules: list[guardrails.PatternRule]
) -> list[str]:
    """One problem per disclosure that some path skips before an offer (or a conversion)."""
    out = []
    for rule in rules:
        early = [
            (f"state {name!r}", name)
            for name in flow.states
            if name in facts and flow.states[name].offer and rule.name not in facts[name].disclosed
        ]
        early += [
            (f"exit 'converted' (from state {name!r} {edge.label})", name)
            for name in flow.states
            if name in facts
            for edge in edges(flow, name)
            if edge.transition.exit == "converted"
            and rule.name not in _after(flow, facts[name], edge, rules).disclosed
        ]
        if early:
            where = ", ".join(label for label, _ in early)
            path = " → ".join(_path_without(flow, rule, early[0][1], rules))
            out.append(
                f"the {rule.name} disclosure ({rule.why}) must come before any offer, but can "
                f"be missing on the way to {where}; e.g. {path}"
            )
    return out


def _path_without(
    flow: Flow, missing: guardrails.PatternRule, target: str, rules: list[guardrails.PatternRule]
) -> list[str]:
    """A path from the start to `target` on which the `missing` disclosure is never made."""
    previous: dict[str, str | None] = {flow.start_state: None}
    queue = deque([flow.start_state])
    while queue and target not in previous:
        source = queue.popleft()
        for edge in edges(flow, source):
            nxt = edge.transition.to
            makes = _after(flow, Facts(), edge, rules).disclosed
            if nxt is not None and nxt not in previous and missing.name not in makes:
                previous[nxt] = source
                queue.append(nxt)
    path: list[str] = []
    node: str | None = target
    while node is not None:
        path.append(node)
        node = previous.get(node)
    return path[::-1]


def _slot_placeholder_problems(
    flow: Flow, facts: dict[str, Facts], rules: list[guardrails.PatternRule]
) -> list[str]:
    out = []
    exit_uses: dict[ExitName, list[frozenset[str]]] = {name: [] for name in flow.exits}
    for name, at in facts.items():
        for line, filled in _lines_said_in(flow, name, at, rules, exit_uses):
            out += _unfilled(flow, line, filled, f"in state {name!r}")
    for exit_name, uses in exit_uses.items():
        if uses:
            filled = frozenset.intersection(*uses)
            line = Line(f"exit {exit_name!r} → say", flow.exits[exit_name].say)
            out += _unfilled(flow, line, filled, "on some path to this exit")
    return out


def _lines_said_in(
    flow: Flow,
    name: str,
    at: Facts,
    rules: list[guardrails.PatternRule],
    exit_uses: dict[ExitName, list[frozenset[str]]],
) -> Iterator[tuple[Line, frozenset[str]]]:
    """(line, slots surely filled when it is said) for what state `name` can say; records which
    slots are filled wherever an exit's own line is used."""
    state = flow.states[name]
    where = f"state {name!r}"
    yield Line(f"{where} → say", state.say), at.filled
    for field in ("reprompt", "resume", "no_answer"):
        if text := getattr(state, field):
            yield Line(f"{where} → {field}", text), at.filled
    if state.free_questions and not state.no_answer and flow.no_answer:
        yield Line("flow no_answer", flow.no_answer), at.filled
    for intent, t in state.on.items():
        if t.stay and t.say:
            yield Line(f"{where} → on {intent} → say", t.say), at.filled
    for edge in edges(flow, name):
        filled = _after(flow, at, edge, rules).filled
        if edge.transition.say:
            yield Line(f"{where} → {edge.label} → say", edge.transition.say), filled
        elif edge.transition.exit:
            exit_uses[edge.transition.exit].append(filled)
    for exit_name in ALWAYS_REACHABLE_EXITS:
        exit_uses[exit_name].append(at.filled)


def _unfilled(flow: Flow, line: Line, filled: frozenset[str], when: str) -> list[str]:
    return [
        f"{line.where}: {{{n}}} may be said before slot {n!r} is filled ({when})"
        for n in placeholders(line.text)
        if n in flow.slots and n not in filled
    ]
