"""Redaction: no card or ID number may reach storage or a screen, however the ASR spelled it."""

from __future__ import annotations

import json
import random
import re
import unicodedata
from collections.abc import Callable

from dialogue.redaction import load_rules, redact
from dialogue.redaction_eval import score

from .conftest import FIXTURES


def test_recall_is_total_for_cards_and_ids_and_nothing_else_is_hidden():
    result = score(FIXTURES / "redaction" / "labelled.jsonl")
    assert result.spans["CARD"] >= 100 and result.spans["ID"] >= 20
    assert result.recall["CARD"] == 1.0 and result.recall["ID"] == 1.0, result.missed
    assert result.recall["PHONE"] == 1.0 and result.recall["CVV"] == 1.0, result.missed
    assert result.false_alarms == []
    # every spelling the store probe found kept raw is in the set, and each is found
    for spelling in ["comma", "slash", "other_separator", "expiry", "fullwidth", "arabic_indic",
                     "devanagari", "zh_numerals", "zh_yao", "invisible", "words", "mixed",
                     "zh_spoken"]:
        assert result.spans_by_class[f"CARD/{spelling}"] >= 2, spelling
    assert all(r == 1.0 for r in result.recall_by_class.values()), result.missed


def test_the_hand_written_held_out_set_is_found_whole_and_nothing_else_is_hidden():
    # fixtures/redaction/README.md: written by hand, apart from the generator and rule tuning
    path = FIXTURES / "redaction" / "heldout.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    mandarin = sum(bool(re.search(r"[\u4e00-\u9fff]", r["text"])) for r in rows)
    assert len(rows) >= 120 and 0.4 <= mandarin / len(rows) <= 0.6
    assert sum(not r["spans"] for r in rows) >= 30  # negatives: amounts, rates, dates, tenors
    for row in rows:  # the set itself: real-looking card and ID numbers
        for span in row["spans"]:
            said = digit_stream(span["text"])
            if span["kind"] == "CARD":
                assert luhn(said), span
            if span["kind"] == "ID":
                assert _gb11643(said + ("X" if span["text"][-1] in "xX" else "")), span
    result = score(path)
    assert all(result.spans[kind] >= 15 for kind in ["CARD", "CVV", "ID", "PHONE"]), result.spans
    assert result.recall == {kind: 1.0 for kind in result.spans}, result.missed
    assert all(r == 1.0 for r in result.recall_by_class.values()), result.missed
    assert result.false_alarms == []


def _gb11643(number: str) -> bool:
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    total = sum(int(d) * w for d, w in zip(number[:17], weights, strict=True))
    return len(number) == 18 and "10X98765432"[total % 11] == number[17].upper()


def test_everyday_mandarin_ways_of_giving_the_security_code():
    for text in ["卡背后那三个数字是 二八三", "背面签名那一栏最后三位，幺零九",
                 "卡片反面的三位数 334", "后面那三位是 5 0 7", "你说的安全代码是 882 吗",
                 "CVN2 两两六", "卡的校验码：903", "背面后三码 640", "签名条旁边印着 417"]:
        r = redact(text)
        assert [f.kind for f in r.findings] == ["CVV"], text
        assert re.search(r"[0-9零一二三四五六七八九幺两]{3}", r.text) is None, r.text


def test_a_security_code_cue_does_not_hide_amounts_counts_or_the_expiry():
    for text, kept in [
        ("背面那三位我等下再说，先问一下 600 块那笔", "600 块"), ("后面三个月每月还 900", "900"),
        ("后面还有 300 没还", "300"), ("卡背面写着 95588", "95588"), ("安全码三位数是吧", "三位数"),
        ("the code on the back? I paid 120 dollars", "120 dollars"),
        ("安全码 417，有效期 11/28", "有效期 11/28"),
        ("CVV 417, it expires oh nine twenty eight", "oh nine twenty eight"),
    ]:
        result = redact(text).text
        assert kept in result and "417" not in result, result


def test_country_codes_pauses_and_oh_are_read_as_people_say_them():
    assert redact("+86 139 1234 5678").text == "+[PHONE]"  # 13 digits, yet no card
    assert redact("+44 7700 900 123").findings[0].kind == "PHONE"
    assert redact("it's 646, 555, 0143").text == "it's [PHONE]"  # not "646, [PHONE]"
    assert redact("oh two oh, seven nine four six, oh nine five eight").text == "[PHONE]"
    assert redact("卡号 6222 0212…… 3456 7890 128").text == "卡号 [CARD]"
    assert redact("4111 1111... 1111 1111").text == "[CARD]"
    assert redact("Oh, one more thing").findings == []


