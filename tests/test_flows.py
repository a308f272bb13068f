"""Outbound-call flow engine: the real engine and the shipped example flows, driven turn by turn.

Only the intent model is replaced, by a table from the exact test utterances to labels (the real
model is not ready); everything else (guardrails, slot extraction, load-time checks) is real.
"""

from __future__ import annotations

import asyncio
import re
from datetime import date
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from dialogue.defaults import FLOWS
from dialogue.flow_schema import SlotSpec
from dialogue.flow_slots import cn_number, extract
from dialogue.flows import (
    BotTurn,
    Flow,
    FlowError,
    FlowFinishedError,
    FlowSession,
    FreeQuestionAnswerer,
)
from dialogue.types import OUT_OF_SCOPE, IntentPrediction

TODAY = date(2025, 3, 12)  # a Wednesday
EN_VARS = {"customer_name": "Alex Chen", "statement_amount": "4,800 dollars"}
ZH_VARS = {"customer_name": "王先生", "statement_amount": "4800元"}
REMINDER_VARS = {"customer_name": "王先生", "amount_due": "3500元", "due_date": "3月20日"}

# Test double for the intent model: the exact utterances these tests say, and their labels.
INTENTS = {
    "Yes, speaking.": "confirm_identity",
    "Who is this?": "ask_who_is_calling",
    "Sorry, wrong number.": "wrong_person",
    "Sure.": "affirm",
    "Yes, go ahead.": "affirm",
    "Yes, twelve months.": "affirm",
    "What's the interest rate?": "interest_rate",
    "Six months, please.": OUT_OF_SCOPE,
    "Can I still use the card while I repay?": OUT_OF_SCOPE,
    "Hmm?": OUT_OF_SCOPE,
    "Not interested, don't call me again.": "not_interested",
    "I want to talk to a real person.": "affirm",
    "Can I speak with your manager?": "ask_for_human",
    "This is ridiculous, I'm filing a complaint.": "complaint",
    "Please remove me from this campaign.": "stop_calling",
    "Not interested.": "not_interested",
    "No, thanks.": "deny",
    "I'm busy, call me tomorrow at 3.": "call_back_later",
    "I'm busy right now.": "call_back_later",
    "Tomorrow afternoon works.": OUT_OF_SCOPE,
    # The model only ever hears redacted text.
    "My card is [CARD], what's the rate?": "interest_rate",
    "是我。": "confirm_identity",
    "可以。": "affirm",
    "好的。": "affirm",
    "手续费怎么算？": "interest_rate",
    "六期吧。": OUT_OF_SCOPE,
    "我现在没空，明天下午三点再打吧。": "call_back_later",
    "不需要，别再打了！": "not_interested",
    "我周五还。": "will_repay",
    "可以，我会还的。": "will_repay",
    "下个月15号吧。": OUT_OF_SCOPE,
    "我现在真的还不上。": "cannot_pay",
    "逾期会怎么样？": "late_fee",
    "你们公司在哪？": OUT_OF_SCOPE,
}


class TableClassifier:
    """Maps each known utterance to its label; an unknown one fails the test (no silent guess)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def predict(self, text: str) -> IntentPrediction:
        self.seen.append(text)
        label = INTENTS[text]
        confidence = 0.3 if label == OUT_OF_SCOPE else 0.92
        best = "installment_inquiry" if label == OUT_OF_SCOPE else label
        return IntentPrediction(label=label, confidence=confidence, best=best, top=[(best, 0.3)])


class FixedAnswerer:
    """Stands in for the grounded LLM: one fixed answer, and a record of what it was asked."""

    def __init__(self, answer: str = "Yes, your card stays active while you repay.") -> None:
        self.reply = answer
        self.asked: list[tuple[str, str, str]] = []

    async def answer(self, question: str, state: str, flow: Flow) -> str:
        self.asked.append((question, state, flow.id))
        return self.reply


class SlowAnswerer:
    async def answer(self, question: str, state: str, flow: Flow) -> str:
        await asyncio.sleep(5)
        return "too late"


class BrokenAnswerer:
    async def answer(self, question: str, state: str, flow: Flow) -> str:
        raise ConnectionError("LLM server unreachable")


def session(
    name: str, variables: dict[str, str], answerer: FreeQuestionAnswerer | None = None, **kw: float
) -> FlowSession:
    flow = Flow.load(FLOWS / name)
    return FlowSession(flow, TableClassifier(), variables, answerer, today=TODAY, **kw)


async def say_all(s: FlowSession, *utterances: str) -> BotTurn:
    """Start the call, then say each utterance; the bot's last turn."""
    return await hear_all(s, s.start(), *utterances)


