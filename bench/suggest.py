"""Suggestion latency and examples: the instant path (intent + retrieval) over the held-out
customer lines, time to the LLM's first token, and a table of example suggestions (zh and en)
with the exemplars that grounded them.

    python bench/suggest.py [--threads 2] [--llm-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from common import ROOT, machine, percentile

EXAMPLES = [
    ("en", ["Hi, yes this is she.", "How much would the monthly fee be if I split it over 6 "
            "months?"]),
    ("en", ["I'm not sure, honestly the rate on these loans always seems too high."]),
    ("en", ["Somebody took my wallet this morning, my card was in it."]),
    ("en", ["I lost my job last month, I can't pay this right now."]),
    ("zh", ["嗯，是我。", "这个账单分期的话，手续费怎么算？"]),
    ("zh", ["我现在在开会，不方便。"]),
    ("zh", ["滞纳金怎么这么多，能不能给我免了？"]),
    ("zh", ["最近手头紧，这个月可能还不上。"]),
]


def _history(lines: list[str], language: str):  # type: ignore[no-untyped-def]
    from dialogue.types import Turn

    greeting = ("您好，我是海港银行的客户经理，本次通话将被录音。" if language == "zh"
                else "Hello, this is Sam from Harbor Bank; this call is recorded.")
    turns = [Turn(speaker="agent", text=greeting)]
    for i, line in enumerate(lines):
        if i:
            turns.append(Turn(speaker="agent", text="好的，请说。" if language == "zh"
                              else "Sure, go ahead."))
        turns.append(Turn(speaker="customer", text=line))
    return turns


def instant_latency(suggester) -> None:  # type: ignore[no-untyped-def]
    from dialogue.types import Turn

    lines = [json.loads(line)["text"] for line in
             (ROOT / "fixtures" / "intents" / "test.jsonl").read_text().splitlines()]
    suggester.instant("warm", [Turn(speaker="customer", text=lines[0])])
    intent_ms, retrieval_ms, total_ms = [], [], []
    for i, line in enumerate(lines):
        started = time.perf_counter()
        a = suggester.instant(f"b{i}", [Turn(speaker="customer", text=line)])
        total_ms.append((time.perf_counter() - started) * 1000)
        intent_ms.append(a.intent_ms)
        if a.override is None:
            retrieval_ms.append(a.retrieval_ms)
    n = len(suggester.playbook.entries)
    print(f"instant path over {len(lines)} held-out customer lines, playbook of {n} exemplars:")
    for name, values in (("intent", intent_ms), ("retrieval (embed + search)", retrieval_ms),
                         ("intent + retrieval + guardrails", total_ms)):
        print(f"  {name:<32} p50 {percentile(values, 50):6.1f} ms   p95 "
              f"{percentile(values, 95):6.1f} ms")


def scaled_retrieval(playbook) -> None:  # type: ignore[no-untyped-def]
    """Retrieval when the playbook is 100x bigger (same vectors tiled): the search itself."""
    import numpy as np

    from dialogue.playbook import Playbook

    big = Playbook(playbook.entries * 100, np.tile(playbook.vectors, (100, 1)), playbook.encoder,
                   playbook.standings, playbook.rule)
    times = []
    for line in ["how much is the fee for 12 months", "我的卡丢了", "call me later"] * 20:
        started = time.perf_counter()
        big.retrieve(line, None, "en")
        times.append((time.perf_counter() - started) * 1000)
    print(f"  retrieval with {len(big.entries)} exemplars: p50 {percentile(times, 50):.1f} ms, "
          f"p95 {percentile(times, 95):.1f} ms")


async def llm_examples(suggester) -> None:  # type: ignore[no-untyped-def]
    first, totals = [], []
    rows = []
    for n, (language, lines) in enumerate(EXAMPLES):
        result = await suggester.suggest(f"ex{n}", _history(lines, language), language)
        if result.first_token_ms is not None:
            first.append(result.first_token_ms)
            totals.append(result.total_ms)
        rows.append(result)
    print(f"LLM first token (new call each time, prompt ~700-900 tokens): p50 "
          f"{percentile(first, 50):.0f} ms, p95 {percentile(first, 95):.0f} ms; full reply p50 "
          f"{percentile(totals, 50):.0f} ms (n={len(first)})")
    print("\n| customer said | intent | suggestion (source) | grounded in: top agent's reply "
          "(agent, call, outcome) |\n|---|---|---|---|")
    for result in rows:
        a = result.assist
        s = result.suggestions[0] if result.suggestions else None
        e = a.exemplars[0] if a.exemplars else None
        ground = f"{e.reply} ({e.agent_id}, {e.call_id}, {e.outcome})" if e else "-"
        text = f"{s.text} ({s.source})" if s else "-"
        if result.withheld:
            text += f" [LLM text withheld: {result.withheld[0].rule}]"
        print(f"| {a.customer_text} | {a.intent.label} {a.intent.confidence:.2f} | {text} | "
              f"{ground} |")


async def main() -> None:
    from dialogue.defaults import default_facts, default_intent_model, default_playbook, policy_text
    from dialogue.llm import LLMSettings, make_client
    from dialogue.suggest import Suggester

    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--llm-url", help="an OpenAI-compatible server instead of the embedded")
    args = parser.parse_args()
    settings = LLMSettings(n_threads=args.threads, base_url=args.llm_url, temperature=0.0)
    print(f"machine: {machine()}; intents: default model (multilingual-e5-small q4); LLM: "
          f"{args.llm_url or 'embedded Qwen2.5-Coder-0.5B-Instruct Q4_K_M'}, "
          f"{args.threads} threads")
    model = default_intent_model()
    playbook = default_playbook(model)
    llm = await asyncio.to_thread(make_client, settings)
    suggester = Suggester(model, playbook, llm, policy_text(), facts=default_facts())
    instant_latency(suggester)
    scaled_retrieval(playbook)
    try:
        await llm_examples(suggester)
    finally:
        await llm.close()


if __name__ == "__main__":
    asyncio.run(main())
