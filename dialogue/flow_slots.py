"""Slot extractors: the value a customer gave (months, time phrase, amount, date) in en or zh.

They read the redacted transcript with regular expressions: fast, predictable, no model. Both
languages are tried on every utterance because callers mix them ("明天 3pm"). A bare number
("six", "六吧") fills a months or amount slot only in a short answer, where it can mean nothing
else.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation

from pydantic import BaseModel, Field

from .flow_schema import SlotSpec


class SlotValue(BaseModel):
    text: str = Field(description="the words that filled the slot, as heard")
    value: str = Field(description="normalised: months '6', amount '1500.5', date ISO, time text")
    say: str = Field(description="what `{slot}` puts in a bot line")


def extract(spec: SlotSpec, text: str, today: date) -> SlotValue | None:
    found = _EXTRACTORS[spec.type](text, today)
    allowed = spec.allowed()
    if found is not None and allowed is not None and int(found.value) not in allowed:
        return None
    return found


# ---- numbers ----------------------------------------------------------------------------------

_EN_NUMBERS = {
    word: n
    for n, word in enumerate("one two three four five six seven eight nine ten eleven".split(), 1)
} | {"twelve": 12, "eighteen": 18, "twenty": 20, "twenty-four": 24, "thirty": 30}
_EN_NUM = r"\d{1,2}|" + "|".join(sorted(_EN_NUMBERS, key=len, reverse=True))
_CN_DIGITS = {c: n for n, c in enumerate("零一二三四五六七八九")} | {"〇": 0, "两": 2}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000}
_CN_NUM = r"[\d零〇一二两三四五六七八九十百千万]"
_SHORT_ANSWER_WORDS = 4
_CJK = re.compile(r"[\u4e00-\u9fff]")
# Words around a bare number in a short Chinese answer: "那就六个吧", "选十二期的".
_ZH_FILLERS = re.compile(r"[\s,.，。!！?？、~嗯好吧呢啊呀哦的要选我就那个分期]")


def en_number(word: str) -> int | None:
    word = word.lower().strip()
    return int(word) if word.isdigit() else _EN_NUMBERS.get(word)


def cn_number(text: str) -> int | None:
    """'十二' → 12, '三千五' → 3500 (spoken short form), '两万' → 20000, '1500' → 1500."""
    if text.isdigit() and text.isascii():
        return int(text)
    total = section = 0
    digit: int | None = None
    last_unit, zero_since_unit = 1, False
    for ch in text:
        if ch.isascii() and ch.isdigit():
            digit = (digit or 0) * 10 + int(ch)
        elif ch in _CN_DIGITS:
            zero_since_unit |= _CN_DIGITS[ch] == 0
            digit = _CN_DIGITS[ch]
        elif ch in _CN_UNITS:
            section += (1 if digit is None else digit) * _CN_UNITS[ch]
            digit, last_unit, zero_since_unit = None, _CN_UNITS[ch], False
        elif ch == "万":
            total += (section + (digit or 0)) * 10000
            section, digit, last_unit, zero_since_unit = 0, None, 10000, False
        else:
            return None
    if digit is not None:
        # "三千五" is 3500: a trailing digit counts in the next smaller unit, unless a 零 came.
        scale = 1 if zero_since_unit or last_unit == 1 else last_unit // 10
        section += digit * scale
    value = total + section
    return value if value or "零" in text or "0" in text else None


def _slot(match: re.Match[str], value: object, say: str | None = None) -> SlotValue:
    text = " ".join(match.group().split())
    return SlotValue(text=text, value=str(value), say=str(value) if say is None else say)


def _longest(
    patterns: list[re.Pattern[str]],
    text: str,
    keep: Callable[[re.Match[str]], bool] = lambda m: True,
) -> re.Match[str] | None:
    matches = [m for p in patterns for m in p.finditer(text) if m.group().strip() and keep(m)]
    return max(matches, key=lambda m: (len(m.group()), -m.start()), default=None)


# ---- months -----------------------------------------------------------------------------------

_MONTHS_EN = re.compile(
    rf"(?<!\w)(?<!\bin )({_EN_NUM})[\s-]*(?:months?|monthly|instal{{1,2}}ments?|payments?)(?!\w)",
    re.IGNORECASE,
)
_YEAR_EN = re.compile(r"(?<!\w)(?<!\bin )(half a|a|one|1) year(?!\w)", re.IGNORECASE)
_MONTHS_ZH = re.compile(rf"({_CN_NUM}{{1,3}})\s*(?:期|个月)(?!后|以后|之后|内|前)")
_SPLIT_ZH = re.compile(rf"分({_CN_NUM}{{1,3}})(?=$|[\s，。,.!！?？吧呢啊])")
_YEAR_ZH = re.compile(r"(半年|一年)(?!后|以后|之后|内|前)")
_EN_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*", re.IGNORECASE)


def months(text: str, _today: date) -> SlotValue | None:
    if m := _MONTHS_EN.search(text):
        return _slot(m, en_number(m.group(1)))
    if m := _MONTHS_ZH.search(text) or _SPLIT_ZH.search(text):
        return _slot(m, cn_number(m.group(1)))
    if m := _YEAR_EN.search(text) or _YEAR_ZH.search(text):
        return _slot(m, 6 if m.group(1).lower().startswith("half") or m.group(1) == "半年" else 12)
    return _bare_number(text)


def _bare_number(text: str) -> SlotValue | None:
    """A short answer that is just a number: "six", "12 please", "六吧", "十二"."""
    words = _EN_WORD.findall(text)
    numbers = [w for w in words if en_number(w) is not None]
    if 0 < len(words) <= _SHORT_ANSWER_WORDS and len(numbers) == 1:
        value = en_number(numbers[0])
        return SlotValue(text=text.strip(), value=str(value), say=str(value))
    rest = _ZH_FILLERS.sub("", text)
    if rest and not words and (value := cn_number(rest)) is not None:
        return SlotValue(text=text.strip(), value=str(value), say=str(value))
    return None


# ---- time phrases (when to call back) --------------------------------------------------------

_WEEKDAYS_EN = "monday|tuesday|wednesday|thursday|friday|saturday|sunday"
_CLOCK_NUM = (
    r"(?:\d{1,2}(?::\d{2})?"
    r"|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)"
)
_EN_DAY = (
    rf"(?:the day after tomorrow|today|tonight|tomorrow|later today"
    rf"|(?:this|next|coming) (?:week|weekend|{_WEEKDAYS_EN})|(?:on )?(?:{_WEEKDAYS_EN})"
    rf"|(?:at |on |over )?the weekend)"
)
_EN_PART = r"(?:(?:in the |this )(?:morning|afternoon|evening)|morning|afternoon|evening|night)"
_EN_CLOCK = (
    rf"(?:(?:at|around|about|after|before|by) {_CLOCK_NUM}(?:\s*(?:am|pm|a\.m\.|p\.m\.|o'clock))?"
    rf"|\d{{1,2}}(?::\d{{2}})?\s*(?:am|pm|a\.m\.|p\.m\.|o'clock)"
    rf"|(?:at |around )?(?:noon|midday|lunchtime)|(?:after|before) (?:lunch|work|dinner))"
)
_EN_REL = (
    r"(?:in (?:an?|one|two|three|four|five|ten|fifteen|twenty|thirty|half an|\d+)"
    r" (?:minutes?|hours?|days?))"
)
_TIME_EN = re.compile(
    rf"(?<!\w)(?:{_EN_DAY}(?:,?\s+{_EN_PART})?(?:,?\s+{_EN_CLOCK})?"
    rf"|{_EN_CLOCK}(?:,?\s+{_EN_DAY})?(?:,?\s+{_EN_PART})?"
    rf"|(?:in the |this )(?:morning|afternoon|evening)(?:,?\s+{_EN_CLOCK})?|{_EN_REL})(?!\w)",
    re.IGNORECASE,
)
_ZH_WEEKDAY = r"(?:周|星期|礼拜)[一二三四五六日天]"
_ZH_DAY = (
    rf"(?:大后天|后天|明天|今天|今晚|明晚|明早|(?:下|这|本)个?{_ZH_WEEKDAY}|{_ZH_WEEKDAY}"
    r"|下周|这周末|周末|月底)"
)
_ZH_PART = r"(?:早上|上午|中午|下午|傍晚|晚上)"
_ZH_CLOCK = (
    r"(?:[\d零一二两三四五六七八九十]{1,3}(?:点|时|:\d{2})"
    r"(?:半|一刻|三刻|[\d零一二三四五六七八九十]{1,3}分?)?)(?:左右|以后|之后|前)?"
)
_A_BIT_BEFORE, _A_BIT_AFTER = "晚早快慢多少有差", "都也儿点"
_ZH_REL = r"(?:[\d一二两三四五六七八九十半]+个?(?:小时|钟头|分钟)(?:以后|之后|后))"
_TIME_ZH = re.compile(
    rf"{_ZH_DAY}{_ZH_PART}?(?:{_ZH_CLOCK})?|{_ZH_PART}(?:{_ZH_CLOCK})?|{_ZH_CLOCK}|{_ZH_REL}"
)


def time_phrase(text: str, _today: date) -> SlotValue | None:
    m = _longest([_TIME_EN, _TIME_ZH], text, keep=lambda m: not _a_bit(m, text))
    if m is None:
        return None
    phrase = " ".join(m.group().split())
    return SlotValue(text=phrase, value=phrase.lower(), say=phrase)


def _a_bit(m: re.Match[str], text: str) -> bool:
    """'晚一点' and '一点都不' mean 'a bit', not one o'clock."""
    if m.group() != "一点":
        return False
    before = text[m.start() - 1] if m.start() else ""
    after = text[m.end()] if m.end() < len(text) else ""
    return (before != "" and before in _A_BIT_BEFORE) or (after != "" and after in _A_BIT_AFTER)


