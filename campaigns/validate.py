"""Turning one raw event (a model, a dict, JSON text) into a row the store may write.

The store trusts no producer: every event is validated again and every string in it is checked
again here, so that a producer that forgot to redact (or an old outbox file) still cannot put a
card number into the database. The check knows no event class: it walks the fields of whatever
model the event is, nested models, lists and dicts included, and treats each string by what its
field holds. Free text (`text`, `why`, `detail` ...: see `is_free_text`) is redacted; any other
string is an identifier or a label, stored as given, so one that holds a card or PRC ID number
refuses the event. What fails becomes a `Rejection` with a reason a person can act on and the
raw text, itself redacted, for `rejected_events`.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from campaigns.events import EVENT_ADAPTER, CallEvent
from dialogue.redaction import luhn_ok, redact

RawEvent = CallEvent | dict[str, Any] | str | bytes
MAX_RAW_CHARS = 20_000  # a rejected payload is kept for diagnosis, not archived in full
# Kinds of finding that must never be stored; a phone number in a transcript is redacted too,
# but a second pass that still finds one is not a reason to drop the utterance.
FORBIDDEN_KINDS = {"CARD", "ID"}
_REAL_MAX = 3.4e38  # float4, the type of start_s, end_s, latency_ms
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_JSON_ESCAPE = re.compile(r"\\u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})"
                          r"|\\u([0-9a-fA-F]{4})")
# Fields whose strings are free text, what someone said or wrote: redacted before storing. A
# model can say so of any field with Field(json_schema_extra={"free_text": True}) (or False).
FREE_TEXT_FIELDS = frozenset({
    "text", "stable_text", "why", "reason", "detail", "context", "evidence", "note", "notes",
    "comment", "message", "summary", "description", "transcript",
})
_REJECTED_KEY = "callwise_rejected"  # an outbox row that is a rejection, not an event
_KIND_NAMES = {
    "CARD": "a card number (13-19 digits that pass the Luhn check)",
    "ID": "a PRC ID number (18 characters that pass the GB 11643 check)",
}


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
    replayed = _replayed_rejection(raw, index)
    if replayed is not None:
        return replayed
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
    missing = _missing_identity(raw)
    if missing:
        # A model may default them; an event from outside may not: an id made up here would
        # differ on every redelivery, and the event would be stored twice.
        return Rejection(index, f"{_label(event)}: {' and '.join(missing)} missing: the "
                         "producer sets them once, so a redelivery is recognised",
                         _raw_text(raw))
    problem = _check_values(event)
    if problem is None:
        event, problem = _redacted(event)
    if problem is not None:
        return Rejection(index, f"{_label(event)}: {problem}", _raw_text(raw))
    return CleanEvent(index, event, event.model_dump_json())


def _missing_identity(raw: RawEvent) -> list[str]:
    if isinstance(raw, BaseModel):
        return []
    data: object = raw
    if isinstance(raw, str | bytes):
        try:
            data = json.loads(raw)
        except ValueError:
            return []  # it validated: not reached
    if not isinstance(data, dict):
        return []
    return [key for key in ("event_id", "at") if key not in data]


def rejection_text(rejection: Rejection) -> str:
    """A rejection as the outbox keeps it. Replayed, it is the same rejection again: its raw
    text, once redacted, may read as a valid event ("agent_id": "id-[CARD]"), which must not be
    stored in place of the refusal."""
    body = {"reason": rejection.reason, "raw": rejection.raw}
    return json.dumps({_REJECTED_KEY: body}, ensure_ascii=False)


def _replayed_rejection(raw: object, index: int) -> Rejection | None:
    if isinstance(raw, bytes) and _REJECTED_KEY.encode() in raw:
        raw = raw.decode("utf-8", errors="replace")
    if not isinstance(raw, str) or _REJECTED_KEY not in raw:
        return None
    try:
        data = json.loads(raw)
        body = data[_REJECTED_KEY]
        reason, text = body["reason"], body["raw"]
    except (ValueError, TypeError, KeyError):
        return None
    if len(data) != 1 or not isinstance(reason, str) or not isinstance(text, str):
        return None
    # Whoever wrote it, it is redacted again (the reason is, by Rejection itself).
    return Rejection(index, reason, redact_keeping_ids(_valid_unicode(text[:MAX_RAW_CHARS])))


def is_free_text(name: str, field: FieldInfo | None = None) -> bool:
    """Whether a field holds free text (redacted) rather than an identifier or label (checked,
    kept as given): what its model says, else what its name says."""
    extra = field.json_schema_extra if field is not None else None
    if isinstance(extra, dict) and isinstance(extra.get("free_text"), bool):
        return bool(extra["free_text"])
    return name in FREE_TEXT_FIELDS or name.endswith("_text")


@functools.lru_cache(maxsize=16384)
def identifier_problem(value: str) -> str | None:
    """Why an identifier or label cannot be stored, or None.

    Redacting an id would corrupt it (and the rows keyed by it), so an id holding a card or ID
    number refuses its event instead. Only a number that passes its check (Luhn, GB 11643)
    counts: an id is typed, not misheard, and "call-1728391028371" is a timestamp. UUIDs are
    left out, as in redact_keeping_ids()."""
    for piece in _UUID.split(value):
        for f in redact(piece).findings:
            if f.kind in FORBIDDEN_KINDS and f.checksum_ok:
                return (
                    f"holds what reads as {_KIND_NAMES.get(f.kind, f.kind)}; an identifier "
                    "is stored as given, never redacted, so the event is refused"
                )
    return None


def redact_text(text: str) -> tuple[str, str | None]:
    """Redacted text, or a reason when a second pass still finds something forbidden."""
    first = redact(text)
    if not first.findings:
        return text, None  # a second pass over the same text would find nothing either
    result = first.text
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
    """What the schema accepts but PostgreSQL would refuse (and so fail the whole batch); the
    strings, at any depth, are checked by _scrub() on its way through them."""
    for name, value in event:  # the top-level numbers are columns (real, integer)
        if isinstance(value, float) and not (math.isfinite(value) and abs(value) < _REAL_MAX):
            return f"{name} is {value} (must be a finite number a real column can hold)"
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**31:
            return f"{name} is {value} (must fit a 32-bit integer)"
    return None


def _unstorable(value: str, path: str) -> str | None:
    """Why PostgreSQL would refuse this string (as text or in jsonb), or None."""
    if "\x00" in value:
        return f"{path} contains a NUL character"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{path} is not valid Unicode (a lone surrogate)"
    return None


def _redacted(event: CallEvent) -> tuple[CallEvent, str | None]:
    """The event with its free texts redacted, or a reason it cannot be stored: an identifier,
    label or number holding a card or ID number, or a text still holding one."""
    cleaned, problem = _scrub(event, "", free=False)
    if problem is not None:
        return event, problem
    if cleaned is event:
        return event, None
    try:
        # A replacement can be longer than what it hides ("123" -> "[CVV]"): still valid?
        return EVENT_ADAPTER.validate_python(cleaned.model_dump()), None
    except ValidationError as err:
        return event, f"not valid once redacted: {describe_errors(err, None)}"


def _scrub(value: Any, path: str, free: bool) -> tuple[Any, str | None]:
    """(value with its free texts redacted, problem); unchanged parts are returned as given."""
    if isinstance(value, str):
        problem = _unstorable(value, path)
        if problem is not None:
            return value, problem
        if free:
            text, problem = redact_text(value)
            return (value if text == value else text), problem and f"{path}: {problem}"
        problem = identifier_problem(value)
        return value, problem and f"{path} {problem}"
    if isinstance(value, BaseModel):
        updates = {}
        for name, field_free in _fields(type(value)):
            item = getattr(value, name)
            if item is None or isinstance(item, bool | UUID | datetime):
                continue
            new, problem = _scrub(item, _field_path(path, name), field_free)
            if problem is not None:
                return value, problem
            if new is not item:
                updates[name] = new
        return (value.model_copy(update=updates) if updates else value), None
    if isinstance(value, list | tuple):
        items, changed = [], False
        for i, item in enumerate(value):
            new, problem = _scrub(item, f"{path}[{i}]", free)
            if problem is not None:
                return value, problem
            items.append(new)
            changed = changed or new is not item
        if not changed:
            return value, None
        return (items if isinstance(value, list) else tuple(items)), None
    if isinstance(value, dict):
        entries, changed = {}, False
        for key, item in value.items():
            _, problem = _scrub(key, f"{path} key", free=False)  # a key is a name, not text
            if problem is not None:
                return value, problem
            new, problem = _scrub(item, f"{path}[{key!r}]", free)
            if problem is not None:
                return value, problem
            entries[key] = new
            changed = changed or new is not item
        return (entries if changed else value), None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        # A number goes into the payload as written: 4111111111111111.0 is a card number too.
        if luhn_ok(str(int(abs(value)))):
            return value, (
                f"{path} is a number that reads as a card number (13-19 digits passing the "
                "Luhn check); the store keeps no card number, even as a number"
            )
    return value, None


@functools.cache
def _fields(model: type[BaseModel]) -> tuple[tuple[str, bool], ...]:
    """(name, holds free text) for each field of a model class, worked out once per class."""
    return tuple((name, is_free_text(name, f)) for name, f in model.model_fields.items())


def _field_path(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


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
    if isinstance(raw, str | bytes):
        # "\uff14\uff11..." is a card number too: redaction must see the characters.
        text = _JSON_ESCAPE.sub(_unescape, text)
    # PostgreSQL text cannot hold NUL; the reason already says it was there.
    text = text.replace("\x00", "\\u0000")[:MAX_RAW_CHARS]
    return redact_keeping_ids(_valid_unicode(text))


def _unescape(m: re.Match[str]) -> str:
    if m.group(3) is not None:
        char = chr(int(m.group(3), 16))
        # An escaped quote, backslash or control character stays escaped: the text stays JSON.
        return m.group() if char in '"\\' or char < " " else char
    high, low = int(m.group(1), 16), int(m.group(2), 16)
    return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))


def _valid_unicode(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")
