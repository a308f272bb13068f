"""dialogue.wrapup: the after-call note, extractive (no model) and from the LLM (a real client:
the embedded model, or an OpenAI-style client pointed at a closed port for "the LLM is down")."""

from __future__ import annotations

import re
import socket

import pytest

from dialogue.types import Turn
from dialogue.wrapup import draft_note, extractive_note, parse_note

EN = [Turn(speaker="agent", text="Hi, this is Sam from Harbor Bank, this call is recorded. "
           "I'm calling about splitting your bill into installments."),
      Turn(speaker="customer", text="What's the monthly fee over six months?"),
      Turn(speaker="agent", text="It's 0.6% a month over 6 months."),
      Turn(speaker="customer", text="Okay, let's do it. My card is 4111 1111 1111 1111."),
      Turn(speaker="agent", text="Great. I will send you the terms by SMS today.")]
ZH = [Turn(speaker="agent",
           text="您好，我是海港银行的小陈，本次通话将被录音。想跟您介绍一下账单分期。"),
      Turn(speaker="customer", text="分六期每个月手续费多少？"),
      Turn(speaker="agent", text="六期每月手续费0.6%。"),
      Turn(speaker="customer", text="好的，那就办吧。"),
      Turn(speaker="agent", text="好的，我稍后把条款短信发给您。")]
CARD = re.compile(r"\d(?:[ -]?\d){12,18}")


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


@pytest.mark.parametrize("turns", [EN, ZH], ids=["en", "zh"])
def test_the_extractive_note_quotes_the_call_and_nothing_else(turns):
    note = extractive_note(turns)
    assert note.reason and note.agreed and note.next_step
    said = _squash(" ".join(t.text for t in turns))
    for value in (note.reason, note.agreed, note.next_step):
        for piece in re.split(r"(?<=[.。!?！？])\s*", value):
            assert _squash(piece) in said, piece
    assert extractive_note(turns) == note  # deterministic


def test_the_extractive_note_is_redacted_and_survives_thin_calls():
    assert not CARD.search(extractive_note(EN).model_dump_json())
    for turns in ([], [Turn(speaker="customer", text="Hello?")],
                  [Turn(speaker="agent", text="Hello.")]):
        note = extractive_note(turns)
        assert len(note.reason) <= 500 and len(note.agreed) <= 1000


def test_messy_model_output_is_parsed_into_the_three_fields():
    text = ("Sure! Here is the note:\n- Reason： wants installments\n* 约定：六期\n"
            "Next step: SMS terms\nThanks")
    assert parse_note(text) == {"reason": "wants installments", "agreed": "六期",
                                "next_step": "SMS terms"}
    assert parse_note("nothing useful") == {} or not any(parse_note("nothing useful").values())


async def test_with_the_llm_down_the_draft_is_the_extractive_note():
    from dialogue.llm import OpenAICompatibleClient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    llm = OpenAICompatibleClient(f"http://127.0.0.1:{port}/v1", "none", timeout_s=2)
    try:
        note, source = await draft_note(llm, EN, "en")
    finally:
        await llm.close()
    assert source == "extractive" and note == extractive_note(EN, "en")


async def test_the_embedded_llm_writes_a_checked_note():
    from dialogue.llm import make_client

    llm = make_client()
    try:
        note, source = await draft_note(llm, EN, "en")
    finally:
        await llm.close()
    assert note.reason or note.agreed or note.next_step
    assert not CARD.search(note.model_dump_json())
    if source == "llm":  # a note that states a figure the call never said is refused
        said = " ".join(t.text for t in EN)
        for figure in re.findall(r"\d+(?:\.\d+)?", note.model_dump_json()):
            assert figure in said, (figure, note)
