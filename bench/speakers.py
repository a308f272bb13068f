"""Who said what: WER, cpWER and DER of the transcript callwise delivers, on every recording of
../shared/data/audio that has a reference.

    python bench/speakers.py [--realtime] [--provisional] [--speakers N] [--only TEXT] [-v]

Each file goes through speech.replay.transcribe_file with the configuration `callwise transcribe
FILE --speakers N --language LANG` builds (batch by default, as `--json` delivers it); the
delivered segments (start, end, speaker, text) are scored by bench/scoring.py: WER (speaker-blind)
and cpWER (CHiME-6: per speaker, best speaker mapping) with meeteval, Mandarin in characters;
DER with pyannote.metrics without a collar and with the NIST 0.25 s one.

--realtime replays at real-time speed in 20 ms frames with provisional finals on, as the live
runtime runs a mono call; --provisional scores the first speaker labels a mono call shows (the
provisional guess where one was sent) instead of the settled ones; it means most with
--realtime, since in a batch run the diarizer's lead over the ASR is an accident of scheduling.

References: pyannote/sample.stm (words, per speaker) and .rttm (turns); debug.development.rttm
(dev00, dev01: AMI excerpts, turns only, so DER only); REFERENCE.txt (one speaker, or one per
channel), of which lines that describe a clip instead of transcribing it are skipped. The
language is Mandarin where the reference is Chinese, English otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from common import AUDIO, machine, require_shared
from scoring import (
    NIST_COLLAR,
    CPErrorRate,
    Seg,
    cpwer,
    der,
    load_rttm,
    load_stm,
    pooled_der,
    speaker_words,
    wer,
)

if TYPE_CHECKING:
    from speech import Utterance

warnings.filterwarnings("ignore")

# REFERENCE.txt lines that describe a clip instead of transcribing it.
NOT_TRANSCRIPTS = {"multilingual.mp3": "content described, not transcribed",
                   "hotwords.mp3": "a test's assertion, not a transcript"}
REF_LINE = re.compile(
    r"^(?P<name>\S+?)(?:\s+(?P<side>LEFT|RIGHT) channel)?(?::|\t)\s*(?P<text>.*)$")


@dataclass
class Case:
    path: Path
    words: list[Seg] | None = None  # speaker-attributed words: WER, cpWER
    turns: list[Seg] | None = None  # who spoke when: DER
    source: str = ""

    @property
    def language(self) -> str:
        text = "".join(s.text for s in self.words or [])
        return "zh" if re.search("[\u4e00-\u9fff]", text) else "en"

    @property
    def speakers(self) -> int:
        return len({s.speaker for s in (self.turns or self.words or [])})


@dataclass
class Row:
    case: Case
    hyp: list[Seg]
    rtf: float
    shown_provisional: int = 0
    wer: CPErrorRate | None = None
    cpwer: CPErrorRate | None = None
    der: list[dict[str, float]] = field(default_factory=list)  # no collar, NIST collar


def _reference_txt(folder: Path) -> dict[str, list[Seg]]:
    path = folder / "REFERENCE.txt"
    refs: dict[str, list[Seg]] = {}
    if not path.exists():
        return refs
    for line in path.read_text(encoding="utf-8").splitlines():
        m = REF_LINE.match(line)
        if line.startswith("#") or not m or m["text"].startswith("(") \
                or m["name"] in NOT_TRANSCRIPTS:
            continue
        speaker = f"{m['side'].lower()} channel" if m["side"] else "speaker"
        refs.setdefault(m["name"], []).append(Seg(0.0, 0.0, speaker, m["text"]))
    return refs


def find_cases() -> tuple[list[Case], list[str]]:
    with (AUDIO / "MANIFEST.tsv").open(encoding="utf-8") as f:
        files = [AUDIO / row["file"] for row in csv.DictReader(f, delimiter="\t")]
    rttms = sorted(AUDIO.glob("*/*.rttm"))
    for rttm in rttms:  # recordings named only by an .rttm (dev00, dev01)
        for uri in sorted({line.split()[1] for line in rttm.read_text().splitlines() if line}):
            wav = rttm.parent / f"{uri}.wav"
            if wav.exists() and wav not in files:
                files.append(wav)
    cases, skipped = [], []
    texts = {folder: _reference_txt(folder) for folder in {p.parent for p in files}}
    for path in files:
        case = Case(path)
        stm = path.with_suffix(".stm")
        if stm.exists():
            case.words, case.source = load_stm(stm), stm.name
        elif path.name in texts[path.parent]:
            case.words, case.source = texts[path.parent][path.name], "REFERENCE.txt"
        for rttm in rttms:
            if rttm.parent == path.parent and (turns := load_rttm(rttm, path.stem)):
                case.turns = turns
                case.source = " + ".join(filter(None, [case.source, rttm.name]))
        if case.words or case.turns:
            cases.append(case)
        else:
            skipped.append(f"{path.relative_to(AUDIO)} "
                           f"({NOT_TRANSCRIPTS.get(path.name, 'no reference')})")
    return cases, skipped


class FirstShown:
    """The sink's view of a call: the first label each final utterance was shown with."""

    def __init__(self) -> None:
        self.finals: list[Utterance] = []
        self.provisional = 0

    async def __call__(self, u: Utterance) -> None:
        if not u.final:
            return
        if u.provisional:
            self.provisional += 1
            self.finals.append(u)
        elif u.replaces is None:  # settled parts of a guess already shown came later
            self.finals.append(u)


