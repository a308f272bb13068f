"""PII redaction for transcripts and generated text (zh and en), driven by a rules file.

Spoken and typed numbers reach us in many spellings (ASR output: "6222 0212", "六二二二",
"four five six", "triple one"; typed: "4111/1111/...", fullwidth or Arabic-Indic digits, zero-width
characters between digits), so redaction works in three steps:

1. Normalise: every digit in any script becomes an ASCII digit, invisible characters (format
   characters, combining marks) are dropped and the rest is NFKC-folded and lower-cased, keeping
   for each character where it came from so that findings point into the original text.
2. Read numbers: digits and number words (from `[spoken]` in `rules/redaction.toml`) form
   units; units separated by nothing, whitespace, a separator word ("dash", "uh") or at most two
   non-alphanumeric characters (not % or a currency sign; an ellipsis, a pause, is one) join
   into runs. "oh" is zero inside a number, and starts one only before another digit word ("oh
   seven seven double oh ..."). A comma between short groups ("1,200,000", "12, 24, 36") joins
   only loosely: such a run stays whole only if a Luhn-valid card is in it ("4, 1, 1, 1, ...")
   or it is a phone number read with pauses ("212, 555, 0188"). Dates, times and amounts are
   taken off a run's ends, and a run that is only those ("2024-03-15 10:30") is no number to hide.
3. Classify each run with the `[[rule]]`s, first match wins; a rule may ask for a cue before
   the number (a security-code cue for a CVV, a + for a country code) and rule out what is said
   right before or after it (an expiry, a currency). A run too long for a card (a card read with
   its expiry: "4111 1111 1111 1111 12/27") is searched for a Luhn-valid card at unit
   boundaries; what is left around it is classified again.

Each finding says which rule fired and why, and whether the number passes the check a real one
would (Luhn for a card, the GB 11643 check character for a PRC ID number).
"""

from __future__ import annotations

import functools
import itertools
import re
import tomllib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, PrivateAttr

RULES_FILE = Path(__file__).with_name("rules") / "redaction.toml"

# Zero-width and bidi characters are Cf; combining marks (Mn, Me) ride on the previous
# character. These few are invisible yet letters or symbols by category.
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0\u2800")
_COMMAS = frozenset(",;、،؛٬")  # after NFKC: "，" is ","
# Never between the digits of one number: they make it an amount or a rate.
_BREAKERS = frozenset("%‰‱")
_WORD = re.compile(r"[^\W_]+")
_MAX_GAP = 12  # characters between two units of a number (whitespace and separator word included)
_MAX_GAP_SYMBOLS = 2  # "(212) 555": a bracket and a space; "4111 - 1111"
_MAX_GAP_SPACES = 8
# ASR writes a pause as an ellipsis ("6222 0212… 3456 7890", "……" folds to six dots): one mark.
_ELLIPSIS = re.compile(r"\.{2,}")
_AFTER = 16  # characters after a number that a rule's not_followed_by looks at

_Y = r"(?:19|20)\d{2}"
_MO = r"(?:0?[1-9]|1[0-2])"
_DAY = r"(?:0?[1-9]|[12]\d|3[01])"
_DATE = rf"(?:{_Y}[-./]{_MO}[-./]{_DAY}|{_DAY}[-./]{_DAY}[-./](?:{_Y}|\d{{2}}))"
_TIME = r"(?:[01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:[.,]\d{1,6})?)?"
# An amount in thousands: up to 12 digits, a card number is longer ("411,111,111,111,111").
_AMOUNT = r"\d{1,3}(?:,\d{3}){1,3}(?:\.\d{1,2})?"
# What is written as a date, a time or an amount is none of the numbers to hide.
_ITEM = re.compile(rf"(?<!\d[,.])(?:{_DATE}|{_TIME}|(?P<amount>{_AMOUNT}))(?![,.]?\d)")
_CARD_DIGITS = (13, 19)  # the lengths of a payment card number (ISO/IEC 7812)
_LOOSE = 2
# The groups of a North American number read out with pauses, which ASR writes as commas
# ("212, 555, 0188", "1, 800, 555, 0199"): they stay one number, where "12, 24, 36" is a list.
_PAUSED_PHONE = frozenset({(3, 3, 4), (1, 3, 3, 4)})
_GB11643_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


