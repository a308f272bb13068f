"""Readers that turn public dialogue datasets into `CallRecord`s the playbook can mine.

PersuasionForGood (Wang et al., ACL 2019): 1,017 chats in which a persuader asks a persuadee to
donate to Save the Children; the persuadee's real donation afterwards is recorded. Persuaders are
the "agents" (many did several chats), a donation above zero is a conversion. It is the closest
public stand-in for sales calls with real outcomes.
"""

from __future__ import annotations

import csv
from pathlib import Path

from .types import CallRecord, Turn


class CorpusError(ValueError):
    """A dataset folder is missing files or has unexpected columns."""


def load_persuasionforgood(folder: Path) -> list[CallRecord]:
    folder = Path(folder)
    dialog_file, info_file = folder / "FullData_full_dialog.csv", folder / "FullData_full_info.csv"
    for f in (dialog_file, info_file):
        if not f.exists():
            raise CorpusError(f"{f}: missing (PersuasionForGood FullData)")
    persuader: dict[str, str] = {}
    donation: dict[str, float] = {}
    with info_file.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["B4"] == "0":
                persuader[row["B2"]] = row["B3"]
            else:
                donation[row["B2"]] = float(row["B6"] or 0.0)
    turns: dict[str, list[Turn]] = {}
    with dialog_file.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            speaker = "agent" if row["B4"] == "0" else "customer"
            dialog = turns.setdefault(row["B2"], [])
            text = (row["Unit"] or "").strip()
            if not text:
                continue
            # The CSV has one row per sentence; a speaker's consecutive sentences are one turn.
            if dialog and dialog[-1].speaker == speaker:
                dialog[-1].text += " " + text
            else:
                dialog.append(Turn(speaker=speaker, text=text))
    calls = []
    for dialog_id, dialog in turns.items():
        if dialog_id not in persuader or dialog_id not in donation:
            continue
        calls.append(CallRecord(
            call_id=dialog_id, agent_id=persuader[dialog_id], language="en",
            scenario="donation_ask",
            outcome="converted" if donation[dialog_id] > 0 else "not_converted", turns=dialog))
    if not calls:
        raise CorpusError(f"{folder}: no dialogues with both a persuader and an outcome")
    return calls


def load_rasa_nlu(folder: Path) -> tuple[list[str], list[str]]:
    """(texts, intents) from Rasa 1.x markdown NLU files (`## intent:x` then `- example`).

    Files of one project often repeat examples (zh_collection_rasa: 251 lines, 121 distinct
    texts); a repeat would sit in both the train and test folds of a cross-validation, so each
    text is kept once, and a text filed under two intents is dropped as ambiguous."""
    seen: dict[str, set[str]] = {}
    files = sorted(Path(folder).glob("nlu*.md"))
    if not files:
        raise CorpusError(f"{folder}: no Rasa NLU markdown files (nlu*.md)")
    for md in files:
        intent = None
        for line in md.read_text(encoding="utf-8").splitlines():
            if line.startswith("## "):
                intent = line[len("## intent:"):].strip() if line.startswith("## intent:") else None
            elif line.startswith("- ") and intent:
                seen.setdefault(line[2:].strip(), set()).add(intent)
    pairs = [(text, intents.pop()) for text, intents in seen.items() if len(intents) == 1]
    return [t for t, _ in pairs], [lab for _, lab in pairs]
