"""The playbook refresh over simulated campaign days, on a real PostgreSQL (embedded, in a
temporary data dir): does the loop make the cards better with use?

Each day, agents take calls whose customers ask the questions of `fixtures/replies/traffic/`
(labelled like the held-out set, written apart from it). The sidebar's instant cards come from
the playbook in use; the simulated agent accepts the first card that is right by the reply
scorer and dismisses a wrong first card, says the card it accepted (the day's new star agent,
who joins with no history, says the policy's answer when no card is right), and the call
converts with the agent's historical rate, plus 10 points when a right card was accepted (a
modelling assumption, stated so). Everything goes into the store as the live runtime writes it
(call, utterances, cards with citations, feedback, disposition). At the end of each day
`campaigns.playbook_refresh` publishes a new version. Printed per day: the acceptance of first
cards, and the held-out set's first-card score on the version in use (with and without the fact
book, so the loop's own effect shows).

    python bench/refresh.py [--days 5] [--calls 60] [--seed 7]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
from pathlib import Path

from common import ROOT, machine

STAR = "A15"


def data_dir() -> Path:
    """A fresh embedded server and playbook folder: nothing of the user's is touched."""
    tmp = Path(tempfile.mkdtemp(prefix="callwise-refresh-"))
    tmp.chmod(0o755)  # the embedded server runs as its own OS user when we are root
    os.environ["CALLWISE_DATA_DIR"] = str(tmp)
    return tmp


async def main(tmp: Path) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--calls", type=int, default=60, help="calls a day")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-facts", action="store_true",
                        help="the sidebar without the fact book: the loop's effect alone")
    args = parser.parse_args()

    from campaigns.db import connect
    from campaigns.models import Campaign
    from campaigns.playbook_refresh import publish, read_history
    from campaigns.store import Store
    from dialogue.defaults import (
        PLAYBOOK_CALLS,
        default_facts,
        default_intent_model,
        default_playbook,
        policy_text,
    )
    from dialogue.playbook import read_calls
    from dialogue.playbook_versions import PlaybookVersions
    from dialogue.reply_eval import judge, read_cases, score_instant
    from dialogue.suggest import Suggester, _figures

    rng = random.Random(args.seed)
    classifier = default_intent_model()
    facts = default_facts()
    playbook = default_playbook(classifier)
    base_calls = read_calls(PLAYBOOK_CALLS)
    figures = _figures(policy_text())
    traffic = read_cases(ROOT / "fixtures" / "replies" / "traffic")
    heldout = read_cases(ROOT / "fixtures" / "replies")
    rates = {s.agent_id: s.rate for s in playbook.standings}
    rates[STAR] = 0.55
    agents = [*rates]
    versions = PlaybookVersions(tmp / "playbooks")
    print(f"machine: {machine()}; {args.days} days x {args.calls} calls, {len(agents)} agents "
          f"(new: {STAR}); traffic {len(traffic)} questions, held-out {len(heldout)}; "
          "PostgreSQL embedded; e5-small intents + playbook")

    def first_right(cases, with_facts: bool) -> float:  # type: ignore[no-untyped-def]
        suggester = Suggester(classifier, playbook, None, policy_text(),
                              facts=facts if with_facts else None)
        return score_instant("day", suggester, cases).first_right

    async with await connect() as db:
        store = Store(db)
        await store.upsert_campaign(Campaign(id="sim", name="simulated campaign days",
                                             language="zh"))
        sidebar_facts = not args.no_facts
        print(f"sidebar: {'with' if sidebar_facts else 'without'} the fact book. Columns: the "
              "day's first cards accepted (sampled calls); all traffic questions' first card "
              "right (the day's acceptance without sampling noise); the held-out set's first "
              "card right, with and without the fact book, on the version in use")
        print(f"{'day':>3} {'version':>8} {'accepted':>9} {'traffic':>8} "
              f"{'held-out (facts)':>17} {'held-out (no facts)':>20}")
        for day in range(args.days + 1):
            with_facts, without = first_right(heldout, True), first_right(heldout, False)
            on_traffic = first_right(traffic, sidebar_facts)
            if day == args.days:
                print(f"{'end':>3} {versions.current() or 'shipped':>8} {'':>9} "
                      f"{on_traffic:>8.1%} {with_facts:>17.1%} {without:>20.1%}")
                break
            accepted, _ = await _day(day, args.calls, rng, agents, rates, traffic, figures,
                                     Suggester(classifier, playbook, None, policy_text(),
                                               facts=facts if sidebar_facts else None),
                                     store, judge)
            print(f"{day + 1:>3} {versions.current() or 'shipped':>8} "
                  f"{accepted / args.calls:>9.1%} {on_traffic:>8.1%} "
                  f"{with_facts:>17.1%} {without:>20.1%}")
            history = await read_history(db.pool)
            playbook, record = await asyncio.to_thread(publish, history, versions, base_calls,
                                                       classifier, previous=playbook)
            c = record.changes
            print(f"      refresh -> {record.version}: {record.store_calls} live calls, "
                  f"{record.feedback_cards} judged cards; top agents {','.join(c.top_agents_after)}"
                  f" (in {c.agents_in or '-'}, out {c.agents_out or '-'}); replies +{c.added} "
                  f"-{c.removed}; demoted {c.demoted_total}"
                  + (f" (e.g. {c.demoted[0].reply[:60]!r}, {c.demoted[0].dismissed} dismissed)"
                     if c.demoted else ""))