def test_each_finding_says_which_rule_fired_and_why():
    r = redact("卡号 6222 0212 3456 7890 128，安全码 417，身份证 11010519491231002X")
    assert r.text == "卡号 [CARD]，安全码 [CVV]，身份证 [ID]"
    assert [f.rule for f in r.findings] == ["card_number", "cvv", "prc_id_number"]
    assert all(f.why for f in r.findings)


def test_spoken_digits_in_words_and_chinese_numerals_are_read():
    assert redact("four five three two, zero one five one, one two eight three, "
                  "zero three six six").text == "[CARD]"
    assert redact("幺三八幺二三四五六七八").text == "[PHONE]"


def test_rules_are_data(tmp_path):
    only_cvv = tmp_path / "rules.toml"
    only_cvv.write_text('[[rule]]\nname = "cvv"\nkind = "CVV"\nmin_digits = 3\nmax_digits = 4\n'
                        'context = ["cvv"]\nreplacement = "***"\nwhy = "test"\n')
    rules = load_rules(only_cvv)
    assert redact("cvv 123, card 4111 1111 1111 1111", rules).text == (
        "cvv ***, card 4111 1111 1111 1111")


# -- the probe: how an auditor reads stored text, written apart from dialogue.redaction --------

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_CJK_DIGITS = ["零〇洞", "一幺壹弌", "二两兩贰貳", "三叁參", "四肆", "五伍", "六陆陸",
               "七柒拐", "八捌", "九玖勾"]
_CJK = {c: str(d) for d, cs in enumerate(_CJK_DIGITS) for c in cs}
EN = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
_SAID = ({w: str(i) for i, w in enumerate(EN)} | {"oh": "0", "o": "0", "nought": "0"}
         | {w: str(10 + i) for i, w in enumerate("ten eleven twelve thirteen fourteen fifteen "
                                                 "sixteen seventeen eighteen nineteen".split())})
_TENS = {w: str(i + 2) for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty "
                                             "ninety".split())}
_TIMES = {"double": 2, "triple": 3, "treble": 3}
_FILLERS = {"uh", "um", "er", "ah", "dash", "slash", "space", "嗯", "呃"}


