"""LocalAgreement-2: a partial word is stable once two consecutive hypotheses agree on it."""

from __future__ import annotations

import re

from .events import Word

_PUNCT = re.compile(r"[^\w]+", re.UNICODE)


def _key(word: Word) -> str:
    return _PUNCT.sub("", word.text).lower()


class LocalAgreement:
    def __init__(self) -> None:
        self.committed: list[Word] = []
        self._previous: list[Word] = []

    def update(self, hypothesis: list[Word]) -> tuple[list[Word], list[Word]]:
        """Feed the newest hypothesis of the whole utterance; returns (stable, tentative).

        Stable words only ever grow: once committed, a word is shown as stable until the final.
        """
        n = len(self.committed)
        new, old = hypothesis[n:], self._previous[n:]
        agreed = 0
        for a, b in zip(new, old, strict=False):
            if _key(a) != _key(b):
                break
            agreed += 1
        self.committed.extend(new[:agreed])
        self._previous = hypothesis
        return list(self.committed), new[agreed:]