# ---- amounts ----------------------------------------------------------------------------------

_AMOUNT_EN = re.compile(
    r"(?<![\w.])(?P<cur>\$|usd ?|rmb ?|¥|cny ?)?"
    r"(?P<num>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<dec>\d{1,2}))?"
    r"(?:\s*(?P<mult>k|thousand|grand)(?!\w))?(?:\s*(?P<unit>dollars?|bucks|yuan|rmb|usd)(?!\w))?",
    re.IGNORECASE,
)
_AMOUNT_ZH = re.compile(
    r"(?P<num>\d+(?:\.\d+)?|[零一二两三四五六七八九十百千万]+)\s*(?P<mult>[千万])?\s*(?P<unit>元|块钱|块|人民币)?"
)
_MULTIPLIERS = {"k": 1000, "thousand": 1000, "grand": 1000, "千": 1000, "万": 10000}


def amount(text: str, _today: date) -> SlotValue | None:
    short = len(_EN_WORD.findall(text)) <= _SHORT_ANSWER_WORDS and not _CJK.search(text)
    for m in _AMOUNT_EN.finditer(text):
        if m["cur"] or m["mult"] or m["unit"] or short:
            number = Decimal(m["num"].replace(",", "") + (f".{m['dec']}" if m["dec"] else ""))
            return _amount_slot(m, number * _MULTIPLIERS.get((m["mult"] or "").lower(), 1), ",")
    for m in _AMOUNT_ZH.finditer(text):
        said = _zh_amount(m)
        if said is not None and (m["unit"] or m["mult"] or re.search("[百千万]", m["num"])):
            return _amount_slot(m, said, "")
    return None


