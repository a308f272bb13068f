"""Who-said-what scoring of a delivered transcript: WER, cpWER (meeteval) and DER (pyannote).

Benchmark code, not product code: meeteval is a dev/bench dependency, never imported by the
runtime. Everything here works on plain `Seg`s (start, end, speaker, text), so it scores a
`Transcript`'s segments, an .stm, an .rttm or hand-made lines alike; tests/test_speaker_scoring.py
checks it on hand-made ones.

- Text: one normalisation for reference and hypothesis: lowercase, punctuation removed,
  traditional Chinese converted to simplified (OpenCC t2s), and every CJK character a token of
  its own, so Mandarin is scored in characters (CER, cpCER) and English in words.
- WER: all the words of the call in time order against all the hypothesis words in time order;
  who said them does not count.
- cpWER (CHiME-6): each speaker's words concatenated in time order, reference speakers mapped to
  hypothesis speakers one-to-one with the lowest total errors (meeteval's Hungarian search);
  words of an unmapped speaker are all deletions or insertions. cpWER - WER is what speaker
  attribution costs.
- DER: pyannote's, on the time the segments cover. pyannote's `collar` is the total width
  removed around each reference boundary (x/2 on each side), so the NIST 0.25 s collar is
  collar=0.5.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from meeteval.wer.wer.cp import CPErrorRate, cp_word_error_rate
from pyannote.core import Annotation, Segment, Timeline
from pyannote.metrics.diarization import DiarizationErrorRate

NIST_COLLAR = 0.5  # pyannote convention: 0.25 s removed on each side of a reference boundary
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+(?:'[^\W_{_CJK}]+)*")


@dataclass(frozen=True)
class Seg:
    start: float
    end: float
    speaker: str
    text: str = ""


@functools.cache
def _t2s():  # type: ignore[no-untyped-def]
    import opencc

    return opencc.OpenCC("t2s.json")


def tokens(text: str) -> list[str]:
    """Scoring units: lowercase words without punctuation; each Chinese character on its own."""
    text = text.lower().replace("’", "'")
    if re.search(f"[{_CJK}]", text):
        text = _t2s().convert(text)
    return _TOKEN.findall(text)


def _in_order(segs: Iterable[Seg]) -> list[Seg]:
    return sorted(segs, key=lambda s: s.start)  # stable: untimed lines keep the file's order


def speaker_words(segs: Iterable[Seg]) -> dict[str, list[str]]:
    words: dict[str, list[str]] = {}
    for s in _in_order(segs):
        words.setdefault(s.speaker, []).extend(tokens(s.text))
    return words


def wer(ref: Iterable[Seg], hyp: Iterable[Seg]) -> CPErrorRate:
    """Speaker-blind: one stream of words each side (a one-speaker cpWER is plain WER)."""
    r = [w for s in _in_order(ref) for w in tokens(s.text)]
    h = [w for s in _in_order(hyp) for w in tokens(s.text)]
    return cp_word_error_rate({"all": r}, {"all": h}, reference_sort=False,
                              hypothesis_sort=False)


def cpwer(ref: Iterable[Seg], hyp: Iterable[Seg]) -> CPErrorRate:
    return cp_word_error_rate(speaker_words(ref), speaker_words(hyp), reference_sort=False,
                              hypothesis_sort=False)


def annotation(segs: Iterable[Seg], uri: str = "call") -> Annotation:
    ann = Annotation(uri=uri)
    for i, s in enumerate(segs):
        if s.end > s.start:
            ann[Segment(s.start, s.end), i] = s.speaker
    return ann


def der(ref: Iterable[Seg], hyp: Iterable[Seg], duration: float,
        collar: float = 0.0) -> dict[str, float]:
    """pyannote's components over the whole recording (0..duration): 'confusion',
    'missed detection', 'false alarm', 'total' (reference speech) and 'diarization error rate'."""
    metric = DiarizationErrorRate(collar=collar)
    uem = Timeline([Segment(0.0, duration)])
    return dict(metric(annotation(ref), annotation(hyp), uem=uem, detailed=True))


def pooled_der(parts: Iterable[dict[str, float]]) -> float:
    parts = list(parts)
    errors = sum(p["confusion"] + p["missed detection"] + p["false alarm"] for p in parts)
    total = sum(p["total"] for p in parts)
    return errors / total if total else float("nan")


def load_stm(path: Path) -> list[Seg]:
    """`file channel speaker start end text` lines; ';;' comments."""
    segs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        f = line.split(maxsplit=5)
        if len(f) >= 5 and not line.startswith(";;"):
            segs.append(Seg(float(f[3]), float(f[4]), f[2], f[5] if len(f) > 5 else ""))
    return segs


def load_rttm(path: Path, uri: str) -> list[Seg]:
    """SPEAKER lines of one recording: `SPEAKER uri channel start duration <NA> <NA> who ...`."""
    segs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        f = line.split()
        if len(f) >= 8 and f[0] == "SPEAKER" and f[1] == uri:
            start = float(f[3])
            segs.append(Seg(start, start + float(f[4]), f[7]))
    return segs
