"""The playbook: what top-performing agents said, indexed by the situation they said it in.

Built from historical calls (agent ids + outcomes): agents are ranked by the leaderboard rule,
the top performers' calls are cut into (customer context -> agent reply) pairs, every text is
redacted and checked by the guardrails (a blocked reply never enters the index), and contexts are
embedded with the multilingual encoder so a Mandarin question finds Mandarin replies first but
can fall back to English ones.

Retrieval is a matrix-vector product over L2-normalised vectors: at contact-center scale (tens of
thousands of pairs) that stays well under the 100 ms budget on a CPU, with no index to maintain.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from .encoders import get_encoder
from .guardrails import check
from .leaderboard import AgentStanding, LeaderboardRule, rank_agents
from .redaction import redact
from .types import CallRecord, Exemplar, IntentClassifier

FORMAT_VERSION = 2


class PlaybookError(ValueError):
    """A playbook folder or call file is missing or malformed."""


class PlaybookEntry(BaseModel):
    context: str
    reply: str
    intent: str | None = None
    call_id: str
    agent_id: str
    outcome: str
    language: str
    scenario: str = ""
    accepted: int = Field(0, description="agents' accepts of this reply as a card (refresh)")
    dismissed: int = Field(0, description="agents' dismissals of it")

    @property
    def key(self) -> tuple[str, str]:
        """What a shown card cites it by: its call and the customer's words it answered."""
        return self.call_id, self.context


class RetrievalConfig(BaseModel):
    k: int = 3
    intent_bonus: float = Field(0.08, description="added when the exemplar's intent matches")
    language_bonus: float = Field(0.05, description="added when the language matches")
    converted_bonus: float = Field(0.02, description="a reply from a call that converted")
    feedback_weight: float = Field(
        0.1, description="times (accepted - dismissed) / (accepted + dismissed + 2): agents' "
        "verdicts move a reply, a few of them only a little")


class BuildStats(BaseModel):
    calls: int
    top_agents: list[str]
    top_calls: int
    pairs: int
    blocked_replies: int = Field(description="top-agent replies the guardrails kept out")
    seconds: float


def read_calls(path: Path) -> list[CallRecord]:
    path = Path(path)
    if not path.exists():
        raise PlaybookError(f"{path}: no such file")
    calls = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                calls.append(CallRecord.model_validate_json(line))
            except ValueError as exc:
                raise PlaybookError(f"{path}:{n}: not a call record: {exc}") from exc
    if not calls:
        raise PlaybookError(f"{path}: no calls")
    return calls


def _clean(text: str) -> str:
    return redact(text).text.strip()


def pairs_from_call(call: CallRecord, context_turns: int = 2) -> Iterable[PlaybookEntry]:
    """Each agent turn that answers the customer, with the customer's last turns as context."""
    customer: list[str] = []
    answered = True
    for turn in call.turns:
        if turn.speaker == "customer":
            customer.append(turn.text)
            answered = False
            continue
        if answered or not customer:
            continue  # an agent monologue or the greeting: no situation to match
        answered = True
        yield PlaybookEntry(
            context=_clean(" / ".join(customer[-context_turns:])), reply=_clean(turn.text),
            call_id=call.call_id, agent_id=call.agent_id, outcome=call.outcome,
            language=call.language, scenario=call.scenario)