async def hear_all(s: FlowSession, turn: BotTurn, *utterances: str) -> BotTurn:
    for text in utterances:
        turn = await s.hear(text)
    return turn


# ---- the fixtures load and their scripts play -------------------------------------------------


@pytest.mark.parametrize(
    "name", ["installment_offer_en.yaml", "installment_offer_zh.yaml", "payment_reminder_zh.yaml"]
)
def test_fixture_flows_load(name):
    flow = Flow.load(FLOWS / name)
    assert flow.exits.keys() >= {"do_not_call", "hand_off"}
    assert any(state.offer for state in flow.states.values())


async def test_happy_path_to_converted_with_the_months_slot_filled():
    s = session("installment_offer_en.yaml", EN_VARS)
    opening = s.start()
    assert opening.text == (
        "Hello, this is the automated assistant calling from Harbor Bank. "
        "Am I speaking with Alex Chen?"
    )
    assert (opening.state, opening.intent, opening.exit, opening.done) == (
        "greeting",
        None,
        None,
        False,
    )

    turn = await s.hear("Yes, speaking.")
    assert turn.state == "disclosure" and "this call is recorded" in turn.text
    assert "4,800 dollars" in turn.text
    assert turn.reason == "intent confirm_identity → disclosure"

    turn = await s.hear("Sure.")
    assert turn.state == "offer" and turn.intent is not None and turn.intent.label == "affirm"

    turn = await s.hear("What's the interest rate?")
    assert turn.state == "choose_months"
    assert "0.75% for 3 months, 0.6% for 6 months and 0.55% for 12 months" in turn.text
    assert "minimum amount is 1,000" in turn.text and "no penalty for repaying early" in turn.text
    assert turn.text.endswith("Would you prefer 3, 6 or 12 months?")

    turn = await s.hear("Six months, please.")
    assert turn.state == "confirm" and turn.slots["months"].value == "6"
    assert turn.reason == "slot months = '6' → confirm"
    assert "4,800 dollars will be split into 6 monthly instalments" in turn.text

    turn = await s.hear("Yes, go ahead.")
    assert turn.exit == "converted" and turn.done
    assert turn.text.startswith("Done: your 6-month instalment plan is set up")
    assert turn.slots["months"].value == "6" and turn.answered_by == "script"
    assert turn.reason == "intent affirm → exit converted"
    assert s.done and s.exit == "converted"


async def test_history_keeps_each_exchange_with_the_redacted_utterance():
    s = session("installment_offer_en.yaml", EN_VARS)
    await say_all(s, "Yes, speaking.", "Sure.", "My card is 4111 1111 1111 1111, what's the rate?")
    customers = [x.customer for x in s.history]
    assert customers == [None, "Yes, speaking.", "Sure.", "My card is [CARD], what's the rate?"]
    assert s.classifier.seen[-1] == "My card is [CARD], what's the rate?"  # never the number
    assert [x.intent.label if x.intent else None for x in s.history] == [
        None,
        "confirm_identity",
        "affirm",
        "interest_rate",
    ]
    assert [x.bot.state for x in s.history] == ["greeting", "disclosure", "offer", "choose_months"]


async def test_a_slot_in_the_utterance_that_leads_to_a_fill_state_is_not_asked_again():
    s = session("installment_offer_en.yaml", EN_VARS)
    turn = await say_all(s, "Yes, speaking.", "Sure.", "Yes, twelve months.")
    assert turn.state == "confirm" and turn.slots["months"].value == "12"
    assert turn.reason == "intent affirm → choose_months → slot months = '12' → confirm"
    assert "Would you prefer" not in turn.text  # choose_months' question was skipped


