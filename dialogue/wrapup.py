"""The after-call wrap-up note: drafted by the LLM from the redacted transcript, with an
extractive note (sentences picked from the call, no model) when there is no LLM or its note
fails the checks.

The extractive note is also what the sidebar shows at once, before the LLM's is ready, so it
must be fast and must never say anything the call did not: every field is a span of the
(redacted) transcript, lightly trimmed. The LLM's note is checked the same way suggestions are:
redacted, and refused when it states a figure the call never mentioned or copies the prompt.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Literal

from core.events import WrapUpNote

from .llm import ChatMessage, LLMClient, LLMError
from .redaction import redact
from .suggest import _figures, detect_language
from .types import Turn

log = logging.getLogger(__name__)

NoteSource = Literal["llm", "extractive"]
FieldName = Literal["reason", "agreed", "next_step"]
FIELDS: tuple[FieldName, ...] = ("reason", "agreed", "next_step")
LIMITS: dict[FieldName, int] = {"reason": 500, "agreed": 1000, "next_step": 500}

# ---- extractive note --------------------------------------------------------------------------

# English sentences end at .!? followed by a space (so "5.5" and "2,960.00" stay whole);
# Chinese ones at 。！？； wherever they are.
_SENTENCE_END = re.compile(r"[。！？；]+[”」』）)]*|[.!?]+[\"')\]]*(?=\s|$)")
_ABBREVIATION = re.compile(r"\b(?:mr|mrs|ms|dr|st|no|vs|etc|e\.g|i\.e)\.$", re.IGNORECASE)
_CLAUSE_END = re.compile(r"[,，:：、]+")
_QUESTION = re.compile(r"[?？]\W*$|[吗呢]\W*$")

# Openings carry no content: greetings, who is calling, the recording notice, identity checks.
_OPENING = re.compile(
    r"^(?:hi|hello|hey|good (?:morning|afternoon|evening|day))\b"
    r"|^(?:this is|it'?s|my name is|i'?m|i am)\s+[A-Z][a-z]+(?:\s+[A-Z][a-z]+){0,2}\b"
    r"(?:\s+(?:from|at|with|here)\b.*)?$"
    r"|\bcalling (?:you )?(?:from|on behalf of)\b|^(?:from|at|with|here at)\s+[A-Z]"
    r"|\brecord(?:ed|ing)?\b|\b(?:mr|mrs|ms|miss|dr)\b\.?\s+[A-Z]"
    r"|\b(?:am i speaking|can i speak|may i speak|speaking (?:to|with)|is that you)\b"
    r"|\b(?:how (?:can|may) i help|what can i do for you|thanks? (?:you )?for (?:calling|holding|"
    r"waiting|your time)|sorry to (?:bother|disturb)|do you have a (?:minute|moment|second)|"
    r"is (?:now|this) a good time|(?:just )?take a (?:second|minute|moment)|hear me out|"
    r"(?:thanks?|thank you) for picking up)\b|^(?:thank you|thanks)(?: (?:so much|very much))?$"
    r"|^(?:so|so yeah|well|um+|uh+|okay|ok|alright|all right|right|yes|yeah|sure|great|perfect|"
    r"of course|quickly|briefly)$"
    r"|^(?:喂|您好|你好|哈喽|早上好|上午好|下午好|晚上好)|这里是|^我是|录音"
    r"|请问.{0,8}(?:先生|女士|小姐)|^\w{1,4}(?:先生|女士|小姐)(?:您好|你好|对吧|是吧|吗|在吗|本人吗)?$"
    r"|本人吗|在吗"
    r"|打扰|简单说(?:一下)?$|耽误您|有什么可以帮|感谢(?:您的)?来电|请问有什么"
    r"|^(?:嗯+|啊|那个|是这样|好的?|行|对|没错)$",
    re.IGNORECASE,
)
# The agent stating why they call: the offer, the account, the bill.
_PURPOSE = re.compile(
    r"\b(?:about|regarding|calling (?:to|because)|reason for|your (?:account|card|loan|policy|"
    r"bill|statement|payment|balance|limit|insurance|renewal|application)|offer(?:ing)?|"
    r"eligible|overdue|due|payment|renew(?:al)?|installments?|loan|credit limit|insurance|"
    r"we'?ve got|remind|heads-up|(?:annual )?fee|bill|your \w+ card|expir\w+|comes up)\b"
    r"|是这样|想问|打电话|来电是|您的|符合|到期|分期|逾期|还款|续保|额度|贷款|账单|优惠|提醒|通知|办理|续期|续卡|年费",
    re.IGNORECASE,
)
# The customer asking for something on an inbound call.
_REQUEST = re.compile(
    r"\b(?:i'?d like|i would like|i want|i need|i'?m calling (?:about|to|because)|"
    r"(?:can|could) (?:you|i)|how (?:do|can) i|i have a question|question about|"
    r"my (?:card|account|loan|payment|bill|statement|balance|policy)|lost|stolen|charged|"
    r"dispute|refund|block|cancel)\b"
    r"|我想|我要|想问|想咨询|咨询|帮我|能不能|能否|可以帮|怎么(?:办|还|申请|查|开通|取消|用)"
    r"|我的(?:卡|账户|账单|贷款|保单)|丢了|被盗|扣了|退款|挂失|取消|注销|查一下",
    re.IGNORECASE,
)
# A decision: agreeing, refusing or putting it off. Weak cues ("okay", "好") also answer
# "can you hear me" or "hear me out", so they count only when no strong one is in the call.
_DECIDES = re.compile(
    r"\b(?:do it|go ahead|sign me up|i'?ll (?:apply|take|do|pay|renew|go with|sign)|let'?s do|"
    r"sounds good|that works|works for me|i agree|deal|yes,? please|please do|count me in|"
    r"not interested|no,? thanks?|no thank you|i'?ll pass|don'?t (?:call|want|need)|"
    r"do not call|can'?t (?:pay|afford)|not (?:now|today|right now)|stop calling|never mind|"
    r"let me (?:think|check|see|talk|ask)|i'?ll think|think about it|"
    r"i need to (?:think|check|talk)|call me (?:back|later)|maybe later|not sure yet)\b"
    r"|办吧|办一下|帮我办|帮我申请|申请吧|就这样|就行|那就|同意|没问题|可以办|续吧|我续|会还|我还"
    r"|我办|要办|办\w{1,3}期|换成|就换|换吧"
    r"|不需要|不用|不要|没兴趣|不感兴趣|算了|不考虑|先不|用不上|不办|别打|再说|考虑|想想|算算|商量",
    re.IGNORECASE,
)
_AGREES = re.compile(
    r"^\W*(?:yes|yeah|yep|yup|ok|okay|sure|fine|alright|all right|right|no|nope|correct)\b"
    r"|^\W*(?:好的?|好吧|行|可以|对|是的|没错|成)",
    re.IGNORECASE,
)
_CLOSING = re.compile(r"\b(?:bye|goodbye|cheers|thanks|thank you)\b|拜拜|再见|谢谢", re.IGNORECASE)
# Something someone will do after the call.
_ACTION = re.compile(
    r"\b(?:i'?ll|i will|we'?ll|we will|i'?m going to|i am going to)\s+(?:\w+\s+){0,2}?"
    r"(?:send|call|text|email|post|mail|follow|check|get back|ring|try|arrange|set|update|"
    r"book|transfer|note|mark|remove|process|submit|put|pass)\b"
    r"|\bi'?m (?:taking|sending|putting|removing|adding|noting|booking|updating|transferring)\b"
    r"|\bcall(?:ing)? you (?:back|again)\b|\bcall back\b|\bfollow[- ]up\b|\bget back to you\b"
    r"|\bsms\b|\btext message\b|\bemail\b"
    r"|发短信|短信|发给您|给您发|回电|回拨|再联系|联系您|再打|打给您|跟进|备注|登记|寄给|安排|帮您(?:办|提交|处理)",
    re.IGNORECASE,
)
_WHEN = re.compile(
    r"\b(?:today|tonight|tomorrow|next (?:week|month|monday|tuesday|wednesday|thursday|friday)|"
    r"this (?:week|afternoon|evening|friday)|by (?:monday|tuesday|wednesday|thursday|friday|"
    r"the end|end of)|on (?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)|"
    r"in (?:a few|an?|\d+|two|three) (?:days?|hours?|weeks?)|within \d+|later|shortly|soon)\b"
    r"|明天|后天|下周|稍后|今天|今晚|周[一二三四五六日末]|星期|\d+号|\d+天|工作日内|过几天|马上|待会|月底",
    re.IGNORECASE,
)
_CUSTOMER_WILL = re.compile(r"\b(?:i'?ll|i will|i can|i'?m going to)\b|我", re.IGNORECASE)
_OPENING_TURNS = 8  # the purpose is stated near the start; later lines are the conversation
_MAX_ANSWERED = 300  # characters of the agent's question kept with the customer's answer


@dataclass(frozen=True)
class _Sentence:
    turn: int
    speaker: str
    start: int  # offsets into the turn's redacted text
    end: int
    text: str


def _split(text: str) -> list[tuple[int, int]]:
    """Sentence spans, stripped; a period after "Mr" or inside "5.5" ends nothing."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        if match.group().startswith(".") and _ABBREVIATION.search(text[start : match.end()]):
            continue
        spans.append((start, match.end()))
        start = match.end()
    spans.append((start, len(text)))
    out = []
    for a, b in spans:
        piece = text[a:b]
        lead = len(piece) - len(piece.lstrip())
        if piece.strip():
            out.append((a + lead, a + lead + len(piece.strip())))
    return out


