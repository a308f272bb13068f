"""The playbook refresh on a real PostgreSQL: calls and agents' verdicts in the store make a new
version; a reply agents keep dismissing is demoted; a new top performer's replies come in;
versions roll back; a refresh that fails leaves the version in use."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from campaigns.db import DatabaseSettings, connect
from campaigns.models import Campaign
from campaigns.playbook_refresh import publish, read_history, refresh
from campaigns.store import Store
from core.events import (
    CallEnded,
    CallStarted,
    Citation,
    SuggestionFeedback,
    SuggestionShown,
    UtteranceSaid,
)
from dialogue.defaults import PLAYBOOK_CALLS
from dialogue.playbook import PlaybookError, read_calls
from dialogue.playbook_versions import PlaybookVersions

from .pg import PgServer

pytestmark = pytest.mark.asyncio(loop_scope="session")
FAST = DatabaseSettings(db_pool_min=1, db_pool_max=4, db_connect_timeout_s=3)
T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
NEW_STAR = "A99"
STAR_REPLY = "On the 6-month plan it's 0.6% a month on what you convert, nothing else."


@pytest.fixture
async def dsn(pg: PgServer):
    made = await pg.create_database("callwise_refresh")
    yield made
    await pg.drop_database(made)


@pytest.fixture
async def database(dsn: str):
    db = await connect(dsn, settings=FAST)
    await Store(db).upsert_campaign(Campaign(id="c1", name="refresh test", language="en"))
    yield db
    await db.close()


def _call(n: int, agent: str, said: list[tuple[str, str]], converted: bool,
          cards: list[tuple[SuggestionShown, str | None]] = ()) -> list:
    call_id = f"live-{agent}-{n}"
    at = T0 + timedelta(minutes=n)
    events: list = [CallStarted(call_id=call_id, at=at, campaign_id="c1", channel="human",
                                agent_id=agent)]
    for seq, (role, text) in enumerate(said):
        events.append(UtteranceSaid(call_id=call_id, at=at, seq=seq, role=role,
                                    start_s=seq * 3, end_s=seq * 3 + 2, text=text))
    for shown, verdict in cards:
        events.append(shown.model_copy(update={"call_id": call_id, "at": at}))
        if verdict:
            events.append(SuggestionFeedback(call_id=call_id, at=at,
                                             suggestion_id=shown.suggestion_id,
                                             feedback=verdict))
    events.append(CallEnded(call_id=call_id, at=at + timedelta(minutes=2),
                            disposition="converted" if converted else "declined"))
    return events


async def test_verdicts_and_new_top_agents_make_the_next_version(database, tmp_path,
                                                                 intent_model, playbook):
    store = Store(database)
    question = "what's the fee if I split it over 6 months?"
    shipped = [e for e in playbook.entries if e.language == "en"]
    bad = shipped[0]
    good = next(e for e in shipped if e.call_id != bad.call_id)

    def card(n: int, e) -> SuggestionShown:  # type: ignore[no-untyped-def]
        return SuggestionShown(call_id="x", suggestion_id=f"s-{n}-{e.call_id}-{e is bad}", seq=1,
                               source="exemplar", text=e.reply,
                               citations=[Citation(call_id=e.call_id, agent_id=e.agent_id,
                                                   outcome=e.outcome, context=e.context)])
    # agents dismiss one top agent's reply again and again and accept another
    for n in range(4):
        await store.ingest(_call(n, "A01", [("agent", "Hello, Harbor Bank."),
                                            ("customer", question)], False,
                                 [(card(n, bad), "dismissed"), (card(n, good), "accepted")]))
    # a new agent converts call after call with a clear answer
    for n in range(24):
        await store.ingest(_call(100 + n, NEW_STAR, [
            ("agent", "Hi, it's Harbor Bank; this call is recorded."), ("customer", question),
            ("agent", STAR_REPLY), ("customer", "great, let's do it")], converted=n % 5 != 0))

    history = await read_history(database.pool)
    assert history.verdicts[(bad.call_id, bad.context)] == (0, 4)
    assert history.verdicts[(good.call_id, good.context)] == (4, 0)
    assert history.cards == 8 and sum(c.agent_id == NEW_STAR for c in history.calls) == 24

    versions = PlaybookVersions(tmp_path / "playbooks")
    new, record = await refresh(database.pool, versions, read_calls(PLAYBOOK_CALLS),
                                intent_model, previous=playbook)
    assert versions.current() == record.version == "v0001" and record.parent is None
    assert record.store_calls == 28 and record.feedback_cards == 8
    assert NEW_STAR in record.changes.agents_in and NEW_STAR in record.changes.top_agents_after
    assert record.changes.added >= 1 and record.changes.exemplars_before == len(playbook.entries)
    assert any(d.call_id == bad.call_id and d.dismissed == 4 for d in record.changes.demoted)
    assert any(p.call_id == good.call_id for p in record.changes.promoted)
    # the new top agent's reply can be found; the demoted one ranks below the accepted one
    found = new.retrieve(question, None, "en")
    assert any(e.agent_id == NEW_STAR and e.reply == STAR_REPLY for e in found)
    mine = {e.call_id: e for e in new.retrieve(bad.context, None, "en")}
    if bad.call_id in mine:
        assert mine[bad.call_id].demoted
    assert versions.load().stats.pairs == len(new.entries)  # type: ignore[union-attr]

    # a second refresh is the next version; the first stays, and can be put back in use
    _, second = await asyncio_publish(history, versions)
    assert second.version == "v0002" and second.parent == "v0001"
    versions.point("v0001")
    assert versions.current() == "v0001" and [r.version for r in versions.history()] == [
        "v0001", "v0002"]
    with pytest.raises(PlaybookError, match="no playbook version 'v0009'"):
        versions.point("v0009")


async def asyncio_publish(history, versions):  # type: ignore[no-untyped-def]
    import asyncio

    return await asyncio.to_thread(publish, history, versions, read_calls(PLAYBOOK_CALLS), None)


async def test_a_failed_refresh_keeps_the_version_in_use(database, tmp_path, intent_model,
                                                         playbook):
    versions = PlaybookVersions(tmp_path / "playbooks")
    await refresh(database.pool, versions, read_calls(PLAYBOOK_CALLS), intent_model)
    assert versions.current() == "v0001"
    await database.close()  # the database goes away
    with pytest.raises(Exception):  # noqa: B017 - asyncpg's or the pool's own error
        await refresh(database.pool, versions, read_calls(PLAYBOOK_CALLS), intent_model)
    assert versions.current() == "v0001" and versions.versions() == ["v0001"]


async def test_the_command_line_refreshes_from_the_store_and_lists_the_versions(
        database, dsn, tmp_path):
    import asyncio
    import json
    import os
    import subprocess
    import sys

    await Store(database).ingest(_call(1, "A01", [("agent", "Hello, Harbor Bank."),
                                                  ("customer", "how much is the late fee?"),
                                                  ("agent", "It's 5% of the minimum.")], True))
    folder = tmp_path / "playbooks"
    env = {**os.environ, "DATABASE_URL": dsn}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "callwise", "playbook", *args,
                               "--versions", str(folder)], capture_output=True, text=True,
                              env=env, timeout=600)
    empty = await asyncio.to_thread(run, "versions")
    assert empty.returncode == 0 and "the shipped playbook" in empty.stdout
    done = await asyncio.to_thread(run, "refresh")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["version"] == "v0001" and record["store_calls"] == 1
    listed = await asyncio.to_thread(run, "versions")
    assert listed.stdout.startswith("* v0001") and "1 live" in listed.stdout