async def test_busy_customer_gets_a_call_back_at_the_time_they_named():
    s = session("installment_offer_en.yaml", EN_VARS)
    turn = await say_all(s, "Yes, speaking.", "Sure.", "I'm busy, call me tomorrow at 3.")
    assert turn.exit == "call_back" and turn.done
    assert turn.slots["callback_time"].value == "tomorrow at 3"
    assert turn.text == "Thank you, we'll call you back tomorrow at 3. Goodbye."
    assert turn.reason == (
        "intent call_back_later → ask_callback_time → slot callback_time = 'tomorrow at 3' "
        "→ exit call_back"
    )


async def test_busy_customer_without_a_time_is_asked_for_one():
    s = session("installment_offer_en.yaml", EN_VARS)
    turn = await say_all(s, "Yes, speaking.", "Sure.", "I'm busy right now.")
    assert turn.state == "ask_callback_time" and not turn.done
    turn = await s.hear("Tomorrow afternoon works.")
    assert turn.exit == "call_back"
    assert turn.text == "Thank you, we'll call you back Tomorrow afternoon. Goodbye."


async def test_not_interested_gets_one_retention_try_then_declined():
    s = session("installment_offer_en.yaml", EN_VARS)
    turn = await say_all(s, "Yes, speaking.", "Sure.", "Not interested.")
    assert turn.state == "retention" and not turn.done
    assert "0.55% a month" in turn.text
    turn = await s.hear("No, thanks.")
    assert turn.exit == "declined"
    assert turn.text == "Thank you for your time, Alex Chen. Goodbye."


async def test_who_is_calling_is_answered_without_leaving_the_state():
    s = session("installment_offer_en.yaml", EN_VARS)
    turn = await say_all(s, "Who is this?")
    assert turn.state == "greeting" and not turn.done
    assert turn.text.startswith("I'm Harbor Bank's automated assistant")
    assert turn.reason == "intent ask_who_is_calling → stay in greeting"


async def test_wrong_person_ends_the_call_politely():
    s = session("installment_offer_en.yaml", EN_VARS)
    turn = await say_all(s, "Sorry, wrong number.")
    assert (turn.exit, turn.text) == ("declined", "Sorry for the trouble. Goodbye.")


# ---- customer overrides beat every state ------------------------------------------------------


@pytest.mark.parametrize("reached", [1, 2, 3, 4])
async def test_opt_out_phrase_ends_the_call_at_once_whatever_the_state(reached):
    s = session("installment_offer_en.yaml", EN_VARS)
    await say_all(s, *["Yes, speaking.", "Sure.", "What's the interest rate?"][: reached - 1])
    # The intent model heard "not interested" (→ retention in the offer); the guardrail wins.
    turn = await s.hear("Not interested, don't call me again.")
    assert turn.exit == "do_not_call" and turn.done
    assert turn.text == "Understood. We won't call you again. Goodbye."
    assert turn.guardrail is not None and turn.guardrail.rule == "opt_out"
    assert turn.reason.startswith("guardrail opt_out: the customer asked not to be called again")
    assert turn.reason.endswith("→ exit do_not_call")
    assert turn.intent is not None and turn.intent.label == "not_interested"


async def test_opt_out_in_mandarin_mid_offer():
    s = session("installment_offer_zh.yaml", ZH_VARS)
    turn = await say_all(s, "是我。", "可以。")
    assert turn.state == "offer"
    turn = await s.hear("不需要，别再打了！")
    assert turn.exit == "do_not_call" and turn.state == "offer"
    assert turn.text == "好的，我们以后不会再给您打电话。再见。"
    assert turn.guardrail is not None and turn.guardrail.evidence == "别再打了"


async def test_stop_calling_intent_without_a_guardrail_phrase_is_an_opt_out_too():
    s = session("installment_offer_en.yaml", EN_VARS)
    turn = await say_all(s, "Yes, speaking.", "Please remove me from this campaign.")
    assert turn.exit == "do_not_call" and turn.guardrail is None
    assert turn.reason == "intent stop_calling → exit do_not_call"


