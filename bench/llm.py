"""The embedded LLM on agent-assist prompts: load time, prompt and decode speed, time to first
token, and what reusing a call's cache saves on its second turn.

    python bench/llm.py [--threads 2] [--max-tokens 24] [--model-path FILE.gguf]

Every prompt is grounded the way agent assist grounds it: a policy excerpt and three exemplar
exchanges of top agents (about 400 tokens), then the customer's words. "Cold" clears the KV
cache before each prompt; "shared prefix" leaves it, as in production, where every call opens
with the same system prompt. The second-turn figures compare a session's turn 2 (only the new
tokens evaluated) with the same prompt from an empty cache.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from common import machine, percentile

from dialogue.llm import ChatMessage, GenerationStats, LLMSettings, LocalGGUFClient
from dialogue.llm_models import resolve_model_path

SYSTEM = """You are the agent-assist model of Northbank's contact center. Suggest the agent's
next sentence, in the customer's language, in one or two short sentences. Use only the policy
and the exemplars below. If they do not cover the question, suggest that the agent checks and
calls back. Never promise a refund, a fee waiver, a credit limit or an approval.

Policy excerpts:
- Identity: before discussing an account, verify the date of birth and the last four digits of
  the card. Never ask for the full card number, the PIN or a one-time passcode.
- Lost or stolen card: block the card at once, then offer a replacement: 5 to 7 business days
  by post, free; or express delivery in 2 business days for a $15 fee.
- Disputed card payment: open a dispute; the customer gets a reference number; a provisional
  credit may be applied within 10 business days while the merchant is contacted.
- Late payment fee: one goodwill waiver per 12 months is possible if the account is in good
  standing; the agent must check eligibility in the fee tool before saying anything.
- Hardship: offer the hardship team callback; do not discuss payment plans on this line.

Exemplars of top agents:
Customer: Someone used my card in another city, I never made those payments.
Agent: I'm sorry, let's secure your account first. I'm blocking the card now, and then we'll
open a dispute for each payment you don't recognise.
Customer: Can you just take the late fee off? I always pay on time.
Agent: I understand. Let me check your account in our fee tool first; if you're eligible for a
goodwill waiver I'll apply it while we're on the line.
Customer: I lost my wallet this morning.
Agent: Let's block your card right away. Would you like the free replacement in 5 to 7 business
days, or express delivery in 2 days for a $15 fee?"""

CUSTOMER = [
    "Hi, I think I left my debit card at a restaurant last night.",
    "There's a charge of 89 dollars from a shop I've never heard of.",
    "Why was I charged a late fee? The payment was only one day late.",
    "I lost my job and I can't make this month's payment.",
    "My card was stolen on the train, can I get a new one quickly?",
    "A hotel charged me twice for the same night.",
    "Can you raise my credit limit to ten thousand?",
    "I want to dispute a subscription I cancelled in March.",
    "我的信用卡丢了，怎么办？",
    "Can you waive the late fee this time? It's the first time it happened.",
]
FOLLOW_UP = "Yes, please go ahead. How long will it take?"


def grounded(customer: str) -> list[ChatMessage]:
    return [
        ChatMessage(role="system", content=SYSTEM),
        ChatMessage(role="user", content=customer),
    ]


async def run(
    client: LocalGGUFClient, messages: list[ChatMessage], max_tokens: int, session: str | None
) -> tuple[str, GenerationStats]:
    reply = await client.complete(messages, session=session, max_tokens=max_tokens)
    assert client.last_stats is not None
    return reply, client.last_stats


async def first_turns(
    client: LocalGGUFClient, max_tokens: int, cold: bool
) -> list[GenerationStats]:
    stats = []
    for customer in CUSTOMER:
        if cold:
            await client.reset_cache()
        stats.append((await run(client, grounded(customer), max_tokens, None))[1])
    return stats


async def second_turns(
    client: LocalGGUFClient, max_tokens: int, calls: int
) -> tuple[list[GenerationStats], list[GenerationStats]]:
    reused, fresh = [], []
    for i, customer in enumerate(CUSTOMER[:calls]):
        await client.reset_cache()
        messages = grounded(customer)
        reply, _ = await run(client, messages, max_tokens, f"call-{i}")
        messages += [
            ChatMessage(role="assistant", content=reply),
            ChatMessage(role="user", content=FOLLOW_UP),
        ]
        reused.append((await run(client, messages, max_tokens, f"call-{i}"))[1])
        await client.reset_cache()
        fresh.append((await run(client, messages, max_tokens, None))[1])
    return reused, fresh


def ttft(stats: list[GenerationStats]) -> list[float]:
    return [s.first_token_s for s in stats if s.first_token_s is not None]


def report_first_turns(label: str, stats: list[GenerationStats]) -> None:
    times = ttft(stats)
    prompt = [s.prompt_tokens for s in stats]
    evaluated = sum(s.evaluated_tokens for s in stats)
    print(
        f"{label}: {len(stats)} prompts of {min(prompt)}-{max(prompt)} tokens, "
        f"{evaluated / len(stats):.0f} evaluated each; time to first token "
        f"p50 {percentile(times, 50):.2f} s, p95 {percentile(times, 95):.2f} s"
    )


def report_second_turns(label: str, stats: list[GenerationStats]) -> None:
    prompt = statistics.median(s.prompt_tokens for s in stats)
    evaluated = statistics.median(s.evaluated_tokens for s in stats)
    print(
        f"second turn {label}: prompt {prompt:.0f} tokens, {evaluated:.0f} evaluated; time to "
        f"first token median {statistics.median(ttft(stats)):.2f} s (over {len(stats)} calls)"
    )


async def main(args: argparse.Namespace) -> None:
    path = resolve_model_path(args.model_path)
    load_avg = os.getloadavg()
    print(f"machine: {machine()}")
    print(
        f"threads: {args.threads} (n_threads and n_threads_batch); load average before start "
        f"{load_avg[0]:.2f} (other work on these cores slows llama.cpp badly)"
    )
    print(f"model: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    client = await asyncio.to_thread(
        LocalGGUFClient, path, n_ctx=4096, n_threads=args.threads, temperature=0.0
    )
    print(f"load: {client.load_s:.2f} s (use_mmap=False)")
    try:
        await run(client, grounded("Hello"), 4, None)  # first decode allocates buffers
        cold = await first_turns(client, args.max_tokens, cold=True)
        prefill_rate = sum(s.evaluated_tokens for s in cold) / sum(s.prefill_s for s in cold)
        decode_rate = sum(s.generated_tokens for s in cold) / sum(s.decode_s for s in cold)
        print(f"prompt: {prefill_rate:.1f} tokens/s; decode: {decode_rate:.1f} tokens/s")
        report_first_turns("cold cache", cold)
        report_first_turns(
            "shared system prompt", await first_turns(client, args.max_tokens, False)
        )

        reused, fresh = await second_turns(client, args.max_tokens, args.calls)
        report_second_turns("with session reuse", reused)
        report_second_turns("without (empty cache)", fresh)
    finally:
        await client.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=LLMSettings().n_threads)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--calls", type=int, default=3, help="calls for the second-turn figures")
    parser.add_argument("--model-path", default=None, help="GGUF file; default: packaged model")
    return parser.parse_args()


if __name__ == "__main__":
    started = time.time()
    asyncio.run(main(parse_args()))
    print(f"bench time {time.time() - started:.0f} s")