def _sentences(texts: Sequence[str], turns: Sequence[Turn]) -> list[_Sentence]:
    return [_Sentence(i, turn.speaker, a, b, text[a:b])
            for i, (text, turn) in enumerate(zip(texts, turns, strict=True))
            for a, b in _split(text)]


def _content_start(sentence: str) -> int | None:
    """Where the sentence's content begins once its greeting or filler clauses are dropped;
    None when it has none (a greeting, a recording notice, "Mrs. Hughes right?")."""
    start = 0
    for match in [*_CLAUSE_END.finditer(sentence), None]:
        end = match.start() if match else len(sentence)
        clause = sentence[start:end].strip(" \t.!?。！？；")
        if clause and not _OPENING.search(clause):
            return start + len(sentence[start:end]) - len(sentence[start:end].lstrip())
        if match is None:
            return None
        start = match.end()
    return None


def _trimmed(sentence: _Sentence) -> str | None:
    at = _content_start(sentence.text)
    return None if at is None else sentence.text[at:]


def _reason(sentences: list[_Sentence]) -> str:
    """The agent's first line stating the purpose, or the customer's first request (inbound)
    if that comes first; else the agent's first line with any content."""
    fallback = ""
    for s in sentences:
        if s.turn >= _OPENING_TURNS:
            break
        text = _trimmed(s)
        if text is None:
            continue
        if s.speaker == "agent":
            if _PURPOSE.search(text):
                return text
            fallback = fallback or text
        elif _REQUEST.search(text):
            return text
    return fallback


