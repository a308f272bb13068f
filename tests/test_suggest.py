"""Suggestions end to end: real intent model, real playbook, the real embedded LLM; guardrails
on what the LLM says, and exemplars that still arrive when the LLM fails or misbehaves."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from dialogue.defaults import policy_text
from dialogue.llm import LocalGGUFClient, OpenAICompatibleClient
from dialogue.llm_models import resolve_model_path
from dialogue.suggest import Suggester, detect_language
from dialogue.types import Turn


@pytest.fixture(scope="module")
async def llm() -> AsyncIterator[LocalGGUFClient]:
    client = await asyncio.to_thread(LocalGGUFClient, resolve_model_path(), n_ctx=4096,
                                     n_threads=1, temperature=0.0)
    yield client
    await client.close()


def _history(*lines: str) -> list[Turn]:
    turns = [Turn(speaker="agent", text="Hello, this is Harbor Bank; this call is recorded.")]
    for i, line in enumerate(lines):
        turns.append(Turn(speaker="customer" if i % 2 == 0 else "agent", text=line))
    return turns


def test_instant_path_gives_intent_and_exemplars(intent_model, playbook):
    suggester = Suggester(intent_model, playbook, None, policy_text())
    assist = suggester.instant("c1", _history("分期的话，每个月手续费是多少？"))
    assert assist.language == "zh" and assist.intent.label == "interest_rate"
    assert len(assist.exemplars) == 3 and all(e.language == "zh" for e in assist.exemplars)
    assert assist.override is None


@pytest.mark.parametrize(("line", "action"), [
    ("别再给我打电话了", "stop_and_add_to_do_not_call"),
    ("can I talk to a real person please", "transfer_to_human"),
])
async def test_overrides_answer_at_once_without_the_llm(intent_model, playbook, line, action):
    suggester = Suggester(intent_model, playbook, None, policy_text())
    result = await suggester.suggest("c2", _history(line))
    assert result.assist.override is not None and result.assist.override.action == action
    assert [s.source for s in result.suggestions] == ["override"]
    assert result.assist.exemplars == [] and result.first_token_ms is None
    assert detect_language(result.suggestions[0].text) == detect_language(line)


async def test_llm_reply_is_grounded_guarded_and_streams(intent_model, playbook, llm):
    suggester = Suggester(intent_model, playbook, llm, policy_text())
    history = _history("I have a big bill this month, can I split it into payments?")
    result = await suggester.suggest("c3", history)
    assert result.llm_error is None and result.first_token_ms is not None
    first = result.suggestions[0]
    assert first.source == "llm" and first.text
    assert first.grounded_in == [e.call_id for e in result.assist.exemplars]
    assert detect_language(first.text) == "en"
    # the exemplars follow, each with its own source call
    assert [s.source for s in result.suggestions[1:]] == ["exemplar"] * (
        len(result.suggestions) - 1)
    prompt = suggester.messages(result.assist, history)
    assert "0.6%" in prompt[0].content  # the policy figures are in front of the model
    # the exemplar's style and policy figures reach the model, another customer's amounts don't
    assert "[amount]" in prompt[1].content and "1,000" in prompt[1].content
    assert "21,190" not in prompt[1].content


async def test_second_turn_of_a_call_reuses_the_llm_cache(intent_model, playbook, llm):
    suggester = Suggester(intent_model, playbook, llm, policy_text())
    history = _history("how much is the late fee?")
    await suggester.suggest("c4", history)
    history += [Turn(speaker="agent", text="It is 5% of the minimum payment, capped at 300."),
                Turn(speaker="customer", text="ok and when is my payment due?")]
    await suggester.suggest("c4", history)
    stats = llm.last_stats
    # instructions, policy and the call so far were already in the cache from the first turn
    assert stats is not None and stats.reused_tokens > stats.evaluated_tokens, stats


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _serve_text(*pieces: str) -> tuple[web.AppRunner, int]:
    """A real OpenAI-compatible endpoint whose "model" streams the given pieces."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for piece in pieces:
            chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def test_forbidden_llm_text_is_withheld_and_exemplars_remain(intent_model, playbook):
    runner, port = await _serve_text("Don't worry, ", "approval is guaranteed ", "for you.")
    client = OpenAICompatibleClient(f"http://127.0.0.1:{port}", "scripted")
    try:
        suggester = Suggester(intent_model, playbook, client, policy_text())
        result = await suggester.suggest("c5", _history("will my loan be approved?"))
    finally:
        await client.close()
        await runner.cleanup()
    assert result.withheld and result.withheld[0].kind == "forbidden_claim"
    assert result.suggestions and all(s.source == "exemplar" for s in result.suggestions)
    assert all("guarantee" not in s.text.lower() for s in result.suggestions)


@pytest.mark.parametrize(("text", "rule", "shown"), [
    ("Agent: The 6-month plan is 0.6% a month, so 127 a month on your bill.", "ungrounded_figure",
     None),
    ("I'm sorry, but I can't assist with that.", "llm_refusal", None),
    ("Agent: Hello, this is Harbor Bank; this call is recorded.", "llm_echo", None),
    ("Hello, this is Harbor Bank; this call is recorded. Customer: what would it cost?",
     "llm_echo", None),
    ("Agent: The 6-month plan costs 0.6% a month on 4,800.\nCustomer: ok", None,
     "The 6-month plan costs 0.6% a month on 4,800."),
])
async def test_llm_text_is_cleaned_and_checked_against_policy_and_call(intent_model, playbook,
                                                                        text, rule, shown):
    runner, port = await _serve_text(text)
    client = OpenAICompatibleClient(f"http://127.0.0.1:{port}", "scripted")
    try:
        suggester = Suggester(intent_model, playbook, client, policy_text())
        history = _history("My statement is 4,800, what would six months of instalments cost?")
        result = await suggester.suggest("c7", history)
    finally:
        await client.close()
        await runner.cleanup()
    if rule:
        assert [f.rule for f in result.withheld] == [rule]
        assert all(s.source == "exemplar" for s in result.suggestions)
    else:
        assert result.withheld == [] and result.suggestions[0].text == shown


async def test_llm_outage_still_shows_exemplars(intent_model, playbook):
    client = OpenAICompatibleClient(f"http://127.0.0.1:{_free_port()}", "down", timeout_s=2)
    try:
        suggester = Suggester(intent_model, playbook, client, policy_text())
        result = await suggester.suggest("c6", _history("我的卡丢了"))
    finally:
        await client.close()
    assert result.llm_error and "127.0.0.1" in result.llm_error
    assert result.suggestions and result.suggestions[0].source == "exemplar"
    assert result.assist.intent.label == "card_lost"
    # cards to say carry only policy figures; another customer's amounts become [amount]
    policy = policy_text().replace(",", "")
    for s in result.suggestions:
        assert all(n in policy for n in re.findall(r"\d+", s.text.replace(",", ""))), s.text