class Rule(BaseModel):
    name: str
    kind: str
    replacement: str
    why: str
    digits: int | None = None
    min_digits: int | None = None
    max_digits: int | None = None
    allow_x_last: bool = False
    prefix_pattern: str | None = None
    # Regular expressions (on the lower-cased text), one of which must occur in the
    # context_window characters just before the number.
    context: list[str] = []
    context_window: int = 40
    # Regular expressions, none of which may match right after the number ("800 块" and "250
    # dollars" after a security-code cue are amounts, not the code), nor at the end of the text
    # just before it ("CVV 417, expiry 12/27": the nearer cue says what 12/27 is).
    not_followed_by: list[str] = []
    not_preceded_by: list[str] = []
    # In a run longer than max_digits, look for a Luhn-valid number of this rule's length at
    # unit boundaries (a card number followed by its expiry date or CVV).
    luhn_split: bool = False
    _cue: re.Pattern[str] | None = PrivateAttr(default=None)
    _followed: re.Pattern[str] | None = PrivateAttr(default=None)
    _preceded: re.Pattern[str] | None = PrivateAttr(default=None)

    def model_post_init(self, _context: object) -> None:
        self._cue = _any_of(self.context)
        self._followed = _any_of(self.not_followed_by)
        self._preceded = _any_of(self.not_preceded_by)

    def matches(self, digits: str, before: str, after: str = "") -> bool:
        n = len(digits)
        if self.digits is not None and n != self.digits:
            return False
        if self.min_digits is not None and n < self.min_digits:
            return False
        if self.max_digits is not None and n > self.max_digits:
            return False
        if not self.allow_x_last and not digits.isdigit():
            return False
        if self.prefix_pattern and not re.match(self.prefix_pattern, digits):
            return False
        if not (self.context or self.not_preceded_by or self.not_followed_by):
            return True  # most rules: their fields are quicker to read than the patterns
        window = before[-self.context_window :].lower()
        if self._cue is not None and self._cue.search(window) is None:
            return False
        if self._preceded is not None and self._preceded.search(window):
            return False
        return self._followed is None or self._followed.match(after.lower()) is None


def _any_of(patterns: list[str]) -> re.Pattern[str] | None:
    return re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None


class Spoken(BaseModel):
    """How numbers are said: the `[spoken]` table of the rules file."""

    digits: dict[str, str] = {}
    weak_zero: list[str] = []
    teens: dict[str, str] = {}
    tens: dict[str, str] = {}
    multipliers: dict[str, int] = {}
    separators: list[str] = []
    numerals: dict[str, str] = {}  # digit -> the characters that write it


class Finding(BaseModel):
    rule: str
    kind: str
    start: int
    end: int
    why: str
    # The digits pass the check a real number of their length passes (Luhn for 13-19 digits,
    # GB 11643 for an 18-character ID), or a Luhn-valid card is among their groups: what tells
    # an identifier holding a card number from one that merely has many digits.
    checksum_ok: bool = False


class Redacted(BaseModel):
    text: str
    findings: list[Finding]


@functools.cache
def load_rules(path: Path = RULES_FILE) -> tuple[Rule, ...]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return tuple(Rule.model_validate(r) for r in data["rule"])


@functools.cache
def load_spoken(path: Path = RULES_FILE) -> Spoken:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return Spoken.model_validate(data.get("spoken", {}))


def luhn_ok(digits: str) -> bool:
    """The Luhn check every payment card number passes, for 13-19 digits."""
    if not (13 <= len(digits) <= 19 and digits.isascii() and digits.isdigit()):
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def prc_id_ok(number: str) -> bool:
    """The GB 11643 check character of an 18-character PRC resident ID number."""
    if len(number) != 18 or not number[:17].isascii() or not number[:17].isdigit():
        return False
    total = sum(int(a) * w for a, w in zip(number[:17], _GB11643_WEIGHTS, strict=True))
    return "10X98765432"[total % 11] == number[17].upper()