def luhn(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        v = int(c) * (2 if i % 2 else 1)
        total += v - 9 if v > 9 else v
    return total % 10 == 0


def _symbols(text: str) -> list[tuple[str, str]]:
    """("d", digits) | ("space", "") | ("sep", char) | ("word", word): digits in any script or
    said in words, invisible characters dropped, UUIDs (ids, not numbers) blanked."""
    raw: list[tuple[str, str]] = []
    word = ""
    for ch in _UUID.sub(" ", text):
        if unicodedata.category(ch) in ("Cf", "Mn", "Me"):
            continue
        digit = _CJK.get(ch, unicodedata.digit(ch, None))
        folded = unicodedata.normalize("NFKC", ch)
        if digit is None and folded.isascii() and folded.isalpha():
            word += folded.lower()
            continue
        if word:
            raw.append(("word", word))
            word = ""
        if digit is not None:
            raw.append(("d", str(digit)))
        elif ch.isalpha():
            raw.append(("word", ch))
        else:
            raw.append(("space", "") if ch.isspace() else ("sep", folded))
    if word:
        raw.append(("word", word))
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(raw):
        kind, value = raw[i]
        j = i + 1
        while j < len(raw) and raw[j] in (("space", ""), ("sep", "-")):
            j += 1
        nxt = raw[j] if j < len(raw) else ("", "")
        if kind == "word" and value in _TIMES and len(_SAID.get(nxt[1], "..")) == 1:
            out.append(("d", _SAID[nxt[1]] * _TIMES[value]))
            i = j + 1
        elif kind == "word" and value in _TENS and nxt[1] in EN[1:]:
            out.append(("d", _TENS[value] + _SAID[nxt[1]]))
            i = j + 1
        else:
            if kind == "word" and value in _TENS:
                out.append(("d", _TENS[value] + "0"))
            elif kind == "word" and value in _SAID:
                out.append(("d", _SAID[value]))
            elif kind == "word" and value in _FILLERS:
                out.append(("space", ""))
            else:
                out.append((kind, value))
            i += 1
    return out


def digit_stream(text: str) -> str:
    """Every digit the text carries, however written, in order."""
    return "".join(v for k, v in _symbols(text) if k == "d")


def card_numbers_in(text: str) -> list[str]:
    """Every 13-19 digit Luhn-valid number in the text: runs of digit groups separated by
    whitespace and at most two other symbols, read whole or from one group break to another."""
    runs, groups, gap, symbols = [], [], None, 0
    for kind, value in [*_symbols(text), ("word", "")]:
        if kind == "d":
            if groups and gap is None:
                groups[-1] += value
            elif groups and symbols <= 2:
                groups.append(value)
            else:
                runs.append(groups)
                groups = [value]
            gap, symbols = None, 0
        elif kind in ("space", "sep"):
            gap = ""
            symbols += kind == "sep"
        else:
            runs.append(groups)
            groups, gap, symbols = [], None, 0
    found = []
    for run in runs:
        digits, bounds = "".join(run), [0]
        for g in run:
            bounds.append(bounds[-1] + len(g))
        found += [digits[a:b] for a in bounds for b in bounds
                  if 13 <= b - a <= 19 and luhn(digits[a:b])]
    return found


def luhn_cards(rng: random.Random, n: int) -> list[str]:
    """n distinct Luhn-valid card numbers of the usual lengths and networks."""
    out: list[str] = []
    while len(out) < n:
        length = rng.choice([15, 16, 16, 16, 19])
        body = rng.choice(["4", "51", "62", "6011", "37"])
        body += "".join(rng.choice("0123456789") for _ in range(length - 1 - len(body)))
        card = next(body + c for c in "0123456789" if luhn(body + c))
        if card not in out:
            out.append(card)
    return out


def _groups(number: str, size: int = 4) -> list[str]:
    return [number[i : i + size] for i in range(0, len(number), size)]


def _script(number: str, zero: int) -> str:
    return "".join(chr(zero + int(d)) for d in number)


def _said(number: str) -> str:
    """Read out as people do: "double"/"triple" for repeats, "oh" for zero."""
    words, i = [], 0
    while i < len(number):
        run = len(number[i:]) - len(number[i:].lstrip(number[i]))
        word = "oh" if number[i] == "0" else EN[int(number[i])]
        if run >= 3:
            words.append(f"triple {word}")
        elif run == 2:
            words.append(f"double {word}")
        else:
            words.append(word)
        i += min(run, 3)
    return ", ".join(words)


# Each way a probe of the store found card numbers kept raw: name -> spell(digits).
SPELLINGS: dict[str, Callable[[str], str]] = {
    "comma": lambda n: ",".join(_groups(n)),
    "comma_space": lambda n: ", ".join(_groups(n)),
    "slash": lambda n: "/".join(_groups(n)),
    "pipe": lambda n: "|".join(_groups(n)),
    "expiry": lambda n: " ".join(_groups(n)) + " 12/27",
    "expiry_compact": lambda n: n + "/1227",
    "fullwidth": lambda n: _script(n, 0xFF10),
    "arabic_indic": lambda n: " ".join(_groups(_script(n, 0x0660))),
    "devanagari": lambda n: _script(n, 0x0966),
    "zh": lambda n: "".join("零一二三四五六七八九"[int(d)] for d in n),
    "zh_yao": lambda n: " ".join(_groups("".join("零幺两三四五六七八九"[int(d)] for d in n))),
    "zh_spoken": lambda n: "，嗯，".join(_groups("".join("洞幺二三四五六七八九"[int(d)]
                                                      for d in n))),
    "invisible": lambda n: "".join(d + "\u200b\u200c\u200d\ufeff\u00ad\u2060\u200e\u200f"[i % 8]
                                   for i, d in enumerate(n)),
    "words": lambda n: " ".join(EN[int(d)] for d in n),
    "words_repeats": _said,
    "mixed": lambda n: " ".join(g if i % 2 else " ".join(EN[int(d)] for d in g)
                                for i, g in enumerate(_groups(n))),
}


def test_the_probe_reads_what_it_must():
    card = "4111111111111111"
    for name, spell in SPELLINGS.items():
        assert card in card_numbers_in(f"卡号 {spell(card)} 好的"), name
        assert card in digit_stream(spell(card)), name
    assert card_numbers_in("[CARD] 12/27 at 2025-10-09T02:00:00Z") == []
    assert card_numbers_in("event 41111111-1111-1111-1111-111111111111") == []  # an id


def test_no_spelling_of_a_card_number_survives_redaction():
    rng = random.Random(7)
    templates = ["my card is {} ok", "卡号{}。", "{}", "it's {}, thanks", "Card: {}"]
    for name, spell in SPELLINGS.items():
        for card in luhn_cards(rng, 12):
            text = rng.choice(templates).format(spell(card))
            result = redact(text)
            assert card_numbers_in(result.text) == [], (name, text, result.text)
            assert any(f.kind == "CARD" for f in result.findings), (name, text)


def test_random_mixtures_of_scripts_separators_and_invisible_characters():
    rng = random.Random(3)
    invisible = "\u200b\u200c\u200d\ufeff\u00ad\u2060\u200e\u200f\u202a\u2066\u034f\ufe0f"
    separators = [" ", ",", ", ", "/", " / ", "-", ".", "|", "_", ":", "·", "*", "~", "\\",
                  "–", "—", "#", "，", "、", "\n", ") ", "+"]
    zeros = [0x30, 0xFF10, 0x0660, 0x06F0, 0x0966, 0x09E6, 0x0E50, 0x1D7CE, 0x0BE6]
    for card in luhn_cards(rng, 400):
        pieces = []
        for group in _groups(card, rng.choice([1, 2, 3, 4, 5, 6])):
            how = rng.random()
            if how < 0.4:
                group = _script(group, rng.choice(zeros))
            elif how < 0.6:
                group = "".join("零幺二三四五六七八九"[int(d)] for d in group)
            elif how < 0.8:
                group = " ".join(EN[int(d)] for d in group)
            pieces.append("".join(c + rng.choice(["", "", rng.choice(invisible)]) for c in group))
        text = pieces[0] + "".join(rng.choice(separators) + p for p in pieces[1:])
        text += rng.choice(["", " 12/27", "/1227", ", 123"])
        assert card_numbers_in(redact(text).text) == [], text


def test_the_mask_covers_the_number_and_nothing_around_it():
    assert redact("卡号４\u200b１１１ １１１１ １１１１ １１１１，谢谢").text == "卡号[CARD]，谢谢"
    assert redact("it's 4111 1111 1111 1111 12/27 ok").text == "it's [CARD] 12/27 ok"
    assert redact("4111111111111111/1227").text == "[CARD]/1227"
    assert redact("so four triple one, double one double one, one one one one, one one one one"
                  " right").text == "so [CARD] right"
    assert redact("Oh, 4111 1111 1111 1111 oh").text == "Oh, [CARD]"
    assert redact("forty-one eleven eleven eleven eleven eleven eleven eleven").text == "[CARD]"


def test_findings_say_whether_the_number_passes_its_check():
    valid, misheard = redact("4111 1111 1111 1111 and 4111 1111 1111 1112").findings
    assert valid.checksum_ok and not misheard.checksum_ok
    assert redact("身份证 11010519491231002X").findings[0].checksum_ok


def test_amounts_dates_times_rates_and_lists_are_not_numbers_to_hide():
    for text in [
        "Your balance is 1,245,300.50 yuan.", "The payment of $4,200 is due on 2024-03-15 10:30.",
        "Office hours 09:00-17:30.", "Choose 12, 24, 36 or 48 months.", "Rates 3.5% 4.25% 5%",
        "On 03/15/2024 at 14:45:30 we sent it.", "1,000,000 - 2,000,000",
        "分 12 期，每期 1,280 元", "2024-03-15, 2024-04-15", "Due $731, 3/26/1992, 9%.",
        "请在 １０：３０ 到 １１：４５ 之间来电",
        "Oh, hello, this is Alex, someone often calls at ten.", "3, 6, 12, 18, 24 months",
    ]:
        assert redact(text).findings == [], text
    rng = random.Random(5)
    for _ in range(500):
        v = rng.randint(1000, 10**9)
        y, m, d = rng.randint(1990, 2030), rng.randint(1, 12), rng.randint(1, 28)
        hm = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
        text = rng.choice([
            f"¥{v:,}.{v % 100:02d} due {y}-{m:02d}-{d:02d} {hm}",
            f"{d:02d}/{m:02d}/{y} {hm}:{v % 60:02d}, {rng.randint(1, 30)}%",
            f"{hm}-{hm}, ${v:,}", f"{m}/{d}/{y}, {v % 48} months, {v % 7}.5%",
        ])
        assert redact(text).findings == [], text


def test_phone_numbers_are_phones_not_cards():
    for text in ["138 1234 5678", "１３８１２３４５６７８", "(212) 555 0188",
                 "幺三八 幺二三四 五六七八", "four one five, five five five, two six seven one"]:
        assert [f.kind for f in redact(text).findings] == ["PHONE"], text
