"""Outbound flows driven by the real default intent model (not a lookup table)."""

from __future__ import annotations

import pytest

from dialogue.defaults import flow_path
from dialogue.flows import Flow, FlowSession

VARIABLES = {"customer_name": "Jordan Lee", "statement_amount": "4,800 dollars"}


async def _play(flow_file: str, lines: list[str], classifier, variables=VARIABLES):  # type: ignore[no-untyped-def]
    session = FlowSession(Flow.load(flow_path(flow_file)), classifier, variables)
    turn = session.start()
    for line in lines:
        assert not turn.done, f"ended early: {turn.reason}"
        turn = await session.hear(line)
    return turn


async def test_english_offer_to_conversion(intent_model):
    from callwise.dialogue_cli import DEMO_FLOW_LINES

    turn = await _play("installment_offer_en.yaml", DEMO_FLOW_LINES, intent_model)
    assert turn.exit == "converted", turn.reason
    assert turn.slots["months"].value == "6"


async def test_mandarin_offer_with_a_rate_question(intent_model):
    turn = await _play("installment_offer_zh.yaml",
                       ["对，我就是", "好的你说吧", "手续费是多少啊", "那就分十二期吧", "好的"],
                       intent_model, {"customer_name": "王先生", "statement_amount": "8600元"})
    assert turn.exit == "converted", turn.reason
    assert turn.slots["months"].value == "12"


@pytest.mark.parametrize(("flow_file", "lines", "exit_"), [
    ("installment_offer_zh.yaml", ["是我", "以后别再给我打电话了"], "do_not_call"),
    ("installment_offer_en.yaml", ["yes speaking", "I'm driving right now, call me tomorrow "
                                   "at 3"], "call_back"),
    ("installment_offer_en.yaml", ["speaking", "am I talking to a robot? get me a real person"],
     "hand_off"),
])
async def test_customer_exits(intent_model, flow_file, lines, exit_):
    variables = dict(VARIABLES, customer_name="王先生") if "zh" in flow_file else VARIABLES
    turn = await _play(flow_file, lines, intent_model, variables)
    assert turn.exit == exit_, turn.reason