def checksum_ok(digits: str) -> bool:
    return luhn_ok(digits) or prc_id_ok(digits)


def normalize(text: str) -> tuple[str, Sequence[int]]:
    """The text with digits in ASCII, invisible characters dropped, NFKC-folded and lower-cased,
    and for each of its characters the index of the original character it came from."""
    norm, origin, _ = _normalize(text)
    return norm, origin


def _normalize(text: str) -> tuple[str, Sequence[int], set[int]]:
    """normalize(), and where in the normalised text Chinese numerals were."""
    if text.isascii():
        return text.lower(), range(len(text)), set()
    norm = text.translate(_FOLDS)  # fills _FOLDS and _IRREGULAR with what it meets
    if _IRREGULAR.isdisjoint(text):  # one character for one: positions are unchanged
        return norm, range(len(text)), {m.start() for m in _NUMERAL_CHARS.finditer(text)}
    chars: list[str] = []
    origin: list[int] = []
    numeral_at: set[int] = set()
    for i, ch in enumerate(text):
        folded = _FOLDS[ord(ch)]
        if ch in _NUMERALS:
            numeral_at.add(len(origin))
        chars.append(folded)
        origin.extend([i] * len(folded))
    return "".join(chars), origin, numeral_at


def _fold(ch: str) -> str:
    if ch in _INVISIBLE or unicodedata.category(ch) in ("Cf", "Mn", "Me"):
        return ""
    digit = _NUMERALS.get(ch)
    if digit is None:
        digit = unicodedata.digit(ch, None)  # every script's digits; superscripts, circled
    if digit is not None:
        return str(digit)
    return unicodedata.normalize("NFKC", ch).lower()


class _FoldTable(dict[int, str]):
    """str.translate() table that folds each character once, the first time it is met."""

    def __missing__(self, code: int) -> str:
        folded = _fold(chr(code))
        if len(self) < 200_000:
            self[code] = folded
        if len(folded) != 1:
            _IRREGULAR.add(chr(code))
        return folded


_FOLDS = _FoldTable()
_IRREGULAR: set[str] = set()  # characters that fold to none or to several


@dataclass(slots=True)
class _Unit:
    """A piece of a number: a group of adjacent digit characters, or one spoken number word."""

    digits: str
    start: int  # in the normalised text
    end: int
    spoken: bool  # a word, or a Chinese numeral: no thousands separators in speech
    weak: bool = False  # "oh": zero only inside a number


@dataclass(slots=True)
class _Run:
    units: list[_Unit]

    @property
    def digits(self) -> str:
        return "".join(u.digits for u in self.units)


def _units(norm: str, numeral_at: set[int]) -> list[_Unit]:
    units: list[_Unit] = []  # a multiplier ("double") is a unit of "*"s until it meets a digit
    for m in _NUMBER_TOKEN.finditer(norm):
        tok, start, end = m.group(), m.start(), m.end()
        if tok[0].isdigit():
            if not numeral_at.intersection(range(start, end)):
                units.append(_Unit(tok, start, end, spoken=False))  # written together: a group
                continue
            for i, ch in enumerate(tok, start):  # each Chinese numeral is said on its own
                prev = units[-1] if units else None
                if i in numeral_at or prev is None or prev.spoken or prev.end != i:
                    units.append(_Unit(ch, i, i + 1, spoken=i in numeral_at))
                else:
                    prev.digits += ch
                    prev.end = i + 1
        else:
            digits, kind = _WORDS[tok]
            units.append(_Unit(digits, start, end, spoken=kind != "x", weak=kind == "weak"))
    out: list[_Unit] = []
    for unit in units:
        prev = out[-1] if out else None
        close = prev is not None and _tight(norm[prev.end : unit.start])
        if prev and close and prev.digits.startswith("*") and unit.spoken and len(unit.digits) == 1:
            # "double one", "triple oh": the multiplier repeats the digit after it
            out[-1] = _Unit(unit.digits * len(prev.digits), prev.start, unit.end, spoken=True)
        elif (prev and close and unit.spoken and len(unit.digits) == 1 and not unit.weak
              and _WORDS.get(norm[prev.start : prev.end], ("", ""))[1] == "tens"):
            # "forty-one" is 41, not 401
            out[-1] = _Unit(prev.digits[0] + unit.digits, prev.start, unit.end, spoken=True)
        else:
            out.append(unit)
    return [u for u in out if not u.digits.startswith("*")]


