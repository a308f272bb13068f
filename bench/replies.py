"""The card the agent sees first, scored on questions held out from the playbook corpus.

`fixtures/replies/heldout_*.jsonl` (written from the policy, never used to build or tune the
playbook, the fact book or the prompts) is scored by `dialogue.reply_eval`: right language, the
fact for the slot asked, no neighbouring plan's figure, no invented figure, no unfilled slot, not
an echo or meta text, no promise. Modes:

- `exemplar`: the cards the sidebar shows at once (no LLM): what `Suggester.instant_cards` gives.
- `llm`: `Suggester.suggest()` with the embedded model: its reply first when it passes the
  guardrails and the slot check, else the instant cards. First-token latency on a new call and
  on a later turn of the same call (a follow-up question), with the shared prefix warmed.

    python bench/replies.py [--modes exemplar,llm] [--model 0.5b|1.5b] [--limit N] [--failures]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from common import ROOT, machine, percentile

CASES = ROOT / "fixtures" / "replies"
FOLLOW_UP = {"en": "okay, and can I pay it off early?", "zh": "好的，那能提前还清吗？"}


def _suggester(llm=None, facts: bool = True):  # type: ignore[no-untyped-def]
    from dialogue.defaults import default_facts, default_intent_model, default_playbook, policy_text
    from dialogue.suggest import Suggester

    model = default_intent_model()
    return Suggester(model, default_playbook(model), llm, policy_text(),
                     facts=default_facts() if facts else None)


def exemplar_cards(suggester, cases) -> tuple[dict[str, list[str]], list[float]]:  # type: ignore[no-untyped-def]
    cards, ms = {}, []
    for case in cases:
        started = time.perf_counter()
        history = case.history()
        assist = suggester.instant(case.id, history, case.language)
        shown = suggester.instant_cards(assist, history)
        ms.append((time.perf_counter() - started) * 1000)
        cards[case.id] = [s.text for s in shown]
    return cards, ms


async def llm_cards(suggester, cases):  # type: ignore[no-untyped-def]
    from dialogue.types import Turn

    cards, first_new, first_later, shown = {}, [], [], 0
    for n, case in enumerate(cases):
        history = case.history()
        result = await suggester.suggest(f"bench-{n}", history, case.language)
        cards[case.id] = [s.text for s in result.suggestions]
        shown += any(s.source == "llm" for s in result.suggestions)
        if result.first_token_ms is not None:
            first_new.append(result.first_token_ms)
        if n % 6 == 0:  # a later turn of the same call: its prefix is in the cache
            reply = result.suggestions[0].text if result.suggestions else "Sure."
            later = [*history, Turn(speaker="agent", text=reply),
                     Turn(speaker="customer", text=FOLLOW_UP[case.language])]
            again = await suggester.suggest(f"bench-{n}", later, case.language)
            if again.first_token_ms is not None:
                first_later.append(again.first_token_ms)
    return cards, first_new, first_later, shown


def report(result, cases, show_failures: bool) -> None:  # type: ignore[no-untyped-def]
    print(f"  {result.mode:<28} first card right {result.first_right:6.1%}   top-3 "
          f"{result.top3_right:6.1%}   invented figure {result.invented_rate:5.1%}   " +
          "  ".join(f"{k} {v:.1%}" for k, v in result.by_language.items()))
    if show_failures:
        for case_id, card, problems in result.failures:
            print(f"      {case_id}: {'; '.join(problems)} | {card[:110]}")


async def main() -> None:
    from dialogue.llm import LLMSettings, make_client
    from dialogue.llm_models import model_by_name
    from dialogue.reply_eval import read_cases, score
    from dialogue.suggest import _figures

    parser = argparse.ArgumentParser()
    parser.add_argument("--modes", default="before,exemplar,llm")
    parser.add_argument("--model", default="0.5b", choices=["0.5b", "1.5b"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="every n-th case only (LLM runs)")
    parser.add_argument("--failures", action="store_true")
    args = parser.parse_args()
    cases = read_cases(CASES)
    langs = {c.language for c in cases}
    print(f"machine: {machine()}; held-out reply set: {len(cases)} cases "
          f"({', '.join(f'{sum(c.language == x for c in cases)} {x}' for x in sorted(langs))}); "
          "intents + playbook: multilingual-e5-small q4")
    suggester = _suggester()
    figures = _figures(suggester.policy)
    modes = args.modes.split(",")
    if "before" in modes:  # retrieval order, no fact book: the cards as they were
        cards, _ = exemplar_cards(_suggester(facts=False), cases)
        report(score("exemplars, retrieval order", cases, cards, figures), cases, args.failures)
    if "exemplar" in modes:
        cards, ms = exemplar_cards(suggester, cases)
        report(score("exemplar-only (instant)", cases, cards, figures), cases, args.failures)
        print(f"  {'':<28} instant cards p50 {percentile(ms, 50):.0f} ms, p95 "
              f"{percentile(ms, 95):.0f} ms")
    if "llm" in modes:
        chosen = cases[::args.limit] if args.limit else cases
        spec = model_by_name(args.model)
        settings = LLMSettings(n_threads=args.threads, temperature=0.0,  # type: ignore[call-arg]
                               packaged=args.model)
        llm = await asyncio.to_thread(make_client, settings)
        suggester.llm = llm
        try:
            started = time.perf_counter()
            await suggester.warm_up()
            warm_s = time.perf_counter() - started
            cards, new, later, shown = await llm_cards(suggester, chosen)
        finally:
            await llm.close()
        name = f"LLM {spec.description.split(',')[0]}"
        report(score(name, chosen, cards, figures), chosen, args.failures)
        print(f"  {'':<28} LLM reply shown on {shown}/{len(chosen)}; warm-up {warm_s:.1f} s; "
              f"first token on a new call p50 {percentile(new, 50):.0f} ms, p95 "
              f"{percentile(new, 95):.0f} ms (n={len(new)}); on a later turn p50 "
              f"{percentile(later, 50):.0f} ms, p95 {percentile(later, 95):.0f} ms "
              f"(n={len(later)})")


if __name__ == "__main__":
    asyncio.run(main())
