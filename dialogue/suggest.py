"""Reply suggestions for the agent (or the bot): intent -> top-agent exemplars -> grounded LLM.

Two speeds, because an agent on a live call cannot wait for a language model:
- `instant()` (tens of ms): the customer's intent, any override (opt-out, hand-off), and the
  exemplars top agents said in the same situation, shown as they are.
- `generate()` / `suggest()`: the LLM's reply, conditioned on the policy text, the redacted call
  so far and those exemplars, streamed; the finished text passes the guardrails before anyone
  sees it, and a blocked reply is replaced by the best exemplar.

The prompt puts what does not change during a call first (instructions, policy) and the call so
far next, so the embedded model reuses its cache across the turns of one call; the exemplars of
this turn go last.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator

from pydantic import BaseModel, Field

from core.events import SuggestionSource

from .facts import AskedFact, FactBook
from .guardrails import Finding, check
from .llm import ChatMessage, LLMClient, LLMError
from .playbook import Playbook, RetrievalConfig
from .redaction import redact
from .types import (
    OUT_OF_SCOPE,
    OVERRIDE_INTENT_ACTIONS,
    Exemplar,
    IntentClassifier,
    IntentPrediction,
    Turn,
)

_CJK = re.compile(r"[\u4e00-\u9fff]")
# A figure: digits with separators, optionally a percentage ("1,000", "0.55%", "5", "2160").
_FIGURE = re.compile(r"\d+(?:[.,]\d+)*%?")
_ROLE_PREFIX = re.compile(r"^\s*(?:best agent|agent|assistant|坐席|客服)\s*[:：]\s*", re.IGNORECASE)
# The model sometimes writes the next speaker's line after its own, on a new line or inline.
_NEXT_SPEAKER = re.compile(
    r"(?:\n\s*(?:best agent|agent|坐席)|(?:^|\s)(?:customer|客户))\s*[:：]", re.IGNORECASE)
# Small models sometimes refuse or talk about themselves instead of replying; such text is no
# suggestion, and an agent should see the exemplars instead.
_REFUSAL = re.compile(r"\b(?:I'?m sorry, but I can(?:no|')t|I can(?:no|')t assist|as an ai\b)|"
                      r"作为(?:一个)?(?:AI|人工智能)|我无法(?:协助|帮助)", re.IGNORECASE)
# What a customer says in these intents asks for no fact ("yes, that's me", "call me later").
_NOT_A_QUESTION = frozenset({"affirm", "deny", "confirm_identity", "wrong_person",
                             "call_back_later", "not_interested", "will_repay"})
# Text about the reply instead of the reply: "The customer just said: ...", "坐席回复：".
_META = re.compile(r"\bthe customer (?:just )?said\b|\b(?:the )?agent'?s reply\b|\bbest agent\b|"
                   r"客户(?:刚刚|刚才)?说|坐席(?:的)?回复", re.IGNORECASE)
# Asked for a promise (approval, a waiver, a limit), a reply must decline to give it.
_NO_PROMISE = re.compile(r"\b(?:can'?t|cannot|can not|unable to|not able to) (?:promise|guarantee"
                         r"|say for sure|waive)|\bnot (?:guaranteed|a guarantee)\b|\bno guarantee"
                         r"|\breview\b|\bback office\b|\bdecides?\b"
                         r"|不能(?:保证|承诺|直接)|无法(?:保证|承诺)|不(?:作)?保证|审核|后台|评估",
                         re.IGNORECASE)
_OVERRIDE_LINES = {
    ("stop_and_add_to_do_not_call", "en"): "Understood. I'll make sure you are not called again "
                                           "about this. Thank you for your time.",
    ("stop_and_add_to_do_not_call", "zh"): "好的，明白。我们会把您的号码登记为不再致电，打扰您了。",
    ("transfer_to_human", "en"): "Of course. I'm transferring you to a colleague who can help "
                                 "right away; please stay on the line.",
    ("transfer_to_human", "zh"): "好的，我这就为您转接专门的同事处理，请您稍等不要挂机。",
}
# One system prompt for both languages and every call: its tokens are evaluated once at start-up
# and shared by all calls (the language is asked for in the call's own message).
SYSTEM = """You write the next reply for a {role} of {company} on a phone call with a customer.
Rules:
- Reply in the language the message asks for, one or two short spoken sentences, as the {role} \
would say them.
- When a FACT is given, the reply must state it with its exact figures.
- Use only facts stated in the POLICY or in the EXAMPLES. If they do not answer the question, \
say you will check and follow up. Never invent rates, fees, amounts or dates.
- Never promise approval, guaranteed returns or fee waivers; never threaten or pressure.
- Follow the style of the EXAMPLES: they are what the best agents said in this situation.
- Output only the reply text.