async def test_hand_off_by_guardrail_by_intent_and_on_complaint():
    s = session("installment_offer_en.yaml", EN_VARS)
    turn = await say_all(s, "Yes, speaking.", "I want to talk to a real person.")
    assert turn.exit == "hand_off" and turn.guardrail is not None
    assert turn.guardrail.rule == "handoff"
    assert turn.text == "Of course. Let me transfer you to a colleague now; please hold."

    s = session("installment_offer_en.yaml", EN_VARS)
    turn = await say_all(s, "Yes, speaking.", "Sure.", "Can I speak with your manager?")
    assert (turn.exit, turn.guardrail, turn.reason) == (
        "hand_off",
        None,
        "intent ask_for_human → exit hand_off",
    )

    s = session("installment_offer_en.yaml", EN_VARS)
    turn = await say_all(s, "This is ridiculous, I'm filing a complaint.")
    assert turn.exit == "hand_off" and turn.reason == "intent complaint → exit hand_off"


async def test_hear_after_the_call_ended_raises_and_changes_nothing():
    s = session("installment_offer_en.yaml", EN_VARS)
    await say_all(s, "Sorry, wrong number.")
    with pytest.raises(FlowFinishedError, match=r"call has ended \(declined"):
        await s.hear("Yes, speaking.")
    assert len(s.history) == 2 and s.exit == "declined"


async def test_hear_before_start_and_a_second_start_raise():
    s = session("installment_offer_en.yaml", EN_VARS)
    with pytest.raises(FlowFinishedError, match="start"):
        await s.hear("Yes, speaking.")
    s.start()
    with pytest.raises(FlowFinishedError, match="already"):
        s.start()


# ---- retries and fallback ---------------------------------------------------------------------


async def test_retries_exhausted_take_the_fallback_exit():
    s = session("installment_offer_en.yaml", EN_VARS)
    s.start()
    first = await s.hear("Hmm?")
    second = await s.hear("Hmm?")
    for n, turn in enumerate([first, second], 1):
        assert turn.text == "Sorry, I didn't catch that. Am I speaking with Alex Chen?"
        assert turn.reason == f"no match (out_of_scope): reprompt {n} of 2" and not turn.done
    last = await s.hear("Hmm?")
    assert last.exit == "call_back" and last.text == "I'll try again another time. Goodbye."
    assert last.reason == "2 retries without a match (out_of_scope) → exit call_back"


async def test_retries_restart_in_each_state_and_silence_counts_as_no_match():
    s = session("installment_offer_en.yaml", EN_VARS)
    await say_all(s, "Hmm?", "Hmm?", "Yes, speaking.")  # two reprompts in greeting
    turn = await s.hear("   ")
    assert turn.state == "disclosure" and turn.intent is None
    assert turn.reason == "no match (nothing heard): reprompt 1 of 2"


async def test_a_call_going_in_circles_is_handed_to_a_person():
    flow = Flow.load(FLOWS / "installment_offer_en.yaml").model_copy(update={"max_turns": 3})
    s = FlowSession(flow, TableClassifier(), EN_VARS, today=TODAY)
    turn = await say_all(s, "Who is this?", "Who is this?", "Who is this?")
    assert not turn.done
    turn = await s.hear("Who is this?")
    assert turn.exit == "hand_off" and turn.reason == "3 turns without an outcome → exit hand_off"


# ---- free questions ---------------------------------------------------------------------------


async def test_free_question_is_answered_by_the_answerer_then_the_script_resumes():
    answerer = FixedAnswerer()
    s = session("installment_offer_en.yaml", EN_VARS, answerer)
    turn = await say_all(s, "Yes, speaking.", "Sure.", "Can I still use the card while I repay?")
    assert answerer.asked == [
        ("Can I still use the card while I repay?", "offer", "installment_offer")
    ]
    assert turn.answered_by == "llm" and turn.state == "offer" and not turn.done
    assert turn.text == (
        "Yes, your card stays active while you repay. "
        "Would you like to split your statement into 3, 6 or 12 monthly instalments?"
    )
    assert turn.reason == "free question (out_of_scope) answered by the LLM → resume offer"


async def test_free_question_without_an_answerer_gets_the_no_answer_line():
    s = session("installment_offer_en.yaml", EN_VARS)
    turn = await say_all(s, "Yes, speaking.", "Sure.", "Can I still use the card while I repay?")
    assert turn.answered_by == "script" and turn.state == "offer"
    assert turn.text.startswith("I'm not able to answer that on this call; I'll have an agent")
    assert turn.text.endswith("3, 6 or 12 monthly instalments?")
    assert "no answerer, no_answer line" in turn.reason


