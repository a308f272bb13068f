"""The loop that makes the playbook better with use: the store's calls and the agents' verdicts
on the cards they were shown feed a new playbook version.

One refresh:
1. reads every ended human-agent call from the store (redacted transcript, agent, how it ended)
   and adds it to the historical corpus the product shipped with;
2. re-ranks the agents on all of it (the leaderboard rule), so a new top performer's replies
   come in and a fallen one's go;
3. counts, per exemplar, how often agents accepted or dismissed it as a card (the card's
   citation names the exemplar: its call and the customer's words it answered);
4. builds the playbook from the top agents' calls with those counts (retrieval moves a reply by
   its verdicts; one dismissed again and again is demoted below the ones agents take) and
   publishes it as the next version (`dialogue.playbook_versions`), with what changed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

import asyncpg
from pydantic import BaseModel

from dialogue.leaderboard import LeaderboardRule
from dialogue.playbook import Playbook
from dialogue.playbook_versions import PlaybookVersions, RefreshRecord
from dialogue.suggest import detect_language
from dialogue.types import CallRecord, IntentClassifier, Turn

log = logging.getLogger(__name__)

# A call counts as engaged when the customer kept talking (the analytics' default threshold).
ENGAGED_TURNS = 3

_CALLS = """
SELECT c.id, c.agent_id, c.campaign_id, c.disposition,
       coalesce(o.converted, false) AS converted, coalesce(o.customer_turns, 0) AS turns
FROM calls c LEFT JOIN outcomes o ON o.call_id = c.id
WHERE c.channel = 'human' AND c.ended_at IS NOT NULL
ORDER BY c.started_at
"""
_TURNS = """
SELECT call_id, role, text_redacted FROM utterances
WHERE call_id = ANY($1::text[]) AND role IN ('agent', 'customer') AND text_redacted <> ''
ORDER BY call_id, seq
"""
# Each exemplar card with the agent's verdict, and the exemplar it cited (from the event log,
# which keeps the card as shown).
_VERDICTS = """
SELECT s.feedback, e.payload->'citations' AS citations
FROM suggestions s
JOIN events e ON e.type = 'suggestion_shown' AND e.payload->>'suggestion_id' = s.id
WHERE s.source = 'exemplar' AND s.feedback IS NOT NULL
"""


class StoreHistory(BaseModel):
    calls: list[CallRecord]
    verdicts: dict[tuple[str, str], tuple[int, int]]
    cards: int


def _outcome(converted: bool, disposition: str | None, turns: int) -> str:
    if converted or disposition == "converted":
        return "converted"
    return "engaged" if turns >= ENGAGED_TURNS else "not_converted"


async def read_history(pool: asyncpg.Pool) -> StoreHistory:
    async with pool.acquire() as conn:
        rows = await conn.fetch(_CALLS)
        turns = await conn.fetch(_TURNS, [r["id"] for r in rows])
        verdict_rows = await conn.fetch(_VERDICTS)
    by_call: dict[str, list[Turn]] = {}
    for t in turns:
        by_call.setdefault(t["call_id"], []).append(
            Turn(speaker="agent" if t["role"] == "agent" else "customer", text=t["text_redacted"]))
    calls = []
    for r in rows:
        said = by_call.get(r["id"], [])
        if not said:
            continue
        calls.append(CallRecord(
            call_id=r["id"], agent_id=r["agent_id"], scenario=r["campaign_id"],
            language=detect_language(" ".join(t.text for t in said)),
            outcome=_outcome(r["converted"], r["disposition"], r["turns"]),  # type: ignore[arg-type]
            turns=said))
    counts: Counter[tuple[tuple[str, str], str]] = Counter()
    cards = 0
    for v in verdict_rows:
        citations = v["citations"]
        citations = json.loads(citations) if isinstance(citations, str) else citations
        if not citations:
            continue
        cards += 1
        first = citations[0]
        counts[((first["call_id"], first.get("context", "")), v["feedback"])] += 1
    keys = {key for key, _ in counts}
    verdicts = {key: (counts[(key, "accepted")], counts[(key, "dismissed")]) for key in keys}
    return StoreHistory(calls=calls, verdicts=verdicts, cards=cards)


async def refresh(pool: asyncpg.Pool, versions: PlaybookVersions, base_calls: Sequence[CallRecord],
                  classifier: IntentClassifier | None, rule: LeaderboardRule | None = None,
                  previous: Playbook | None = None) -> tuple[Playbook, RefreshRecord]:
    """Builds and publishes the next playbook version from the corpus plus the store. The
    build (embedding every reply) runs on a worker thread: a live call's audio keeps flowing."""
    history = await read_history(pool)
    return await asyncio.to_thread(publish, history, versions, base_calls, classifier, rule,
                                   previous=previous)


def publish(history: StoreHistory, versions: PlaybookVersions, base_calls: Sequence[CallRecord],
            classifier: IntentClassifier | None, rule: LeaderboardRule | None = None,
            previous: Playbook | None = None) -> tuple[Playbook, RefreshRecord]:
    known = {c.call_id for c in base_calls}
    live = [c for c in history.calls if c.call_id not in known]
    calls = [*base_calls, *live]
    playbook = Playbook.build(calls, rule, classifier, feedback=history.verdicts)
    matched = sum(1 for e in playbook.entries if e.key in history.verdicts)
    record = versions.publish(playbook, calls=len(calls), store_calls=len(live),
                              feedback_cards=history.cards, previous=previous)
    log.info("playbook %s: %d calls (%d from the store), %d exemplars (%d with agents' "
             "verdicts), %d demoted", record.version, len(calls), len(live),
             len(playbook.entries), matched, record.changes.demoted_total)
    return playbook, record


class _UsesPlaybook(Protocol):
    classifier: IntentClassifier
    playbook: Playbook


async def refresh_every(period_s: float, pool: asyncpg.Pool, versions: PlaybookVersions,
                        base_calls: Sequence[CallRecord], user: _UsesPlaybook) -> None:
    """`serve`'s schedule: a refresh every period, the new version swapped in for the next
    customer turn (calls in progress keep their cards); a failed refresh keeps the current."""
    while True:
        await asyncio.sleep(period_s)
        try:
            playbook, record = await refresh(pool, versions, base_calls, user.classifier,
                                             previous=user.playbook)
        except Exception as exc:  # the database is away, a folder is not writable
            log.warning("playbook refresh failed; %s stays in use: %s",
                        versions.current() or "the shipped playbook", exc)
            continue
        user.playbook = playbook
        log.warning("playbook %s in use: %d demoted, %d replies added, %d removed",
                    record.version, record.changes.demoted_total, record.changes.added,
                    record.changes.removed)