POLICY:
{policy}"""


class SuggestConfig(BaseModel):
    company: str = "Harbor Bank"
    k: int = Field(3, description="exemplars retrieved and shown")
    context_turns: int = Field(2, description="customer turns the retrieval sees (the last "
                               "one is matched)")
    history_turns: int = Field(
        40, description="turns of the call given to the LLM; a window that slides every turn "
        "would defeat the cache reuse across turns, so it is wide")
    max_tokens: int = 80
    temperature: float = 0.2


class Suggestion(BaseModel):
    text: str
    source: SuggestionSource
    grounded_in: list[str] = Field(default_factory=list, description="call ids of exemplars")
    findings: list[Finding] = Field(default_factory=list, description="why a text was replaced")


class Assist(BaseModel):
    """What the sidebar shows at once for the customer's last words."""

    call_id: str
    language: str
    customer_text: str = Field(description="the customer's last turn, redacted")
    intent: IntentPrediction
    override: Finding | None = None
    asked: AskedFact | None = Field(None, description="the policy fact the customer asked for")
    exemplars: list[Exemplar] = Field(default_factory=list)
    intent_ms: float = 0.0
    retrieval_ms: float = 0.0


class SuggestionResult(BaseModel):
    assist: Assist
    suggestions: list[Suggestion]
    first_token_ms: float | None = None
    total_ms: float
    llm_error: str | None = Field(None, description="why there is no LLM suggestion, if it failed")
    withheld: list[Finding] = Field(default_factory=list,
                                    description="guardrail findings that kept the LLM's text back")


def detect_language(text: str) -> str:
    return "zh" if _CJK.search(text) else "en"


def _figures(text: str) -> set[str]:
    return {m.group().replace(",", "").rstrip(".") for m in _FIGURE.finditer(text)}


def _mask(reply: str, known: set[str]) -> str:
    """Another customer's amounts and dates in an exemplar are not this customer's: the LLM
    sees them as [amount], so it copies the style and the policy figures, not the numbers."""
    return _FIGURE.sub(lambda m: m.group() if m.group().replace(",", "").rstrip(".") in known
                       else "[amount]", reply)


def _echoes(reply: str, line: str) -> bool:
    """The reply repeats a line of the call: the same, nearly the same, or quoting it whole."""
    from difflib import SequenceMatcher

    a, b = reply.lower().strip(), line.lower().strip()
    if not a or not b:
        return False
    return a in b or (len(b) >= 12 and b in a) or SequenceMatcher(None, a, b).ratio() >= 0.8


def _plain(figures: list[str]) -> list[str]:
    return [f.replace(",", "") for f in figures]


def states(text: str, asked: AskedFact) -> bool:
    """The text quotes every figure of the asked fact (a fact without figures: unknown, no)."""
    return bool(asked.must) and set(_plain(asked.must)) <= _figures(text)


def off_slot(text: str, asked: AskedFact) -> bool:
    """The text quotes another plan's figure than the one asked (0.75% for a 6-month plan)."""
    return bool(_figures(text) & set(_plain(asked.wrong)))


def answers(text: str, asked: AskedFact) -> bool:
    """A card that answers the asked slot whole: its figures, no other plan's, no blank."""
    return states(text, asked) and not off_slot(text, asked) and "[amount]" not in text


def _off_slot(text: str, asked: AskedFact | None) -> list[Finding]:
    """A reply that quotes another plan's figure, or leaves out the asked one, answers a
    question the customer did not ask."""
    if asked is None or not asked.must:
        return []
    other = sorted(_figures(text) & set(_plain(asked.wrong)))
    if other or not states(text, asked):
        return [Finding(kind="forbidden_claim", rule="off_slot_figure",
                        why=f"the customer asked about {asked.fact.id}"
                            f"{f' ({asked.months} months)' if asked.months else ''}: the reply "
                            f"must state {', '.join(asked.must)}"
                            + (f", not {', '.join(other)}" if other else ""),
                        evidence=text[:80])]
    return []