@pytest.mark.parametrize(
    ("answerer", "why"),
    [
        (FixedAnswerer("Good news: this plan is risk-free."), "forbidden claim guaranteed_returns"),
        (FixedAnswerer("Sure, call 4111 1111 1111 1111."), "contains personal data"),
        (FixedAnswerer("   "), "empty answer"),
        (BrokenAnswerer(), "the answerer failed (ConnectionError)"),
        (SlowAnswerer(), "no answer within 0.05 s"),
    ],
)
async def test_an_answer_that_fails_the_guardrails_or_never_comes_is_not_said(answerer, why):
    s = session("installment_offer_en.yaml", EN_VARS, answerer, answer_timeout_s=0.05)
    turn = await say_all(s, "Yes, speaking.", "Sure.", "Can I still use the card while I repay?")
    assert turn.answered_by == "script" and why in turn.reason
    assert turn.text.startswith("I'm not able to answer that") and "risk-free" not in turn.text


async def test_free_questions_are_limited_per_state_visit_and_not_taken_elsewhere():
    answerer = FixedAnswerer()
    s = session("installment_offer_en.yaml", EN_VARS, answerer)
    await say_all(s, "Yes, speaking.", "Sure.")
    for _ in range(3):
        assert (await s.hear("Can I still use the card while I repay?")).answered_by == "llm"
    turn = await s.hear("Can I still use the card while I repay?")
    assert turn.answered_by == "script" and turn.reason.startswith("no match (out_of_scope)")
    assert len(answerer.asked) == 3

    # The greeting takes no free questions: an out-of-scope turn there is a reprompt.
    answerer = FixedAnswerer()
    s = session("installment_offer_en.yaml", EN_VARS, answerer)
    turn = await say_all(s, "Can I still use the card while I repay?")
    assert turn.reason.startswith("no match") and answerer.asked == []


# ---- Mandarin flows ---------------------------------------------------------------------------


async def test_mandarin_offer_converts_with_rates_and_months():
    s = session("installment_offer_zh.yaml", ZH_VARS)
    opening = s.start()
    assert opening.text == "您好，我是海港银行的智能客服。请问您是王先生吗？"
    turn = await hear_all(s, opening, "是我。", "可以。", "手续费怎么算？")
    assert turn.state == "choose_months"
    assert turn.text.startswith(
        "每月手续费率为：3期0.75%，6期0.6%，12期0.55%。最低分期金额为1000元"
    )
    turn = await s.hear("六期吧。")
    assert turn.state == "confirm" and turn.slots["months"].value == "6"
    assert turn.text == "跟您确认一下：您4800元的账单将分6期还款。现在为您办理可以吗？"
    turn = await s.hear("好的。")
    assert turn.exit == "converted" and turn.text.startswith("已为您办理6期分期")


async def test_mandarin_busy_customer_names_a_call_back_time():
    s = session("installment_offer_zh.yaml", ZH_VARS)
    turn = await say_all(s, "是我。", "我现在没空，明天下午三点再打吧。")
    assert turn.exit == "call_back" and turn.slots["callback_time"].value == "明天下午三点"
    assert turn.text == "好的，我们会在明天下午三点再联系您。再见。"


async def test_payment_reminder_records_a_promise_to_pay_with_its_date():
    s = session("payment_reminder_zh.yaml", REMINDER_VARS)
    opening = s.start()
    assert "本次通话将被录音" in opening.text and "智能客服" in opening.text
    turn = await s.hear("是我。")
    assert turn.state == "reminder"
    assert "应还金额为3500元，还款日是3月20日" in turn.text
    turn = await s.hear("我周五还。")
    assert turn.exit == "converted" and turn.slots["pay_date"].value == "2025-03-14"
    assert turn.text == "好的，已为您记录：周五还款3500元。感谢您的配合，再见。"


async def test_payment_reminder_asks_for_the_date_when_none_was_given():
    s = session("payment_reminder_zh.yaml", REMINDER_VARS)
    turn = await say_all(s, "是我。", "可以，我会还的。")
    assert turn.state == "ask_pay_date" and turn.text == "好的，请问您大概哪天可以还款？"
    turn = await s.hear("下个月15号吧。")
    assert turn.exit == "converted" and turn.slots["pay_date"].value == "2025-04-15"