def _opening_only(sentences: list[_Sentence], turn: int) -> bool:
    return all(_trimmed(s) is None for s in sentences if s.turn == turn)


def _decision(sentences: list[_Sentence]) -> _Sentence | None:
    """The customer's last clear decision; a bare "okay" or "好" only if there is none."""
    strong = weak = None
    for s in sentences:
        if s.speaker != "customer" or _QUESTION.search(s.text):
            continue
        if s.turn > 0 and _opening_only(sentences, s.turn - 1):
            continue  # "Go ahead" to "Is that Mr. Wong?" decides nothing
        if _DECIDES.search(s.text):
            strong = s
        elif _AGREES.search(s.text) and not _CLOSING.search(s.text):
            weak = s
    return strong or weak


def _answered(sentences: list[_Sentence], turn: int) -> list[_Sentence]:
    """The agent's words a customer's turn answers: from the agent's last question in the turn
    before (or its last sentence) to the end of it."""
    before = [s for s in sentences if s.turn == turn - 1 and s.speaker == "agent"]
    if not before:
        return []
    questions = [i for i, s in enumerate(before) if _QUESTION.search(s.text)]
    tail = before[questions[-1]:] if questions else before[-1:]
    return tail if sum(len(s.text) for s in tail) <= _MAX_ANSWERED else before[-1:]


def _agreed(sentences: list[_Sentence], texts: Sequence[str]) -> str:
    decision = _decision(sentences)
    if decision is None:
        return ""
    # One span of the transcript: the agent's question, then the customer up to the decision.
    answer = texts[decision.turn][: decision.end].strip()
    asked = _answered(sentences, decision.turn)
    if not asked:
        return answer
    first = asked[0]
    start = first.start + (_content_start(first.text) or 0)  # "嗯，就是…" loses its "嗯"
    return f"{texts[first.turn][start:].strip()} {answer}"