async def _day(day, calls, rng, agents, rates, traffic, figures, suggester, store, judge):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime, timedelta

    from core.events import (
        CallEnded,
        CallStarted,
        Citation,
        SuggestionFeedback,
        SuggestionShown,
        UtteranceSaid,
    )

    accepted_first = right_any = 0
    start = datetime(2026, 11, 2, 9, tzinfo=UTC) + timedelta(days=day)
    for n in range(calls):
        case = rng.choice(traffic)
        agent = rng.choice(agents)
        call_id = f"sim-d{day}-{n:03d}"
        at = start + timedelta(minutes=5 * n)
        history = case.history()
        assist = suggester.instant(call_id, history, case.language)
        cards = suggester.exemplar_suggestions(assist, history)[:3]
        events: list = [
            CallStarted(call_id=call_id, at=at, campaign_id="sim", channel="human",
                        agent_id=agent),
            UtteranceSaid(call_id=call_id, at=at, seq=0, role="agent", start_s=0, end_s=3,
                          text=history[0].text, language=case.language),
            UtteranceSaid(call_id=call_id, at=at, seq=1, role="customer", start_s=3, end_s=6,
                          text=case.said[-1], language=case.language)]
        verdicts = [judge(card.text, case, figures).ok for card, _ in cards]
        pick = next((i for i, ok in enumerate(verdicts) if ok), None)
        for rank, (card, exemplar) in enumerate(cards):
            sid = f"{call_id}-s{rank}"
            cite = ([Citation(call_id=exemplar.call_id, agent_id=exemplar.agent_id,
                              outcome=exemplar.outcome, context=exemplar.context)]
                    if exemplar is not None else [])
            events.append(SuggestionShown(call_id=call_id, at=at, suggestion_id=sid, seq=1,
                                          rank=rank, source=card.source, text=card.text,
                                          citations=cite))
            if rank == pick or (rank == 0 and pick != 0):
                events.append(SuggestionFeedback(
                    call_id=call_id, at=at, suggestion_id=sid,
                    feedback="accepted" if rank == pick else "dismissed"))
        accepted_first += pick == 0
        right_any += pick is not None
        said = (cards[pick][0].text if pick is not None
                else assist.asked.statement if agent == STAR and assist.asked
                else cards[0][0].text if cards else "")
        if said:
            events.append(UtteranceSaid(call_id=call_id, at=at, seq=2, role="agent", start_s=6,
                                        end_s=10, text=said, language=case.language))
        converted = rng.random() < rates[agent] + (0.1 if pick is not None else 0.0)
        events.append(CallEnded(call_id=call_id, at=at + timedelta(minutes=3),
                                disposition="converted" if converted else "declined"))
        await store.ingest(events)
    return accepted_first, right_any


if __name__ == "__main__":
    asyncio.run(main(data_dir()))