def clean_reply(text: str) -> str:
    """The model's text as a reply: no role label in front, nothing after another speaker
    (a line break before one, or " / ", the mark that joins a context's turns)."""
    text = _NEXT_SPEAKER.split(text, maxsplit=1)[0].split(" / ", 1)[0]
    return _ROLE_PREFIX.sub("", text.strip()).strip()


def _last_customer(history: list[Turn], n: int) -> list[str]:
    return [t.text for t in history if t.speaker == "customer"][-n:]


class Suggester:
    def __init__(self, classifier: IntentClassifier, playbook: Playbook,
                 llm: LLMClient | None = None, policy: str = "",
                 config: SuggestConfig | None = None, facts: FactBook | None = None) -> None:
        self.classifier = classifier
        self.playbook = playbook
        self.facts = facts
        self.llm = llm
        self.policy = policy
        self._policy_figures = _figures(policy)
        self.config = config or SuggestConfig()

    def instant(self, call_id: str, history: list[Turn], language: str | None = None) -> Assist:
        customer = _last_customer(history, self.config.context_turns)
        last = customer[-1] if customer else ""
        checked = check(last, "customer")
        language = language or detect_language(last)
        started = time.perf_counter()
        intent = self.classifier.predict(checked.text)
        intent_ms = (time.perf_counter() - started) * 1000
        override = checked.override
        if override is None and intent.label in OVERRIDE_INTENT_ACTIONS:
            override = Finding(kind="override", rule=f"intent:{intent.label}",
                               why=f"the customer's intent is {intent.label} "
                                   f"(p={intent.confidence:.2f})",
                               action=OVERRIDE_INTENT_ACTIONS[intent.label])
        started = time.perf_counter()
        exemplars: list[Exemplar] = []
        asked = None
        if override is None:
            context = " / ".join(redact(t).text for t in customer)
            query_intent = intent.label if intent.label != OUT_OF_SCOPE else None
            chit_chat = intent.label in _NOT_A_QUESTION and intent.confidence >= 0.5
            asked = (self.facts.match(checked.text, language)
                     if self.facts and not chit_chat else None)
            # more candidates than cards: the one that answers the asked slot may rank third
            pool = self.playbook.retrieve(context, query_intent, language,
                                          RetrievalConfig(k=self.config.k * 3))
            exemplars = self._by_slot(pool, asked, history)[:self.config.k]
        retrieval_ms = (time.perf_counter() - started) * 1000
        return Assist(call_id=call_id, language=language, customer_text=checked.text,
                      intent=intent, override=override, asked=asked, exemplars=exemplars,
                      intent_ms=intent_ms, retrieval_ms=retrieval_ms)

    def _by_slot(self, pool: list[Exemplar], asked: AskedFact | None, history: list[Turn]
                 ) -> list[Exemplar]:
        """Replies agents keep dismissing last; before them, exemplars that state the asked
        fact first, then those that quote no other plan's figure and leave no amount blank;
        retrieval order within each."""
        if asked is None:
            return sorted(pool, key=lambda e: e.demoted)
        known = self._known_figures(history)

        def rank(e: Exemplar) -> tuple[bool, bool, bool, bool, bool]:
            shown = _mask(e.reply, known)
            return (e.demoted, not self._answers(e, shown, asked), off_slot(shown, asked),
                    "[amount]" in shown, not states(shown, asked))
        return sorted(pool, key=rank)  # stable: retrieval order breaks ties

    def system_message(self, automated: bool = False) -> ChatMessage:
        role = "automated assistant" if automated else "contact-center agent"
        return ChatMessage(role="system", content=SYSTEM.format(
            role=role, company=self.config.company,
            policy=self.policy.strip() or "(none given)"))

    async def warm_up(self, automated: bool = False) -> None:
        """Evaluate the system prompt (the policy with it) once, so that a call's first reply
        evaluates only its own lines: the embedded model keeps the shared prefix, and on a
        2-core CPU the policy alone costs ~15 s of prefill. Both languages share it."""
        if self.llm is None:
            return
        messages = [self.system_message(automated), ChatMessage(role="user", content="Hello.")]
        warm = getattr(self.llm, "warm", None)
        if warm is not None:  # the embedded model: kept on disk for the next process too
            from core.paths import model_cache_dir

            await warm(messages, session="callwise-warm-up",
                       prefix_dir=model_cache_dir() / "llm-prefix")
            return
        await self.llm.complete(messages, session="callwise-warm-up", max_tokens=1)

    def messages(self, assist: Assist, history: list[Turn], automated: bool = False
                 ) -> list[ChatMessage]:
        system = self.system_message(automated)
        lines = [f"{'Customer' if t.speaker == 'customer' else 'Agent'}: {redact(t.text).text}"
                 for t in history[-self.config.history_turns:]]
        known = self._known_figures(history)
        # With the asked fact in hand the model adapts the best exemplar alone: fewer tokens to
        # read before the first one it writes (prefill is most of the wait on a CPU).
        shown = assist.exemplars[:1] if assist.asked else assist.exemplars
        examples = "\n".join(f"- Customer: {e.context}\n  Best agent: {_mask(e.reply, known)}"
                             for e in shown) or "(none)"
        language = "Simplified Chinese" if assist.language == "zh" else "English"
        # The asked fact, worked out for this customer's plan and amount: the model adapts the
        # best agent's reply around it instead of free-writing figures.
        fact = (f"FACT for this question (state it, with these exact figures): "
                f"{assist.asked.statement}\n\n" if assist.asked else "")
        # The customer's last words are repeated at the very end: small models otherwise
        # answer an earlier line or echo the agent's greeting.
        user = ("CALL SO FAR:\n" + "\n".join(lines) +
                f"\n\nEXAMPLES (customer intent: {assist.intent.best}):\n{examples}\n\n{fact}"
                f"The customer just said: \"{assist.customer_text}\"\n"
                f"Write the agent's reply to that, in {language}, in the style of the first "
                "example.")
        return [system, ChatMessage(role="user", content=user)]

    async def generate(self, assist: Assist, history: list[Turn], automated: bool = False
                       ) -> AsyncIterator[str]:
        """The LLM's reply as it streams (unguarded pieces: show them as a draft only)."""
        if self.llm is None:
            raise LLMError("no LLM configured")
        async for piece in self.llm.stream(self.messages(assist, history, automated),
                                           session=assist.call_id,
                                           max_tokens=self.config.max_tokens,
                                           temperature=self.config.temperature,
                                           stop=["\nCustomer:", "\nAgent:", "\n\n"]):
            yield piece

    def _known_figures(self, history: list[Turn]) -> set[str]:
        return self._policy_figures | _figures(" ".join(t.text for t in history))

    def _answers(self, e: Exemplar, shown: str, asked: AskedFact) -> bool:
        """The exemplar answered the same question (its customer asked about the same fact)
        and its reply, as shown, states the asked figures whole: a reply that merely holds
        the figure, said to another question, is no answer."""
        assert self.facts is not None
        return (answers(shown, asked)
                and self.facts.topic_of(e.context.rsplit(" / ", 1)[-1]) == self.facts.family(asked))

    @staticmethod
    def _asked_figures(assist: Assist) -> set[str]:
        """The worked sum for this customer's amount is no invention (518 on 3,000 over 6)."""
        return _figures(assist.asked.statement) if assist.asked else set()

    def _ungrounded(self, text: str, history: list[Turn], assist: Assist) -> list[Finding]:
        if _REFUSAL.search(text):
            return [Finding(kind="forbidden_claim", rule="llm_refusal",
                            why="the model refused or talked about itself instead of replying",
                            evidence=text[:80])]
        if _META.search(text):
            return [Finding(kind="forbidden_claim", rule="llm_meta",
                            why="the model wrote about the reply instead of the reply",
                            evidence=text[:80])]
        asked = assist.asked
        if asked is not None and asked.fact.promise and not _NO_PROMISE.search(text):
            return [Finding(kind="forbidden_claim", rule="promise_question",
                            why=f"the customer asked for a promise ({asked.fact.id}): the reply "
                                "must say it cannot be promised and who decides",
                            evidence=text[:80])]
        if any(_echoes(text, t.text) for t in history):
            return [Finding(kind="forbidden_claim", rule="llm_echo",
                            why="the model repeated a line already said in this call",
                            evidence=text[:80])]
        known = self._known_figures(history) | self._asked_figures(assist)
        invented = sorted(_figures(text) - known)
        if invented:
            return [Finding(kind="forbidden_claim", rule="ungrounded_figure",
                            why="figures that are neither in the policy nor in the call: the "
                                "model invented them or copied another customer's",
                            evidence=", ".join(invented))]
        return _off_slot(text, assist.asked)

    def override_suggestion(self, assist: Assist) -> Suggestion | None:
        """The scripted line for an opt-out or hand-off: said at once, no LLM."""
        if assist.override is None:
            return None
        line = _OVERRIDE_LINES.get((assist.override.action or "", assist.language), "")
        return Suggestion(text=line, source="override", findings=[assist.override]) if line \
            else None

    def finish(self, text: str, assist: Assist, history: list[Turn], automated: bool = False
               ) -> tuple[Suggestion | None, list[Finding]]:
        """The LLM's whole text as a suggestion, or the guardrail findings that withhold it."""
        checked = check(clean_reply(text), "bot" if automated else "agent")
        withheld = [f for f in checked.findings if f.kind == "forbidden_claim"]
        withheld += self._ungrounded(checked.text, history, assist)
        if withheld or not checked.text.strip():
            return None, withheld
        return Suggestion(text=checked.text.strip(), source="llm",
                          grounded_in=[e.call_id for e in assist.exemplars]), []

    def exemplar_suggestions(self, assist: Assist, history: list[Turn], automated: bool = False,
                             taken: tuple[str, ...] = ()
                             ) -> list[tuple[Suggestion, Exemplar | None]]:
        """The cards shown at once: the top agents' replies, checked again (the rules may have
        changed since the index was built), the policy's figures kept and the other customer's
        amounts left as [amount] slots (`assist.exemplars` keeps the originals). When no
        complete one states the fact the customer asked for, the policy's answer comes first
        (with no exemplar to cite)."""
        known = self._known_figures(history)
        cards: list[tuple[Suggestion, Exemplar | None]] = []
        seen = set(taken)
        policy = self.policy_suggestion(assist, history)
        if policy is not None and policy.text not in seen:
            seen.add(policy.text)
            cards.append((policy, None))
        for e in assist.exemplars:
            exemplar = check(e.reply, "bot" if automated else "agent")
            text = _mask(exemplar.text, known)
            if not exemplar.blocked and text not in seen:
                seen.add(text)
                cards.append((Suggestion(text=text, source="exemplar", grounded_in=[e.call_id]),
                              e))
        return cards

    def policy_suggestion(self, assist: Assist, history: list[Turn]) -> Suggestion | None:
        """The asked fact in the policy's words, unless a top agent's complete reply states it."""
        asked = assist.asked
        if asked is None or assist.override is not None:
            return None
        known = self._known_figures(history)
        if any(self._answers(e, _mask(e.reply, known), asked) and not e.demoted
               for e in assist.exemplars):
            return None
        return Suggestion(text=asked.statement, source="policy")

    def instant_cards(self, assist: Assist, history: list[Turn], automated: bool = False
                      ) -> list[Suggestion]:
        """What the agent sees at once, in order: the scripted line, or the cards."""
        override = self.override_suggestion(assist)
        if assist.override is not None:
            return [override] if override else []
        cards = self.exemplar_suggestions(assist, history, automated)
        return [card for card, _ in cards][: self.config.k]

    async def suggest(self, call_id: str, history: list[Turn], language: str | None = None,
                      automated: bool = False) -> SuggestionResult:
        started = time.perf_counter()
        assist = self.instant(call_id, history, language)
        override = self.override_suggestion(assist)
        if assist.override is not None:
            return SuggestionResult(
                assist=assist, total_ms=(time.perf_counter() - started) * 1000,
                suggestions=[override] if override else [])
        suggestions: list[Suggestion] = []
        withheld: list[Finding] = []
        llm_error = None
        first_token_ms = None
        if self.llm is not None:
            pieces: list[str] = []
            try:
                async for piece in self.generate(assist, history, automated):
                    if first_token_ms is None:
                        first_token_ms = (time.perf_counter() - started) * 1000
                    pieces.append(piece)
            except LLMError as exc:  # the exemplars still reach the agent
                llm_error = str(exc)
                pieces = []
            reply, withheld = self.finish("".join(pieces), assist, history, automated)
            if reply is not None:
                suggestions.append(reply)
        cards = self.exemplar_suggestions(assist, history, automated,
                                          tuple(s.text for s in suggestions))
        suggestions += [card for card, _ in cards][: max(0, self.config.k - len(suggestions))]
        return SuggestionResult(assist=assist, suggestions=suggestions,
                                first_token_ms=first_token_ms, llm_error=llm_error,
                                withheld=withheld,
                                total_ms=(time.perf_counter() - started) * 1000)