async def run(cases: list[Case], args: argparse.Namespace) -> list[Row]:
    from speech import (
        CallConfig,
        DiarizationConfig,
        SpeechModels,
        StreamingConfig,
        build_transcript,
        transcribe_file,
    )

    models = SpeechModels.load()
    engine = models.asr.engine
    config = CallConfig(diarization=DiarizationConfig(max_speakers=args.speakers),
                        provisional_finals=args.realtime or args.provisional)
    print(f"machine: {machine()}")
    print(f"model: {engine.model_name} ({engine.device}, {engine.compute_type}); diarization "
          "pyannote PyanNet segmentation (whisperx 3.8.6 asset) + resemblyzer 0.1.4")
    print(f"mode: {'real time, 20 ms frames' if args.realtime else 'batch'}; labels scored: "
          f"{'first shown (provisional where sent)' if args.provisional else 'settled'}")
    print(f"config: {config.model_dump(exclude={'call_id', 'layout'})} (language per file)")
    rows = []
    try:
        for case in cases:
            cfg = config.model_copy(deep=True)
            cfg.call_id = case.path.stem
            cfg.streaming = StreamingConfig(language=case.language)
            shown = FirstShown()
            t = await transcribe_file(case.path, models, cfg, realtime=args.realtime, sink=shown)
            segments = t.segments
            if args.provisional:
                segments = build_transcript(shown.finals, t.audio_seconds, 0.0, None).segments
            hyp = [Seg(s.start, s.end, s.speaker, s.text) for s in segments]
            row = Row(case, hyp, t.processing_seconds / t.audio_seconds, shown.provisional)
            if case.words:
                row.wer, row.cpwer = wer(case.words, hyp), cpwer(case.words, hyp)
            if case.turns:
                row.der = [der(case.turns, hyp, t.audio_seconds, c) for c in (0.0, NIST_COLLAR)]
            rows.append(row)
    finally:
        models.close()
    return rows


def _rate(e: CPErrorRate | None) -> str:
    return f"{e.error_rate:7.3f}" if e is not None and e.error_rate is not None else f"{'-':>7}"


def report(rows: list[Row], skipped: list[str], verbose: bool) -> None:
    print(f"{'file':42} {'lang':4} {'WER/CER':>7} {'cpWER':>7} {'cp-WER':>7} {'DER':>7} "
          f"{'DER.25':>7} {'spk':>5} {'RTF':>5}  reference")
    for r in rows:
        diff = (f"{r.cpwer.error_rate - r.wer.error_rate:+7.3f}"
                if r.wer and r.cpwer and r.wer.length else f"{'-':>7}")
        ders = [f"{d['diarization error rate']:7.3f}" for d in r.der] or [f"{'-':>7}"] * 2
        spk = f"{len({s.speaker for s in r.hyp})}/{r.case.speakers}"
        print(f"{r.case.path.relative_to(AUDIO)!s:42} {r.case.language:4} {_rate(r.wer)} "
              f"{_rate(r.cpwer)} {diff} {ders[0]} {ders[1]} {spk:>5} {r.rtf:5.2f}  "
              f"{r.case.source}")
    for lang, unit in (("en", "words"), ("zh", "chars")):
        mine = [r for r in rows if r.case.language == lang]
        scored = [r for r in mine if r.wer and r.cpwer]
        if not mine:
            continue
        w = sum((r.wer for r in scored), CPErrorRate.zero())  # type: ignore[misc]
        cp = sum((r.cpwer for r in scored), CPErrorRate.zero())  # type: ignore[misc]
        with_der = [r for r in mine if r.der]
        ders = [f"{pooled_der(r.der[i] for r in with_der):7.3f}" if with_der else f"{'-':>7}"
                for i in (0, 1)]
        diff = f"{cp.error_rate - w.error_rate:+7.3f}" if w.length else f"{'-':>7}"
        print(f"{'overall ' + lang:42} {lang:4} {_rate(w)} {_rate(cp)} {diff} {ders[0]} "
              f"{ders[1]} {'':>5} {'':>5}  {w.length} reference {unit}, "
              f"{len(with_der)} files with turns")
    if any(r.shown_provisional for r in rows):
        print("provisional finals sent: " + ", ".join(
            f"{r.case.path.stem} {r.shown_provisional}" for r in rows if r.shown_provisional))
    print("skipped: " + "; ".join(skipped))
    if verbose:
        for r in rows:
            print(f"\n== {r.case.path.relative_to(AUDIO)}"
                  + (f"  cpWER mapping {r.cpwer.assignment}" if r.cpwer else ""))
            for name, words in speaker_words(r.case.words or []).items():
                print(f"  ref {name:12} {' '.join(words)}")
            for s in r.hyp:
                print(f"  hyp [{s.start:6.2f}-{s.end:6.2f}] {s.speaker:8} {s.text.strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--realtime", action="store_true", help="replay at real-time speed")
    parser.add_argument("--provisional", action="store_true",
                        help="score the first labels shown, not the settled ones")
    parser.add_argument("--speakers", type=int, default=2, help="as `transcribe --speakers`")
    parser.add_argument("--only", default="", help="only files whose path contains this")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the transcripts")
    args = parser.parse_args()
    require_shared()
    t0 = time.time()
    cases, skipped = find_cases()
    cases = [c for c in cases if args.only in str(c.path)]
    rows = asyncio.run(run(cases, args))
    report(rows, skipped, args.verbose)
    print(f"bench time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