def _tight(gap: str) -> bool:
    return not gap.strip(" -\u2010\u2011")


@functools.lru_cache(maxsize=4096)
def _gap_ok(gap: str) -> tuple[bool, bool]:
    """(may two units with this between them be one number, is there a comma in it)."""
    if not gap:
        return True, False
    if len(gap) > _MAX_GAP:
        return False, False
    words = _WORD.findall(gap)
    if len(words) > 1 or (words and words[0] not in _SEPARATORS):
        return False, False
    rest = _ELLIPSIS.sub("\u2026", _WORD.sub("", gap))
    symbols = [c for c in rest if not c.isspace()]
    if len(symbols) > _MAX_GAP_SYMBOLS or len(rest) - len(symbols) > _MAX_GAP_SPACES:
        return False, False
    if any(c in _BREAKERS or unicodedata.category(c) == "Sc" for c in symbols):
        return False, False
    return True, any(c in _COMMAS for c in symbols)


def _joins(left: _Unit, right: _Unit, gap: str) -> int:
    """0: two numbers; 1: one number; _LOOSE: one number only if it then reads as a card."""
    ok, comma = _gap_ok(gap)
    if not ok:
        return 0
    if comma and not (left.spoken or right.spoken):
        # "1,200,000" and "12, 24, 36 months" are amounts and lists; "4111,1111,1111,1111" and
        # "6222,0212,3456,7890,128" are card numbers: their groups are longer. ASR also writes
        # digits read out slowly as "4, 1, 1, 1, ...": see _LOOSE.
        a, b = len(left.digits), len(right.digits)
        return 1 if a >= 3 and b >= 3 and not (a <= 3 and b == 3) else _LOOSE
    return 1


def _runs(norm: str, units: list[_Unit]) -> list[_Run]:
    runs: list[_Run] = []
    loose: list[set[int]] = []  # per run: the units joined to the one before only loosely
    closed = True  # the last run ended with an X (an ID number's check character)
    for k, unit in enumerate(units):
        last = runs[-1].units[-1] if runs else None
        joins = 0 if closed or last is None else _joins(last, unit, norm[last.end : unit.start])
        if joins:
            if joins == _LOOSE:
                loose[-1].add(len(runs[-1].units))
            runs[-1].units.append(unit)
            closed = unit.digits == "X"
        elif unit.digits == "X" or (unit.weak and not _leads(norm, unit, units[k + 1 : k + 2])):
            continue  # "Oh, hello" holds no number; an X starts none
        else:
            runs.append(_Run([unit]))
            loose.append(set())
            closed = False
    out = []
    for run, cuts in zip(runs, loose, strict=True):
        # An X only belongs to a run as the 18th character of an ID number.
        if run.units[-1].digits == "X" and len(run.digits) != 18:
            run.units.pop()
        if run.units:
            out += _pieces(norm, run.units, cuts)
    return out


def _leads(norm: str, weak: _Unit, after: list[_Unit]) -> bool:
    """A weak zero starts a number when a digit word follows it after a space: "oh seven seven
    double oh, nine ..." (a UK mobile said aloud); "Oh, hello" and "Oh, 4111 ..." start none."""
    nxt = after[0] if after else None
    return (nxt is not None and nxt.spoken and not nxt.weak
            and norm[weak.end : nxt.start].isspace())