class Playbook:
    def __init__(self, entries: list[PlaybookEntry], vectors: np.ndarray, encoder: str,
                 standings: list[AgentStanding], rule: LeaderboardRule,
                 stats: BuildStats | None = None) -> None:
        if len(entries) != len(vectors):
            raise PlaybookError(f"{len(entries)} entries but {len(vectors)} vectors")
        self.entries = entries
        self.vectors = vectors.astype(np.float32)
        self.encoder = encoder
        self.standings = standings
        self.rule = rule
        self.stats = stats
        self._intents = np.array([e.intent or "" for e in entries])
        self._languages = np.array([e.language for e in entries])
        self._converted = np.array([e.outcome == "converted" for e in entries])
        self._verdict = np.array([(e.accepted - e.dismissed) / (e.accepted + e.dismissed + 2)
                                  for e in entries], dtype=np.float32)

    @classmethod
    def build(cls, calls: Sequence[CallRecord], rule: LeaderboardRule | None = None,
              classifier: IntentClassifier | None = None, encoder: str = "e5",
              context_turns: int = 2,
              feedback: Mapping[tuple[str, str], tuple[int, int]] | None = None) -> Playbook:
        """`feedback`: (accepted, dismissed) per exemplar key (call id, context), from the
        cards agents were shown."""
        started = time.perf_counter()
        rule = rule or LeaderboardRule()
        standings = rank_agents(calls, rule)
        top = {s.agent_id for s in standings if s.top}
        if not top:
            raise PlaybookError(f"no agent qualifies as a top performer: {rule.describe()} "
                                f"({len(calls)} calls)")
        top_calls = [c for c in calls if c.agent_id in top]
        entries: list[PlaybookEntry] = []
        blocked = 0
        for call in top_calls:
            for entry in pairs_from_call(call, context_turns):
                if check(entry.reply, "agent").blocked:
                    blocked += 1
                    continue
                if feedback and entry.key in feedback:
                    entry.accepted, entry.dismissed = feedback[entry.key]
                entries.append(entry)
        # The customer's last words are what an exemplar is found by (earlier turns are kept
        # for the agent to read: embedded together, a greeting turn outweighed the question).
        last = [e.context.rsplit(" / ", 1)[-1] for e in entries]
        if classifier is not None:
            predict_batch = getattr(classifier, "predict_batch", None)
            preds = (predict_batch(last) if predict_batch else
                     [classifier.predict(t) for t in last])
            for e, p in zip(entries, preds, strict=True):
                e.intent = p.label
        vectors = get_encoder(encoder).encode(last)
        stats = BuildStats(calls=len(calls), top_agents=sorted(top), top_calls=len(top_calls),
                           pairs=len(entries), blocked_replies=blocked,
                           seconds=round(time.perf_counter() - started, 2))
        return cls(entries, vectors, encoder, standings, rule, stats)

    def retrieve(self, context: str, intent: str | None = None, language: str | None = None,
                 config: RetrievalConfig | None = None) -> list[Exemplar]:
        """Top-k exemplars for what the customer just said, best first, one per distinct reply.
        `context` may hold earlier turns joined by " / "; the last one is matched."""
        config = config or RetrievalConfig()
        if not self.entries or not context.strip():
            return []
        query = get_encoder(self.encoder).encode([_clean(context.rsplit(" / ", 1)[-1])])[0]
        cosine = self.vectors @ query
        scores = cosine.copy()
        if intent:
            scores += config.intent_bonus * (self._intents == intent)
        if language:
            scores += config.language_bonus * (self._languages == language)
        scores += config.converted_bonus * self._converted
        if len(self._verdict):
            scores += config.feedback_weight * self._verdict
        out: list[Exemplar] = []
        seen: set[str] = set()
        candidates = np.argpartition(-scores, min(len(scores) - 1, config.k * 4))[:config.k * 4]
        for i in candidates[np.argsort(-scores[candidates])]:
            e = self.entries[int(i)]
            if e.reply in seen:
                continue
            seen.add(e.reply)
            out.append(Exemplar(context=e.context, reply=e.reply, intent=e.intent,
                                call_id=e.call_id, agent_id=e.agent_id, outcome=e.outcome,
                                language=e.language, score=round(float(cosine[i]), 4),
                                accepted=e.accepted, dismissed=e.dismissed))
            if len(out) == config.k:
                break
        return out

    # -- files ----------------------------------------------------------------------------------
    def save(self, folder: Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "vectors.npy", self.vectors)
        with (folder / "entries.jsonl").open("w", encoding="utf-8") as fh:
            for e in self.entries:
                fh.write(e.model_dump_json() + "\n")
        meta = {"format": FORMAT_VERSION, "encoder": self.encoder,
                "rule": self.rule.model_dump(), "rule_text": self.rule.describe(),
                "standings": [s.model_dump() for s in self.standings],
                "stats": self.stats.model_dump() if self.stats else None}
        (folder / "playbook.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2),
                                              encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: Path) -> Playbook:
        folder = Path(folder)
        meta_file = folder / "playbook.json"
        if not meta_file.exists():
            raise PlaybookError(f"{folder}: not a playbook (no playbook.json); build one with "
                                "`callwise playbook build`")
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT_VERSION:
            raise PlaybookError(f"{folder}: playbook format {meta.get('format')} is not "
                                f"{FORMAT_VERSION}; rebuild it")
        entries = [PlaybookEntry.model_validate_json(line) for line in
                   (folder / "entries.jsonl").read_text(encoding="utf-8").splitlines() if line]
        return cls(entries, np.load(folder / "vectors.npy"), meta["encoder"],
                   [AgentStanding.model_validate(s) for s in meta["standings"]],
                   LeaderboardRule.model_validate(meta["rule"]),
                   BuildStats.model_validate(meta["stats"]) if meta.get("stats") else None)
