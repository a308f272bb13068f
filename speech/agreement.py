"""Which words of a growing utterance are final: LocalAgreement-2 over a sliding window.

A word becomes final once two consecutive hypotheses agree on it (LocalAgreement-2, as in
Macháček et al., "Turning Whisper into Real-Time Transcription System", 2023). Once a window
grows long, its final audio is dropped from the next decode (the window restarts where the final
words end, speech/streaming.py TRIM_AFTER_S), so a long turn costs no more per decode than a
short one. The final words go into the next decode's prompt, so Whisper keeps the sentence's
context.

`LocalAgreement` holds no clock and no audio: it is fed the hypothesis of each window and says
what became final, which keeps the rule testable with hand-made words.
"""

from __future__ import annotations

import re

from .events import Word

_PUNCT = re.compile(r"[^\w]+", re.UNICODE)
DEDUP_WINDOW_S = 1.0  # a repeat of the final tail only counts this close to where it ended
MAX_DEDUP_WORDS = 5


def _key(word: Word) -> str:
    return _PUNCT.sub("", word.text).lower()


class LocalAgreement:
    def __init__(self) -> None:
        self.committed: list[Word] = []
        self._previous: list[Word] = []  # the last hypothesis, past the committed words
        self._tail: list[Word] = []  # committed words of the utterance before, if split

    @property
    def tentative(self) -> list[Word]:
        return list(self._previous)

    def update(self, hypothesis: list[Word], force: bool = False
               ) -> tuple[list[Word], list[Word]]:
        """Feed the newest hypothesis of the audio past the committed words (absolute times);
        returns (newly committed, tentative). Committed words only ever grow. `force` commits
        the whole hypothesis, agreed or not."""
        new = self.drop_repeated_tail(hypothesis)
        agreed = len(new) if force else 0
        for a, b in zip(new, self._previous, strict=False):
            if force or _key(a) != _key(b):
                break
            agreed += 1
        fresh = new[:agreed]
        self.committed.extend(fresh)
        self._previous = new[agreed:]
        return fresh, list(self._previous)

    def boundary(self, default: float) -> float:
        """Where the next window starts (seconds): the end of the committed words, but never
        past the start of the first word still open, whose beginning must stay in the audio."""
        if not self.committed:
            return default
        end = self.committed[-1].end
        if self._previous:
            end = min(end, self._previous[0].start)
        return max(default, end)

    def carry_over(self, other: LocalAgreement) -> None:
        """Go on from another's state: its last hypothesis, and its committed words' tail for
        spotting repeats (a long turn split into utterances)."""
        self._previous = list(other._previous)
        self._tail = other.committed[-MAX_DEDUP_WORDS:]

    def drop_repeated_tail(self, hypothesis: list[Word]) -> list[Word]:
        # A window cut inside a committed word can hear it again: drop the longest run at the
        # start of the hypothesis that repeats the end of the committed words.
        done = self.committed or self._tail
        if not done or not hypothesis:
            return hypothesis
        last_end = done[-1].end
        if hypothesis[0].start > last_end + DEDUP_WINDOW_S:
            return hypothesis
        tail = [_key(w) for w in done[-MAX_DEDUP_WORDS:]]
        head = [_key(w) for w in hypothesis[:MAX_DEDUP_WORDS]]
        for n in range(min(len(tail), len(head)), 0, -1):
            if tail[-n:] == head[:n]:
                return hypothesis[n:]
        return hypothesis