def _next_step(sentences: list[_Sentence]) -> str:
    """The agent's last promise of an action (one with a time wins), else the customer's last
    commitment with a time ("I'll pay on Friday")."""
    best: tuple[int, str] | None = None
    for s in sentences:
        text = _trimmed(s) or ""
        if not text or (_QUESTION.search(text) and s.speaker == "agent"):
            continue
        if s.speaker == "agent" and _ACTION.search(text):
            score = 3 + bool(_WHEN.search(text))
        elif s.speaker == "customer" and _CUSTOMER_WILL.search(text) and _WHEN.search(text):
            score = 1
        else:
            continue
        if best is None or score >= best[0]:
            best = (score, text)
    return best[1] if best else ""


def _clip(text: str, limit: int) -> str:
    """At most ``limit`` characters, cut at a sentence or word boundary; nothing is added (an
    ellipsis would be a word the call did not say)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit]
    for boundary in (_SENTENCE_END, re.compile(r"[\s,，、]")):
        ends = [m.end() for m in boundary.finditer(cut) if m.end() > limit // 2]
        if ends:
            return cut[: ends[-1]].strip(" ,，、")
    return cut


def _note(fields: dict[FieldName, str]) -> WrapUpNote:
    """Redacted and within the model's limits, whatever the source of the text."""
    return WrapUpNote(**{name: _clip(redact(fields.get(name, "")).text.strip(), LIMITS[name])
                         for name in FIELDS})


def extractive_note(turns: list[Turn], language: str | None = None) -> WrapUpNote:
    """A note made of the call's own sentences: the purpose, the decision with the agent line it
    answers, and the promised next step; "" for what the call does not have.

    ``language`` is accepted for symmetry with ``llm_note``: the cues cover English and
    Mandarin at once, and a call may mix them.
    """
    del language
    # Redact first: what the note may quote is the redacted call, whatever the caller passed.
    texts = [" ".join(redact(t.text).text.split()) for t in turns]
    sentences = _sentences(texts, turns)
    return _note({"reason": _reason(sentences), "agreed": _agreed(sentences, texts),
                  "next_step": _next_step(sentences)})


# ---- LLM note ---------------------------------------------------------------------------------

SYSTEM = """You write the wrap-up note for a bank's phone call. Read the transcript and answer \
with exactly three lines:
Reason: why the call happened
Agreed: what the customer agreed to, refused or decided
Next step: who does what next, and when ("none" if nothing was arranged)
Use only facts from the transcript; never add numbers that are not in it."""

# One worked example per language: the 0.5B model follows an example far better than a
# description of the format. Its note is also what a copying model repeats, so the check below
# refuses a field that echoes it.
EXAMPLES: dict[str, tuple[str, str]] = {
    "en": (
        "Agent: Good morning, this is Anna from Harbor Bank, the call is recorded. Am I speaking "
        "to Mr. Cole?\n"
        "Customer: Yes, speaking.\n"
        "Agent: I'm calling about your card renewal; your new card is ready to be posted.\n"
        "Customer: Can you send it to my work address instead?\n"
        "Agent: Of course. I'll update the address and send you an SMS when it ships.\n"
        "Customer: Great, thanks.",
        "Reason: Card renewal: the new card is ready to be posted.\n"
        "Agreed: The card goes to the customer's work address instead.\n"
        "Next step: The agent updates the address and sends an SMS when the card ships.",
    ),
    "zh": (
        "Agent: 喂，您好，我是长青保险的小周，本通话会录音。请问是李女士吗？\n"
        "Customer: 对。\n"
        "Agent: 您的家财险下个月到期，今年的续保方案和去年一样，想问问您要不要续。\n"
        "Customer: 不需要了，我已经在别家买了。\n"
        "Agent: 明白，那我在系统里备注一下，不再打扰您。",
        "Reason: 家财险下个月到期，询问是否续保。\n"
        "Agreed: 客户不续保，已在别家投保。\n"
        "Next step: 坐席在系统里备注，不再致电。",
    ),
}
_ASK = {"en": "Write the wrap-up note for this call.",
        "zh": "Write the wrap-up note for this call, in Chinese."}
HEAD_TURNS = 6  # the opening says why the call happened; the rest of the window is its end
MAX_TURNS = 30
_MAX_LINE = 400  # characters of one turn in the prompt: a long monologue must not fill n_ctx
_STOP = ["\nAgent:", "\nCustomer:", "\nTRANSCRIPT"]