async def test_payment_reminder_answers_late_fee_questions_without_leaving_the_state():
    s = session("payment_reminder_zh.yaml", REMINDER_VARS)
    turn = await say_all(s, "是我。", "逾期会怎么样？")
    assert turn.state == "reminder" and turn.text.startswith("如果逾期，可能会按合同约定")
    turn = await s.hear("你们公司在哪？")  # a free question; no answerer here
    assert turn.text == "这个问题我记下了，稍后会有专员跟进。请问您能在还款日前还款吗？"


async def test_cannot_pay_is_offered_a_hardship_specialist():
    s = session("payment_reminder_zh.yaml", REMINDER_VARS)
    turn = await say_all(s, "是我。", "我现在真的还不上。")
    assert turn.state == "hardship" and "困难还款专员" in turn.text and not turn.done
    turn = await s.hear("好的。")
    assert turn.exit == "hand_off" and turn.text == "好的，正在为您转接困难还款专员，请稍候。"


# ---- slot extraction --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Six months, please.", "6"),
        ("let's do 12 months", "12"),
        ("the three-month plan", "3"),
        ("twelve", "12"),
        ("half a year", "6"),
        ("分六期", "6"),
        ("十二期吧", "12"),
        ("3期", "3"),
        ("六个月", "6"),
        ("那就六个吧", "6"),
        ("I'd like to pay it off in 3 months", None),  # when, not how many instalments
        ("24 months", None),  # not an offered plan
        ("I have 3 questions about it", None),
        ("三个月后再说", None),
        ("好的", None),
    ],
)
def test_months_slot(text, value):
    found = extract(SlotSpec(type="months"), text, TODAY)
    assert (found.value if found else None) == value


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("call me tomorrow at 3", "tomorrow at 3"),
        ("Tomorrow afternoon at 3pm works", "Tomorrow afternoon at 3pm"),
        ("maybe next Monday morning", "next Monday morning"),
        ("try again in an hour", "in an hour"),
        ("after lunch is better", "after lunch"),
        ("明天下午三点", "明天下午三点"),
        ("今晚八点再打", "今晚八点"),
        ("周五下午两点半吧", "周五下午两点半"),
        ("一个小时以后", "一个小时以后"),
        ("good morning", None),
        ("晚一点再打", None),  # "a bit later", not one o'clock
        ("later", None),
    ],
)
def test_time_phrase_slot(text, phrase):
    found = extract(SlotSpec(type="time_phrase"), text, TODAY)
    assert (found.say if found else None) == phrase


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("I'll pay on Friday", "2025-03-14"),
        ("next Friday", "2025-03-21"),
        ("the day after tomorrow", "2025-03-14"),
        ("on the 1st", "2025-04-01"),
        ("March 20th", "2025-03-20"),
        ("by the end of the month", "2025-03-31"),
        ("我周五还", "2025-03-14"),
        ("下周五", "2025-03-21"),
        ("三月二十号", "2025-03-20"),
        ("大后天", "2025-03-15"),
        ("2025年4月1日", "2025-04-01"),
        ("十天后", "2025-03-22"),
        ("2024-01-01", None),  # a past date is no promise to pay
        ("soon", None),
    ],
)
def test_date_slot(text, iso):
    found = extract(SlotSpec(type="date"), text, TODAY)
    assert (found.value if found else None) == iso


@pytest.mark.parametrize(
    ("text", "value", "say"),
    [
        ("$1,500", "1500", "1,500"),
        ("5k", "5000", "5,000"),
        ("I can pay 2,000.50 dollars", "2000.5", "2,000.5"),
        ("我先还五千", "5000", "5000"),
        ("1.5万", "15000", "15000"),
        ("三千五百块", "3500", "3500"),
        ("我下个月15号还", None, None),
    ],
)
def test_amount_slot(text, value, say):
    found = extract(SlotSpec(type="amount"), text, TODAY)
    assert (found.value, found.say) == (value, say) if found else value is None


@pytest.mark.parametrize(
    ("text", "n"),
    [("十二", 12), ("二十", 20), ("三千五", 3500), ("一百零五", 105), ("两万五", 25000)],
)
def test_chinese_numbers(text, n):
    assert cn_number(text) == n


