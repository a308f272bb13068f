"""Redaction: no card or ID number may reach storage or a screen, however the ASR spelled it."""

from dialogue.redaction import load_rules, redact
from dialogue.redaction_eval import score

from .conftest import FIXTURES


def test_recall_is_total_for_cards_and_ids_and_nothing_else_is_hidden():
    result = score(FIXTURES / "redaction" / "labelled.jsonl")
    assert result.spans["CARD"] >= 30 and result.spans["ID"] >= 12
    assert result.recall["CARD"] == 1.0 and result.recall["ID"] == 1.0, result.missed
    assert result.recall["PHONE"] == 1.0 and result.recall["CVV"] == 1.0, result.missed
    assert result.false_alarms == []


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