_LABELS: dict[FieldName, re.Pattern[str]] = {
    "reason": re.compile(r"reason(?: for (?:the )?call)?|purpose|原因|来电原因|致电原因|通话原因|"
                         r"目的|事由|理由", re.IGNORECASE),
    "agreed": re.compile(r"agreed|agreement|decision|outcome|约定|达成|结果|商定|决定|同意|"
                         r"协议", re.IGNORECASE),
    "next_step": re.compile(r"next[ _-]?steps?|follow[- ]up|下一步|后续|跟进|后续步骤",
                            re.IGNORECASE),
}
_BULLET = r"(?:[-*•·>]+|\d+[.)、]|[（(]?\d+[)）])?"
_LINE = re.compile(
    rf"^\s*{_BULLET}\s*(?:\*\*|__)?\s*(?P<label>[^:：*_\n]{{1,24}}?)\s*(?:\*\*|__)?\s*"
    rf"(?:[:：]|[-–—](?=\s))\s*(?:\*\*|__)?\s*(?P<value>.*)$"
)
_NOTHING = re.compile(r"^(?:none|n/?a|nothing|no(?:ne)? (?:next step|follow[- ]up)s?|-+|无|没有|"
                      r"暂无|无后续)[.。]?$", re.IGNORECASE)


def _label(text: str) -> FieldName | None:
    for name, pattern in _LABELS.items():
        if pattern.fullmatch(text.strip()):
            return name
    return None


def _value(text: str) -> str:
    text = text.strip().strip("*_").strip()
    if len(text) >= 2 and text[0] + text[-1] in {'""', "''", "“”", "「」", "[]", "()", "<>"}:
        text = text[1:-1].strip()
    return "" if _NOTHING.match(text) else text


# A small model sometimes runs the three fields into one line: "Reason: … Agreed: … Next step: …".
_INLINE_LABEL = re.compile(
    r"(?<=[.。!?！？;；,，\s])\s*(?=(?:\*\*)?(?:Agreed|Next steps?|原因|约定|下一步|后续)"
    r"(?:\*\*)?\s*[:：])")


def parse_note(text: str) -> dict[FieldName, str]:
    """The three fields of the model's reply; tolerant of bullets, bold, full-width colons,
    Chinese labels, a value on the line after its label and chatter around them. A field the
    reply lacks is ""; a field given twice keeps its first value."""
    fields: dict[FieldName, str] = dict.fromkeys(FIELDS, "")
    seen: set[FieldName] = set()
    waiting: FieldName | None = None  # a label whose value is on the next line
    for line in _INLINE_LABEL.sub("\n", text).splitlines():
        match = _LINE.match(line)
        name = _label(match.group("label")) if match else None
        if name is not None and match is not None:
            waiting = None
            if name in seen:
                continue
            seen.add(name)
            value = _value(match.group("value"))
            fields[name] = value
            if not match.group("value").strip():
                waiting = name
        elif waiting is not None and line.strip():
            fields[waiting] = _value(line.lstrip(" -*•·"))
            waiting = None
    return fields


def transcript_lines(turns: Sequence[Turn]) -> list[str]:
    """What the model reads: the opening and the end of a long call, each line redacted."""
    def line(t: Turn) -> str:
        text = " ".join(redact(t.text).text.split())[:_MAX_LINE]
        return f"{'Customer' if t.speaker == 'customer' else 'Agent'}: {text}"

    if len(turns) <= MAX_TURNS:
        return [line(t) for t in turns]
    head, tail = turns[:HEAD_TURNS], turns[-(MAX_TURNS - HEAD_TURNS):]
    left_out = len(turns) - len(head) - len(tail)
    return [*map(line, head), f"({left_out} turns left out)", *map(line, tail)]


def messages(turns: Sequence[Turn], language: str) -> list[ChatMessage]:
    """System prompt and example first, the call last: every wrap-up in a language shares the
    prefix, so the embedded model evaluates it once."""
    lang = language if language in EXAMPLES else "en"
    example, note = EXAMPLES[lang]
    ask = _ASK[lang]
    return [
        ChatMessage(role="system", content=SYSTEM),
        ChatMessage(role="user", content=f"TRANSCRIPT:\n{example}\n\n{ask}"),
        ChatMessage(role="assistant", content=note),
        ChatMessage(role="user", content="TRANSCRIPT:\n" + "\n".join(transcript_lines(turns)) +
                    f"\n\n{ask}"),
    ]


def session_name(language: str) -> str:
    """One session per prompt prefix, not per call: a wrap-up must not evict the call's own
    cache slot, and the next wrap-up in the same language reuses the instructions' KV."""
    return f"wrapup-{language if language in EXAMPLES else 'en'}"


