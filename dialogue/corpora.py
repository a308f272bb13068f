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