# ---- load-time errors -------------------------------------------------------------------------

EN_SOURCE = (FLOWS / "installment_offer_en.yaml").read_text(encoding="utf-8")
REMINDER_SOURCE = (FLOWS / "payment_reminder_zh.yaml").read_text(encoding="utf-8")


def load_variant(tmp_path: Path, source: str, old: str, new: str) -> Flow:
    assert old in source, f"the fixture no longer contains {old!r}"
    path = tmp_path / "variant.yaml"
    path.write_text(source.replace(old, new, 1), encoding="utf-8")
    return Flow.load(path)


def test_a_forbidden_claim_in_a_line_fails_to_load_naming_the_state(tmp_path):
    with pytest.raises(FlowError) as e:
        load_variant(tmp_path, EN_SOURCE, "and repay early at any time.", "and it's risk-free.")
    message = str(e.value)
    assert message.startswith(f"{tmp_path / 'variant.yaml'}: flow 'installment_offer' is invalid")
    assert "state 'offer' → say: forbidden claim guaranteed_returns" in message
    assert "'risk-free'" in message


def test_a_collection_threat_fails_to_load(tmp_path):
    with pytest.raises(
        FlowError, match=r"state 'hardship' → say: forbidden claim collection_threa"
    ):
        load_variant(tmp_path, REMINDER_SOURCE, "理解您的难处。", "再不还钱我们就起诉你。")


def test_a_missing_recording_notice_before_the_offer_fails_to_load(tmp_path):
    with pytest.raises(FlowError) as e:
        load_variant(tmp_path, EN_SOURCE, "Please note this call is recorded. ", "")
    message = str(e.value)
    assert "the recording_notice disclosure" in message
    assert "on the way to state 'offer', state 'choose_months'" in message
    assert "exit 'converted' (from state 'confirm' on affirm)" in message
    assert "e.g. greeting → disclosure → offer" in message
    assert "ai_disclosure" not in message


def test_a_missing_ai_disclosure_fails_to_load(tmp_path):
    with pytest.raises(FlowError, match=r"the ai_disclosure disclosure .* state 'reminder'"):
        load_variant(tmp_path, REMINDER_SOURCE, "我是海港银行的智能客服，", "我是海港银行，")


def test_a_disclosure_made_only_on_some_paths_is_not_enough(tmp_path):
    # The recording notice moves from the disclosure state to the "yes" answer in the greeting.
    source = EN_SOURCE.replace("Please note this call is recorded. ", "")
    said_on_yes = '      affirm: {to: disclosure, say: "Thanks. This call is recorded."}\n'
    with pytest.raises(FlowError, match="recording_notice") as e:
        load_variant(tmp_path, source, "      affirm: disclosure\n", said_on_yes)
    assert "ai_disclosure" not in str(e.value)
    # Said on both ways into the disclosure state, it is enough.
    source = source.replace("      affirm: disclosure\n", said_on_yes)
    said_on_confirm = said_on_yes.replace("affirm", "confirm_identity")
    flow = load_variant(tmp_path, source, "      confirm_identity: disclosure\n", said_on_confirm)
    assert flow.states["offer"].offer


TINY_FLOW = """
id: tiny
language: en
fallback: {exit: call_back}
slots: {months: {type: months}}
states:
  greeting:
    say: "Hello, this is the automated assistant calling from Harbor Bank."
    on: {affirm: choose}
  choose:
    say: "This call is recorded. Would you like 3, 6 or 12 months?"
    fill: months
    next: pitch
  pitch:
    offer: true
    say: "{months} months it is. Shall I set it up?"
    on: {affirm: {exit: converted}}
exits:
  converted: {say: "Done, goodbye."}
  call_back: {say: "Goodbye."}
  do_not_call: {say: "Understood, goodbye."}
  hand_off: {say: "Transferring you now."}
"""


def test_a_disclosure_in_a_question_the_answer_can_skip_does_not_count():
    # "Yes, six months" in the greeting fills `months` on the way in, so `choose` is never said.
    with pytest.raises(FlowError, match=r"recording_notice .* e\.g\. greeting → choose → pitch"):
        Flow.from_yaml(TINY_FLOW, source="tiny.yaml")
    moved = TINY_FLOW.replace('Harbor Bank."', 'Harbor Bank. This call is recorded."')
    assert Flow.from_yaml(moved).states["pitch"].offer