def _zh_amount(m: re.Match[str]) -> Decimal | None:
    try:
        number = Decimal(m["num"])
    except InvalidOperation:
        parsed = cn_number(m["num"])
        if parsed is None:
            return None
        number = Decimal(parsed)
    return number * _MULTIPLIERS.get(m["mult"] or "", 1)


def _amount_slot(m: re.Match[str], number: Decimal, grouping: str) -> SlotValue:
    value = format(number.normalize(), "f")
    say = format(Decimal(value), grouping) if grouping else value
    return _slot(m, value, say)


# ---- dates (a promise to pay) -----------------------------------------------------------------

_MONTH_NAMES = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_MONTH_NAMES |= {name.lower(): i for i, name in enumerate(calendar.month_abbr) if name}
_MONTH_NAMES["sept"] = 9
_MONTH_EN = "|".join(sorted(_MONTH_NAMES, key=len, reverse=True))
_WEEKDAY_INDEX = {d: i for i, d in enumerate(_WEEKDAYS_EN.split("|"))}
_ZH_WEEKDAY_INDEX = {c: i for i, c in enumerate("一二三四五六日")} | {"天": 6}
_ORD = r"(?:st|nd|rd|th)?"

DateRule = tuple[re.Pattern[str], Callable[[re.Match[str], date], date | None]]


def _in_week(today: date, weekday: int, which: str) -> date:
    """'next' is the named day in the next calendar week; otherwise the coming one (or today)."""
    if which == "next" or which == "下":
        monday = today - timedelta(days=today.weekday()) + timedelta(days=7)
        return monday + timedelta(days=weekday)
    if which in ("this", "这", "本"):
        return today - timedelta(days=today.weekday()) + timedelta(days=weekday)
    return today + timedelta(days=(weekday - today.weekday()) % 7)


def _day_of_month(today: date, day: int, month: int | None = None) -> date | None:
    """The next such day on or after today (this month or year, else the next one)."""
    try:
        if month is None:
            candidate = today.replace(day=day)
            if candidate < today:
                year, month = divmod(today.month, 12)
                candidate = date(today.year + year, month + 1, day)
            return candidate
        candidate = date(today.year, month, day)
        return candidate if candidate >= today else date(today.year + 1, month, day)
    except ValueError:
        return None  # 30 February, or the 31st of a short month


def _month_end(today: date) -> date:
    return today.replace(day=calendar.monthrange(today.year, today.month)[1])