def _plain_number(figure: str) -> str:
    return figure.rstrip("%")  # "0.55" and "0.55%" state the same number


def _echoes(value: str, copies: Iterable[str]) -> bool:
    a = value.lower()
    return any(a == b or SequenceMatcher(None, a, b).ratio() >= 0.8 for b in copies)


def check_note(fields: dict[FieldName, str], turns: Sequence[Turn]) -> WrapUpNote:
    """The model's fields as a note, redacted; LLMError when nothing is usable, a figure is not
    in the call, or a field copies the prompt's example or instructions."""
    note = _note(fields)
    values = {name: getattr(note, name) for name in FIELDS}
    if not any(values.values()):
        raise LLMError("the LLM's wrap-up note is empty: no Reason, Agreed or Next step line")
    # What the model read, not the whole call: it cannot have taken a figure from a turn left
    # out of a long call's window.
    known = {_plain_number(f) for f in _figures("\n".join(transcript_lines(turns)))}
    invented = sorted({f for v in values.values() for f in _figures(v)
                       if _plain_number(f) not in known})
    if invented:
        raise LLMError("the LLM's wrap-up note states figures that are not in the call: "
                       + ", ".join(invented))
    prompt = [v for _, note_text in EXAMPLES.values() for v in parse_note(note_text).values()]
    prompt += [line.split(":", 1)[-1].strip().lower() for line in SYSTEM.splitlines()]
    copied = [name for name, v in values.items() if v and _echoes(v, [p.lower() for p in prompt])]
    if copied:
        raise LLMError("the LLM's wrap-up note copies the prompt's example instead of the call: "
                       + ", ".join(copied))
    _check_shape(values, turns)
    return note


def _check_shape(values: dict[FieldName, str], turns: Sequence[Turn]) -> None:
    """What a degenerate reply looks like: one sentence in two fields, the wrong language."""
    filled = [v for v in values.values() if v]
    if any(_echoes(a.lower(), [b.lower()]) for i, a in enumerate(filled) for b in filled[i + 1:]):
        raise LLMError("the LLM's wrap-up note repeats the same text in two fields")
    call = detect_language(" ".join(t.text for t in turns))
    if detect_language(" ".join(filled)) != call:
        raise LLMError(f"the LLM's wrap-up note is not in the call's language ({call})")


def _complete(text: str) -> bool:
    """All three fields are on finished lines: the rest would be chatter."""
    done = text[: text.rfind("\n") + 1]
    return all(parse_note(done).values())


async def _collect(pieces: AsyncIterator[str]) -> str:
    text = ""
    try:
        async for piece in pieces:
            text += piece
            if _complete(text):
                break
    finally:
        # Stops the generation at once (the embedded model frees its worker for the next call),
        # on early stop, error or timeout alike.
        aclose = getattr(pieces, "aclose", None)
        if aclose is not None:
            await aclose()
    return text


async def llm_note(client: LLMClient, turns: list[Turn], language: str, *,
                   max_tokens: int = 160, timeout_s: float = 60.0) -> WrapUpNote:
    """The LLM's note for the call, checked; LLMError when it fails, times out or is refused."""
    if not turns:
        raise LLMError("no transcript to write a wrap-up note from")
    # Greedy: the same call gives the same draft, and sampling only adds ways to drift from it.
    stream = client.stream(messages(turns, language), session=session_name(language),
                           max_tokens=max_tokens, temperature=0.0, stop=_STOP)
    try:
        async with asyncio.timeout(timeout_s):
            text = await _collect(stream)
    except TimeoutError as exc:
        raise LLMError(f"the LLM wrote no wrap-up note within {timeout_s:g} s") from exc
    except LLMError:
        raise
    except Exception as exc:  # a client outside dialogue.llm may raise its own errors
        raise LLMError(f"the LLM failed writing the wrap-up note: {exc!r}") from exc
    return check_note(parse_note(text), turns)


async def draft_note(client: LLMClient | None, turns: list[Turn], language: str | None
                     ) -> tuple[WrapUpNote, NoteSource]:
    """The LLM's note when there is an LLM and its note passes the checks, else the
    extractive one."""
    language = language or detect_language(" ".join(t.text for t in turns))
    if client is not None:
        try:
            return await llm_note(client, turns, language), "llm"
        except LLMError as exc:
            log.warning("wrap-up note: using the extractive note: %s", exc)
    return extractive_note(turns, language), "extractive"