def _pieces(norm: str, units: list[_Unit], cuts: set[int]) -> list[_Run]:
    """The numbers a run holds: none if it is only dates, times and amounts ("2024-03-15 10:30",
    "1,200,000 - 1,500,000"); dates, times and amounts at its ends taken off ("2024-03-15, 18
    months"); its loose joins (cuts) undone unless a card number is in it ("4, 1, 1, 1, ..."
    and "411,111,111,111,111" are read-out cards, "12, 24, 36" is a list) or it is a phone
    number read with pauses ("212, 555, 0188")."""
    items = _items(norm, units)
    if sum(j - i for i, j, _ in items) == len(units):
        return []
    a, b = 0, len(units)
    # An amount only comes off where a list goes on from it ("$91,800.84, 60, 36 months").
    for i, j, dated in items:
        if i == a and (dated or j in cuts):
            a = j
    for i, j, dated in reversed(items):
        if j == b and (dated or i in cuts):
            b = i
    cuts = {c - a for c in cuts if a < c < b}
    units = units[a:b]
    if (not cuts or _luhn_window(units, *_CARD_DIGITS) is not None
            or tuple(len(u.digits) for u in units) in _PAUSED_PHONE):
        return [_Run(units)]
    out = []
    for i, j in itertools.pairwise([0, *sorted(cuts), len(units)]):
        out += _pieces(norm, units[i:j], set())
    return out


def _items(norm: str, units: list[_Unit]) -> list[tuple[int, int, bool]]:
    """(first, end, is a date or time) unit indices of the dates, times and amounts written in
    a run, in order."""
    if all(u.spoken for u in units):
        return []
    end_of = {u.end: k for k, u in enumerate(units)}
    out, k = [], 0
    while k < len(units):
        m = None if units[k].spoken else _ITEM.match(norm, units[k].start, units[-1].end)
        last = end_of.get(m.end()) if m else None
        if m and last is not None and not any(u.spoken for u in units[k : last + 1]):
            out.append((k, last + 1, m.lastgroup != "amount"))
            k = last + 1
        else:
            k += 1
    return out


def redact(text: str, rules: tuple[Rule, ...] | None = None) -> Redacted:
    rules = rules or load_rules()
    norm, origin, numeral_at = _normalize(text)
    units = _units(norm, numeral_at)
    if not units:
        return Redacted.model_construct(text=text, findings=[])
    findings: list[Finding] = []
    for run in _runs(norm, units):
        findings += _classify(run, rules, text, origin)
    pieces, last = [], 0
    by_name = {r.name: r for r in rules}
    for f in findings:
        pieces.append(text[last : f.start])
        pieces.append(by_name[f.rule].replacement)
        last = f.end
    pieces.append(text[last:])
    return Redacted.model_construct(text="".join(pieces), findings=findings)


def _classify(run: _Run, rules: tuple[Rule, ...], text: str,
              origin: Sequence[int]) -> list[Finding]:
    """Findings for a run: the first rule that matches it whole; or, for a run too long for a
    card, each Luhn-valid card in it and what the rest before each one is (a loop, not
    recursion: a transcript may hold thousands of digits in a row)."""
    units = run.units
    offsets = _offsets(units)
    digits = run.digits
    reach = max((r.context_window for r in rules if r.context), default=0)

    def whole(a: int, b: int) -> Finding | tuple[int, int, Rule] | None:
        number = digits[offsets[a] : offsets[b]]
        start, end = origin[units[a].start], origin[units[b - 1].end - 1] + 1
        before, after = text[max(0, start - reach) : start], text[end : end + _AFTER]
        for rule in rules:
            if rule.matches(number, before, after):
                # "601174999416031/1227" is 19 digits and no card, but a card and its expiry
                valid = (checksum_ok(number)
                         or _window(offsets, digits, a, b, *_CARD_DIGITS) is not None)
                return Finding.model_construct(rule=rule.name, kind=rule.kind, start=start,
                                               end=end, why=rule.why, checksum_ok=valid)
            if rule.luhn_split and rule.max_digits is not None and len(number) > rule.max_digits:
                found = _window(offsets, digits, a, b, rule.min_digits or 1, rule.max_digits)
                if found is not None:
                    return (*found, rule)
        return None

    out: list[Finding] = []
    a, b = 0, len(units)
    while a < b:
        result = whole(a, b)
        if not isinstance(result, tuple):
            out += [result] if result is not None else []
            break
        i, j, rule = result
        before = whole(a, i) if a < i else None  # no card starts before i: nothing to split
        if isinstance(before, Finding):
            out.append(before)
        out.append(Finding.model_construct(
            rule=rule.name, kind=rule.kind, start=origin[units[i].start],
            end=origin[units[j - 1].end - 1] + 1, why=rule.why, checksum_ok=True))
        a = j
    return out


