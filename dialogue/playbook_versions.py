"""Versioned playbooks: every refresh writes a new folder and never touches the one in use.

    <root>/v0001/  a playbook folder (`Playbook.save`) plus refresh.json: when it was built,
                   from what, and what changed against its parent
    <root>/v0002/  ...
    <root>/CURRENT the version in use; writing an older name there rolls back

A quality lead reads `history()` to see what each refresh did: which agents became or stopped
being top performers, how many replies were added and dropped, which replies agents kept
dismissing (demoted), and any figures measured on it (the held-out reply score).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field

from .playbook import Playbook, PlaybookError
from .types import is_demoted

_VERSION = re.compile(r"^v(\d{4,})$")


class ReplyChange(BaseModel):
    call_id: str
    agent_id: str
    context: str
    reply: str
    accepted: int = 0
    dismissed: int = 0


class Changes(BaseModel):
    top_agents_before: list[str] = Field(default_factory=list)
    top_agents_after: list[str]
    agents_in: list[str] = Field(default_factory=list, description="new top performers")
    agents_out: list[str] = Field(default_factory=list, description="no longer top")
    exemplars_before: int = 0
    exemplars_after: int
    added: int = Field(description="replies in this version and not in its parent")
    removed: int
    demoted_total: int = Field(0, description="replies agents keep dismissing, all of them")
    demoted: list[ReplyChange] = Field(default_factory=list,
                                       description="the most dismissed of them")
    promoted: list[ReplyChange] = Field(default_factory=list,
                                        description="replies agents accept most")


class RefreshRecord(BaseModel):
    version: str
    parent: str | None
    created_at: datetime
    calls: int = Field(description="calls the playbook was mined from")
    store_calls: int = Field(0, description="of which from the store (live calls)")
    feedback_cards: int = Field(0, description="exemplar cards with an agent's verdict")
    changes: Changes
    figures: dict[str, float] = Field(default_factory=dict)


def diff(old: Playbook | None, new: Playbook, keep: int = 10) -> Changes:
    before = {(e.call_id, e.reply) for e in old.entries} if old else set()
    after = {(e.call_id, e.reply) for e in new.entries}
    top_before = sorted(s.agent_id for s in old.standings if s.top) if old else []
    top_after = sorted(s.agent_id for s in new.standings if s.top)
    judged = [e for e in new.entries if e.accepted or e.dismissed]

    def change(e):  # type: ignore[no-untyped-def]
        return ReplyChange(call_id=e.call_id, agent_id=e.agent_id, context=e.context,
                           reply=e.reply, accepted=e.accepted, dismissed=e.dismissed)
    demoted = sorted((e for e in judged if is_demoted(e.accepted, e.dismissed)),
                     key=lambda e: e.accepted - e.dismissed)
    promoted = sorted((e for e in judged if e.accepted > e.dismissed),
                      key=lambda e: e.dismissed - e.accepted)
    return Changes(top_agents_before=top_before, top_agents_after=top_after,
                   agents_in=sorted(set(top_after) - set(top_before)),
                   agents_out=sorted(set(top_before) - set(top_after)),
                   exemplars_before=len(before), exemplars_after=len(after),
                   added=len(after - before), removed=len(before - after),
                   demoted_total=len(demoted), demoted=[change(e) for e in demoted[:keep]],
                   promoted=[change(e) for e in promoted[:keep]])


class PlaybookVersions:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted((p.name for p in self.root.iterdir()
                       if _VERSION.match(p.name) and (p / "refresh.json").exists()),
                      key=lambda name: int(name[1:]))

    def current(self) -> str | None:
        pointer = self.root / "CURRENT"
        if not pointer.exists():
            return None
        name = pointer.read_text(encoding="utf-8").strip()
        if name not in self.versions():
            raise PlaybookError(f"{pointer} names {name!r}, which is not a playbook version "
                                f"here ({', '.join(self.versions()) or 'none'})")
        return name

    def load(self, version: str | None = None) -> Playbook | None:
        name = version or self.current()
        return Playbook.load(self.root / name) if name else None

    def record(self, version: str) -> RefreshRecord:
        return RefreshRecord.model_validate_json(
            (self.root / version / "refresh.json").read_text(encoding="utf-8"))

    def history(self) -> list[RefreshRecord]:
        return [self.record(v) for v in self.versions()]

    def publish(self, playbook: Playbook, *, calls: int, store_calls: int = 0,
                feedback_cards: int = 0, previous: Playbook | None = None) -> RefreshRecord:
        """Writes the next version beside the others, then points CURRENT at it: a crash
        half-way leaves the version in use untouched. Changes are counted against the
        version in use, or `previous` (the shipped playbook) when none is."""
        self.root.mkdir(parents=True, exist_ok=True)
        parent = self.current()
        known = self.versions()
        name = f"v{(int(known[-1][1:]) + 1) if known else 1:04d}"
        record = RefreshRecord(version=name, parent=parent, created_at=datetime.now(UTC),
                               calls=calls, store_calls=store_calls,
                               feedback_cards=feedback_cards,
                               changes=diff(self.load(parent) or previous, playbook))
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=self.root))
        try:
            playbook.save(tmp)
            (tmp / "refresh.json").write_text(record.model_dump_json(indent=2), encoding="utf-8")
            tmp.rename(self.root / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.point(name)
        return record

    def annotate(self, record: RefreshRecord) -> None:
        """Adds figures measured on a published version (its held-out reply score)."""
        (self.root / record.version / "refresh.json").write_text(
            record.model_dump_json(indent=2), encoding="utf-8")

    def point(self, version: str) -> None:
        """Makes `version` the one in use (a rollback is pointing at an older one)."""
        if version not in self.versions():
            raise PlaybookError(f"no playbook version {version!r} in {self.root}")
        pointer = self.root / "CURRENT"
        tmp = pointer.with_suffix(".tmp")
        tmp.write_text(version + "\n", encoding="utf-8")
        os.replace(tmp, pointer)