_RELATIVE_DAYS = {"today": 0, "tomorrow": 1, "the day after tomorrow": 2}
_RELATIVE_DAYS |= {"今天": 0, "明天": 1, "后天": 2, "大后天": 3}


def _relative(word: str) -> int:
    return _RELATIVE_DAYS[word.lower()]


def _safe_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


_DATE_RULES: list[DateRule] = [
    (
        re.compile(r"(?<!\d)(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})[日号]?"),
        lambda m, t: _safe_date(int(m[1]), int(m[2]), int(m[3])),
    ),
    (
        re.compile(rf"(?<!\w)({_MONTH_EN})\.? (\d{{1,2}}){_ORD}(?!\w)", re.IGNORECASE),
        lambda m, t: _day_of_month(t, int(m[2]), _MONTH_NAMES[m[1].lower()]),
    ),
    (
        re.compile(rf"(?<!\w)(\d{{1,2}}){_ORD} (?:of )?({_MONTH_EN})(?!\w)", re.IGNORECASE),
        lambda m, t: _day_of_month(t, int(m[1]), _MONTH_NAMES[m[2].lower()]),
    ),
    (
        re.compile(r"(?<!\w)the (\d{1,2})(?:st|nd|rd|th)(?!\w)", re.IGNORECASE),
        lambda m, t: _day_of_month(t, int(m[1])),
    ),
    (
        re.compile(r"(?<!\w)(the day after tomorrow|today|tomorrow)(?!\w)", re.IGNORECASE),
        lambda m, t: t + timedelta(days=_relative(m[1])),
    ),
    (
        re.compile(rf"(?<!\w)(?:(next|this|coming) )?({_WEEKDAYS_EN})(?!\w)", re.IGNORECASE),
        lambda m, t: _in_week(t, _WEEKDAY_INDEX[m[2].lower()], (m[1] or "").lower()),
    ),
    (
        re.compile(r"(?<!\w)(?:the )?end of (?:the|this) month(?!\w)", re.IGNORECASE),
        lambda m, t: _month_end(t),
    ),
    (
        re.compile(rf"(?<!\w)in ({_EN_NUM}) days?(?!\w)", re.IGNORECASE),
        lambda m, t: _plus_days(t, en_number(m[1])),
    ),
    (
        re.compile(rf"({_CN_NUM}{{1,2}})月({_CN_NUM}{{1,3}})[日号]"),
        lambda m, t: _cn_day_of_month(t, m[2], m[1]),
    ),
    (re.compile(rf"下个?月({_CN_NUM}{{1,3}})[日号]"), lambda m, t: _next_month_day(t, m[1])),
    (
        re.compile(rf"(?<![\d零〇一二两三四五六七八九十百月])({_CN_NUM}{{1,3}})[日号](?!线)"),
        lambda m, t: _cn_day_of_month(t, m[1]),
    ),
    (re.compile(r"(大后天|后天|明天|今天)"), lambda m, t: t + timedelta(days=_relative(m[1]))),
    (
        re.compile(r"(下|这|本)?个?(?:周|星期|礼拜)([一二三四五六日天])"),
        lambda m, t: _in_week(t, _ZH_WEEKDAY_INDEX[m[2]], m[1] or ""),
    ),
    (re.compile(r"月底"), lambda m, t: _month_end(t)),
    (
        re.compile(rf"({_CN_NUM}{{1,3}})天(?:以后|之后|后)"),
        lambda m, t: _plus_days(t, cn_number(m[1])),
    ),
]


def _next_month_day(today: date, day: str) -> date | None:
    d = cn_number(day)
    year, month = divmod(today.month, 12)
    return None if d is None else _safe_date(today.year + year, month + 1, d)


def _plus_days(today: date, days: int | None) -> date | None:
    return None if days is None else today + timedelta(days=days)


def _cn_day_of_month(today: date, day: str, month: str | None = None) -> date | None:
    d = cn_number(day)
    mo = cn_number(month) if month is not None else None
    if d is None or (month is not None and mo is None):
        return None
    return _day_of_month(today, d, mo)


def date_slot(text: str, today: date) -> SlotValue | None:
    """The earliest date in the text; a date in the past is no promise to pay, so it is ignored."""
    found = []
    for pattern, resolve in _DATE_RULES:
        for m in pattern.finditer(text):
            when = resolve(m, today)
            if when is not None and when >= today:
                found.append((m.start(), -len(m.group()), m, when))
    if not found:
        return None
    _, _, m, when = min(found, key=lambda f: (f[0], f[1]))
    text = " ".join(m.group().split())
    return SlotValue(text=text, value=when.isoformat(), say=text)


_EXTRACTORS: dict[str, Callable[[str, date], SlotValue | None]] = {
    "months": months,
    "time_phrase": time_phrase,
    "amount": amount,
    "date": date_slot,
}