def test_an_unknown_target_state_fails_to_load(tmp_path):
    with pytest.raises(FlowError, match=r"state 'disclosure' → on affirm: unknown state 'ofer'"):
        load_variant(tmp_path, EN_SOURCE, "      affirm: offer\n", "      affirm: ofer\n")


def test_an_unknown_template_variable_fails_to_load(tmp_path):
    with pytest.raises(
        FlowError, match=r"state 'greeting' → say: unknown placeholder \{first_name\}"
    ):
        load_variant(tmp_path, EN_SOURCE, 'speaking with {customer_name}?"\n', '{first_name}?"\n')


def test_a_slot_said_before_it_can_be_filled_fails_to_load(tmp_path):
    with pytest.raises(FlowError, match=r"state 'disclosure' → say: \{months\} may be said before"):
        load_variant(tmp_path, EN_SOURCE, "Do you have two minutes?", "{months} months?")


def test_a_missing_call_variable_fails_at_start_not_mid_call():
    flow = Flow.load(FLOWS / "installment_offer_en.yaml")
    with pytest.raises(FlowError) as e:
        FlowSession(flow, TableClassifier(), {"customer_name": "Alex Chen"})
    assert str(e.value) == (
        "flow 'installment_offer' needs call variable(s): "
        "statement_amount (used in state 'disclosure' → say)"
    )
    with pytest.raises(FlowError, match="customer_name"):
        FlowSession(flow, TableClassifier(), {**EN_VARS, "customer_name": "  "})


def test_a_call_variable_that_makes_a_forbidden_claim_fails_at_start():
    flow = Flow.load(FLOWS / "installment_offer_en.yaml")
    with pytest.raises(
        FlowError,
        match=r"variables state 'disclosure' → say makes a forbidden claim guaranteed_returns",
    ):
        FlowSession(flow, TableClassifier(), {**EN_VARS, "statement_amount": "a risk-free bond"})


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        (
            "  hand_off: {say:",
            "  # hand_off: {say:",
            "exit 'hand_off' is missing under `exits`",
        ),
        (
            'not_interested: retention\n    reprompt: "Do',
            'not_intrested: retention\n    reprompt: "Do',
            "state 'disclosure': unknown intent 'not_intrested'",
        ),
        (
            'not_interested: retention\n    reprompt: "Do',
            'complaint: retention\n    reprompt: "Do',
            "state 'disclosure': `on: complaint` never fires",
        ),
        (
            "fill: callback_time\n",
            "fill: callback\n",
            "state 'ask_callback_time': fills unknown slot",
        ),
        (
            "next: confirm\n    free_questions",
            "next: {stay: true}\n    free_questions",
            "state 'offer' → next: cannot be `stay`",
        ),
        (
            "affirm: {exit: converted}",
            "affirm: {exit: converted, to: offer}",
            "states → confirm → on → affirm: a transition needs exactly one of",
        ),
        ("retries: 2\n", "retries: two\n", "retries: Input should be a valid integer"),
    ],
)
def test_structural_errors_name_the_state(tmp_path, old, new, error):
    with pytest.raises(FlowError, match=re.escape(error)):
        load_variant(tmp_path, EN_SOURCE, old, new)


def test_an_unreachable_state_fails_to_load(tmp_path):
    orphan = "states:\n  orphan:\n    say: 'Hello.'\n    fallback: {exit: declined}\n"
    with pytest.raises(FlowError, match="state 'orphan' is unreachable from the start state"):
        load_variant(tmp_path, EN_SOURCE, "states:\n", orphan)


def test_model_validate_accepts_plain_yaml_and_reports_the_state():
    data = yaml.safe_load(EN_SOURCE)  # YAML 1.1 reads the `on:` key as True
    assert True in data["states"]["greeting"]
    flow = Flow.model_validate(data)
    assert flow == Flow.load(FLOWS / "installment_offer_en.yaml")
    data["states"]["offer"][True]["affirm"] = "nowhere"
    with pytest.raises(ValidationError, match="state 'offer' → on affirm: unknown state 'nowhere'"):
        Flow.model_validate(data)
