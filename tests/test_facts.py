"""The first card answers the slot asked: the policy's facts matched by meaning (the real e5
encoder), the plan and amount read from the customer's words, exemplars ranked by whether they
state the asked figure, and an LLM reply that quotes another plan's figure withheld.

The reply set in `fixtures/replies/` is held out: these tests use their own phrasings."""

from __future__ import annotations

import pytest

from dialogue.defaults import default_facts, policy_text
from dialogue.facts import read_amount, read_months
from dialogue.reply_eval import ReplyCase, judge, read_cases, score_instant
from dialogue.suggest import Suggester, _figures
from dialogue.types import Turn

from .conftest import FIXTURES


@pytest.fixture(scope="module")
def facts():
    return default_facts()


def _history(line: str) -> list[Turn]:
    return [Turn(speaker="agent", text="Hello, this is Harbor Bank; this call is recorded."),
            Turn(speaker="customer", text=line)]


@pytest.mark.parametrize(("text", "months"), [
    ("put it on twelve monthly payments", 12), ("over 6 months", 6), ("a 3-month plan", 3),
    ("spread over a year", 12), ("分十二期", 12), ("分6个月", 6), ("半年还完", 6),
    ("what is the fee", None), ("我想分期", None),
])
def test_the_plan_length_is_read_from_words_digits_and_numerals(text, months):
    assert read_months(text) == months


@pytest.mark.parametrize(("text", "amount"), [
    ("the bill is 4,500", 4500), ("about 8000 yuan", 8000), ("两万分6期", 20000),
    ("一万五分三期", 15000), ("三千块", 3000), ("over 12 months", None), ("0.6%", None),
])
def test_the_amount_the_customer_names_is_read(text, amount):
    assert read_amount(text) == amount


def test_the_fee_for_the_plan_asked_and_not_the_others(facts):
    asked = facts.match("and what would you charge me on the twelve month one?", "en")
    assert asked is not None and asked.fact.id == "instalment_fee_12"
    assert asked.must == ["0.55%"] and set(asked.wrong) == {"0.75%", "0.6%"}
    zh = facts.match("要是分三期，每个月收多少手续费？", "zh")
    assert zh is not None and zh.must == ["0.75%"] and "0.75%" in zh.statement


def test_a_named_amount_gets_its_monthly_payment_worked_out(facts):
    asked = facts.match("My bill is 4,000. How much would I pay a month over 3 months?", "en")
    assert asked is not None and asked.amount == 4000 and asked.months == 3
    # 4,000 / 3 + 4,000 x 0.75% = 1,333.33 + 30
    assert asked.must == ["1,363"] and "1,363" in asked.statement
    zh = facts.match("两万块分12期，每月还多少？", "zh")
    assert zh is not None and zh.must == ["1,777"] and "每月还1,777元" in zh.statement


@pytest.mark.parametrize("line", ["the weather is lovely today", "我中午吃了面条"])
def test_lines_the_policy_does_not_answer_get_no_fact(facts, line):
    assert facts.match(line, "en") is None


def test_the_first_card_states_the_asked_plan_fee(intent_model, playbook, facts):
    suggester = Suggester(intent_model, playbook, None, policy_text(), facts=facts)
    history = _history("Going with the 6-month option, what's the fee per month on that?")
    assist = suggester.instant("f1", history)
    cards = suggester.instant_cards(assist, history)
    assert assist.asked is not None and assist.asked.must == ["0.6%"]
    first = cards[0]
    assert "0.6%" in first.text and not {"0.75%", "0.55%"} & _figures(first.text)
    assert "[amount]" not in first.text
    # the top agents' replies still follow, each citing its call
    assert any(c.source == "exemplar" and c.grounded_in for c in cards[1:])


def test_without_the_fact_book_the_cards_are_the_retrieval_order(intent_model, playbook):
    suggester = Suggester(intent_model, playbook, None, policy_text())
    history = _history("Going with the 6-month option, what's the fee per month on that?")
    assist = suggester.instant("f2", history)
    assert assist.asked is None
    assert all(c.source == "exemplar" for c in suggester.instant_cards(assist, history))


def test_an_llm_reply_quoting_another_plan_is_withheld(intent_model, playbook, facts):
    suggester = Suggester(intent_model, playbook, None, policy_text(), facts=facts)
    history = _history("If I take six months, what's the monthly fee?")
    assist = suggester.instant("f3", history)
    reply, withheld = suggester.finish("The fee is 0.75% a month on that plan.", assist, history)
    assert reply is None and [f.rule for f in withheld] == ["off_slot_figure"]
    reply, withheld = suggester.finish("On six months it's 0.6% a month, nothing else.",
                                       assist, history)
    assert reply is not None and withheld == []


def test_the_scorer_fails_blank_slots_wrong_language_other_plans_and_promises():
    case = ReplyCase(id="en-t", said=["what's the fee on 6 months?"], must=[["0.6%"]],
                     wrong=["0.75%"])
    figures = _figures(policy_text())
    assert judge("It's 0.6% a month on the 6-month plan.", case, figures).ok
    assert "unfilled slot" in judge("On [amount] it's 0.6% a month.", case, figures).problems
    assert "language" in judge("6期每月0.6%。", case, figures).problems
    assert "wrong figure 0.75%" in judge("0.6% or 0.75%.", case, figures).problems
    assert judge("It's 0.6%, so 812 a month.", case, figures).problems == ["invented 812"]
    promise = ReplyCase(id="en-p", said=["can you promise approval?"], no_promise=True,
                        must=[["review"]])
    assert "promised" in judge("Yes, it will be approved after the review.", promise,
                               figures).problems
    assert judge("I can't promise that; the review decides.", promise, figures).ok


def test_the_held_out_reply_set_is_well_formed_and_the_first_cards_hold_up(
        intent_model, playbook, facts):
    cases = read_cases(FIXTURES / "replies")
    assert len(cases) >= 100 and {c.language for c in cases} == {"en", "zh"}
    assert len({c.id for c in cases}) == len(cases)
    suggester = Suggester(intent_model, playbook, None, policy_text(), facts=facts)
    result = score_instant("exemplar", suggester, cases)
    # bench/replies.py prints the figures; this only keeps them from sliding back (0.058
    # before the fact book, 0.90 with it on this set)
    assert result.first_right >= 0.85, result.failures
    assert result.invented_rate == 0.0, result.failures


def test_an_llm_reply_that_promises_or_talks_about_itself_is_withheld(intent_model, playbook,
                                                                      facts):
    suggester = Suggester(intent_model, playbook, None, policy_text(), facts=facts)
    history = _history("Is my loan approval guaranteed if I apply today?")
    assist = suggester.instant("f4", history)
    assert assist.asked is not None and assist.asked.fact.promise
    reply, withheld = suggester.finish("Yes, speaking. / do I qualify?", assist, history)
    assert reply is None and [f.rule for f in withheld] == ["promise_question"]
    reply, _ = suggester.finish("I can't promise that: the review decides the amount and rate.",
                                assist, history)
    assert reply is not None
    zh = _history("第一期什么时候开始扣？")
    assist = suggester.instant("f5", zh)
    reply, withheld = suggester.finish("客户刚刚说：“第一期什么时候开始扣？”", assist, zh)
    assert reply is None and withheld[0].rule == "llm_meta"
