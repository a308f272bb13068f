"""Turning one raw event (a model, a dict, JSON text) into a row the store may write.

The store trusts no producer: every event is validated again and every free text is redacted
again here, so that a producer that forgot to redact (or an old outbox file) still cannot put a
card number into the database. What fails becomes a `Rejection` with a reason a person can act
on and the raw text, itself redacted, for `rejected_events`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ValidationError

from campaigns.events import EVENT_ADAPTER, CallEvent, SuggestionShown, UtteranceSaid
from dialogue.redaction import redact

RawEvent = CallEvent | dict[str, Any] | str | bytes
MAX_RAW_CHARS = 20_000  # a rejected payload is kept for diagnosis, not archived in full
# Kinds of finding that must never be stored; a phone number in a transcript is redacted too,
# but a second pass that still finds one is not a reason to drop the utterance.
FORBIDDEN_KINDS = {"CARD", "ID"}
_REAL_MAX = 3.4e38  # float4, the type of start_s, end_s, latency_ms
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass(slots=True)
class CleanEvent:
    index: int
    event: CallEvent
    payload: str  # the event as JSON, texts redacted: what goes into events.payload

    @property
    def event_id(self) -> UUID:
        return self.event.event_id

    @property
    def call_id(self) -> str:
        return self.event.call_id

    @property
    def type(self) -> str:
        return self.event.type

    @property
    def at(self) -> datetime:
        return self.event.at


@dataclass(slots=True)
class Rejection:
    index: int
    reason: str
    raw: str  # redacted

    def __post_init__(self) -> None:
        # A reason quotes what it found wrong (a type, an id), which may itself be a number.
        self.reason = redact_keeping_ids(_valid_unicode(self.reason))

    def message(self) -> str:
        return f"event #{self.index}: {self.reason}"


@dataclass(slots=True)
class PreparedBatch:
    """A batch after validation and redaction: what Store.write() takes."""

    good: list[CleanEvent]
    rejected: list[Rejection]
    duplicates: int  # the same event_id more than once in this batch

    def __len__(self) -> int:
        return len(self.good) + len(self.rejected) + self.duplicates


def prepare_batch(raws: Iterable[RawEvent], offset: int = 0) -> PreparedBatch:
    """Validate and redact a batch (CPU only: run a large one in a thread)."""
    good: dict[UUID, CleanEvent] = {}
    rejected: list[Rejection] = []
    duplicates = 0
    for i, raw in enumerate(raws):
        item = clean(raw, offset + i)
        if isinstance(item, Rejection):
            rejected.append(item)
        elif item.event_id in good:
            duplicates += 1
        else:
            good[item.event_id] = item
    return PreparedBatch(list(good.values()), rejected, duplicates)


def clean(raw: RawEvent, index: int = 0) -> CleanEvent | Rejection:
    """Validate and redact one event; never raises for bad input."""
    try:
        if isinstance(raw, BaseModel):
            # A model may have been built with model_construct() or mutated: check it again.
            event = EVENT_ADAPTER.validate_python(raw.model_dump())
        elif isinstance(raw, dict):
            event = EVENT_ADAPTER.validate_python(raw)
        elif isinstance(raw, str | bytes):
            event = EVENT_ADAPTER.validate_json(raw)
        else:
            return Rejection(index, f"not an event: a {type(raw).__name__}", _raw_text(raw))
    except ValidationError as err:
        return Rejection(index, describe_errors(err, raw), _raw_text(raw))
    problem = _check_values(event)
    if problem is None:
        event, problem = _redacted(event)
    if problem is not None:
        return Rejection(index, f"{_label(event)}: {problem}", _raw_text(raw))
    return CleanEvent(index, event, event.model_dump_json())


def redact_text(text: str) -> tuple[str, str | None]:
    """Redacted text, or a reason when a second pass still finds something forbidden."""
    result = redact(text).text
    leftover = {f.kind for f in redact(result).findings}
    if leftover & FORBIDDEN_KINDS:
        return result, f"text still holds a {'/'.join(sorted(leftover))} number after redaction"
    return result, None


def redact_keeping_ids(text: str) -> str:
    """Redact a diagnostic text but leave UUIDs whole: the redactor would read the digit groups
    of an event id as a phone number, and a mangled id cannot be looked up. (32 digits in a row
    match no rule, so a UUID cannot be hiding a card number.)"""
    pieces = _UUID.split(text)
    ids = _UUID.findall(text)
    out = [redact(pieces[0]).text]
    for found, piece in zip(ids, pieces[1:], strict=True):
        out += [found, redact(piece).text]
    return "".join(out)


def describe_errors(err: ValidationError, raw: object) -> str:
    head = _label_raw(raw)
    parts = []
    for e in err.errors(include_url=False):
        kind, loc = e["type"], [str(x) for x in e["loc"]]
        field = ".".join(loc[1:]) if len(loc) > 1 else ".".join(loc)
        ctx = e.get("ctx") or {}
        if kind == "json_invalid":
            parts.append(f"not valid JSON ({ctx.get('error', e['msg'])})")
        elif kind == "union_tag_invalid":
            parts.append(
                f"unknown event type {ctx.get('tag')!r} "
                f"(expected one of {ctx.get('expected_tags')})"
            )
        elif kind == "union_tag_not_found":
            parts.append("no 'type' field saying which event this is")
        elif kind == "missing":
            parts.append(f"missing field {field!r}")
        elif kind == "extra_forbidden":
            parts.append(f"unexpected field {field!r}")
        elif kind == "timezone_aware":
            parts.append(
                f"{field!r} has no time zone (a naive timestamp is ambiguous; "
                "send an offset such as +08:00 or Z)"
            )
        else:
            parts.append(f"{field or 'event'}: {e['msg']}" if field else e["msg"])
    return f"{head}: {'; '.join(parts)}" if head else "; ".join(parts)


# -- helpers ----------------------------------------------------------------------------------


def _check_values(event: CallEvent) -> str | None:
    """What the schema accepts but PostgreSQL would refuse (and so fail the whole batch)."""
    for name, value in event:
        if isinstance(value, float) and not (math.isfinite(value) and abs(value) < _REAL_MAX):
            return f"{name} is {value} (must be a finite number a real column can hold)"
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**31:
            return f"{name} is {value} (must fit a 32-bit integer)"
        if isinstance(value, str):
            if "\x00" in value:
                return f"{name} contains a NUL character"
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return f"{name} is not valid Unicode (a lone surrogate)"
    return None


def _redacted(event: CallEvent) -> tuple[CallEvent, str | None]:
    if not isinstance(event, UtteranceSaid | SuggestionShown):
        return event, None
    text, problem = redact_text(event.text)
    if text != event.text:
        event = event.model_copy(update={"text": text})
    return event, problem


def _label(event: CallEvent) -> str:
    return f"{event.type} {event.event_id} (call {event.call_id})"


def _label_raw(raw: object) -> str:
    data: Any = raw
    if isinstance(raw, str | bytes):
        try:
            data = json.loads(raw)
        except ValueError:
            return ""
    if isinstance(raw, BaseModel):
        data = raw.model_dump(mode="json")
    if not isinstance(data, dict):
        return ""
    kind = data.get("type", "event")
    event_id = data.get("event_id")
    text = f"{kind} {event_id}" if event_id else str(kind)
    return f"{text} (call {data['call_id']})" if data.get("call_id") else text


def _raw_text(raw: object) -> str:
    if isinstance(raw, bytes):
        text = raw.decode("utf-8", errors="replace")
    elif isinstance(raw, str):
        text = raw
    elif isinstance(raw, BaseModel):
        text = raw.model_dump_json()
    else:
        try:
            text = json.dumps(raw, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(raw)
    # PostgreSQL text cannot hold NUL; the reason already says it was there.
    text = text.replace("\x00", "\\u0000")[:MAX_RAW_CHARS]
    return redact_keeping_ids(_valid_unicode(text))


def _valid_unicode(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")