def _offsets(units: list[_Unit]) -> list[int]:
    offsets = [0]
    for u in units:
        offsets.append(offsets[-1] + len(u.digits))
    return offsets


def _luhn_window(units: list[_Unit], lo: int, hi: int) -> tuple[int, int] | None:
    """The earliest, then longest, Luhn-valid span of whole units of lo..hi digits."""
    return _window(_offsets(units), "".join(u.digits for u in units), 0, len(units), lo, hi)


def _window(offsets: list[int], digits: str, a: int, b: int, lo: int,
            hi: int) -> tuple[int, int] | None:
    """_luhn_window() within units a..b, given the units' digit offsets and digits."""
    if offsets[b] - offsets[a] < lo or not digits.isdigit():
        return None
    # Luhn sums of any slice in O(1): prefix sums with the even, or the odd, positions doubled
    # (which ones are doubled depends on where the slice ends).
    sums: tuple[list[int], list[int]] = ([0], [0])
    for q, ch in enumerate(digits):
        d = ord(ch) - 48
        twice = d * 2 - 9 if d > 4 else d * 2
        sums[0].append(sums[0][-1] + (twice if q % 2 == 0 else d))
        sums[1].append(sums[1][-1] + (twice if q % 2 == 1 else d))
    for i in range(a, b):
        j = i + 1
        while j <= b and offsets[j] - offsets[i] <= hi:
            j += 1
        for k in range(j - 1, i, -1):  # longest first; at most hi units to look at
            start, end = offsets[i], offsets[k]
            if end - start < lo:
                break
            doubled = sums[(end - 2) % 2]  # the second digit from the right is doubled
            if (doubled[end] - doubled[start]) % 10 == 0:
                return i, k
    return None


def _word_table(spoken: Spoken) -> dict[str, tuple[str, str]]:
    """Each number word (lower case) -> (its digits, what kind of word it is)."""
    words = {w: ("0", "weak") for w in spoken.weak_zero}
    words |= {w: (d, "digit") for w, d in spoken.digits.items()}
    words |= {w: (d, "teen") for w, d in spoken.teens.items()}
    words |= {w: (d + "0", "tens") for w, d in spoken.tens.items()}
    words |= {w: ("*" * n, "times") for w, n in spoken.multipliers.items()}
    words["x"] = ("X", "x")  # the check character of an ID number
    return words


_SPOKEN = load_spoken()
_NUMERALS = {ch: digit for digit, chars in _SPOKEN.numerals.items() for ch in chars}
_NUMERAL_CHARS = re.compile("[" + re.escape("".join(_NUMERALS)) + "]")
_SEPARATORS = frozenset(_SPOKEN.separators)
_WORDS = _word_table(_SPOKEN)
# Digits, and number words not inside a longer Latin word ("someone", "often"), in the
# normalised text; next to a Chinese character is fine ("号double four").
_NUMBER_TOKEN = re.compile(
    r"\d+|(?<![a-z\u00e0-\u024f])(?:"
    + "|".join(re.escape(w) for w in sorted(_WORDS, key=len, reverse=True))
    + r")(?![a-z\u00e0-\u024f])"
)
