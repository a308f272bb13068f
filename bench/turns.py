"""End of turn on real recordings: today's silence-only endpointing against VAD + Smart Turn v3.2.

    cd bench; ../.venv/bin/python turns.py [--only TEXT] [-v]

Both policies run over the same Silero VAD frame probabilities (speech.vad, 32 ms frames) of each
recording mixed to mono at 16 kHz, followed by 3.5 s of digital silence so that the last turn
can end. An utterance opens and stays voiced exactly as in StreamingTranscriber._on_frame; only
the rule that closes it differs:

- silence-only (today): closes after `_required_silence` of silence, i.e. StreamingConfig's
  min_silence (0.5 s) for an utterance up to long_after/2 (2 s) long, min_silence_long (0.15 s)
  from long_after (4 s) on, linear in between. "silence 0.3 / 0.8": a flat silence instead.
- turn ca/fb: once the silence after voiced audio reaches `ca` (check_after), Smart Turn v3.2
  (speech.end_of_turn) hears the utterance's audio so far (from its padded start, the last 8 s
  at most); p >= 0.5 closes it there; otherwise it is asked again every further 0.2 s of
  silence, and the utterance closes anyway at `fb` (fallback) seconds of silence. Speech
  resuming resets the checks.
- today+turn (what StreamingTranscriber does with the model loaded): today's silence rule, and
  one model check at 0.2 s of silence where that rule would wait longer, once the utterance
  holds StreamingConfig.end_of_turn_min_speech (1 s) voiced; "any": from min_speech on.

Both keep StreamingConfig's speech_threshold, silence_threshold, pad, min_speech (an utterance
with less voiced audio is noise: its close is no declared end) and max_utterance (a 15 s
utterance is split at its quietest frame and reopened: not a declared end either).

Definitions:

- Reference turns: for the .stm / .rttm files, a speaker's consecutive segments separated by
  < 0.3 s are merged; a reference turn ends where a merged segment ends. Skipped: ends within
  0.3 s of the recording's end (the excerpt truncates the speaker) and ends that another
  speaker's turn spans by more than 0.3 s on both sides (in a mono mix the floor is not free
  there, no policy can see that end). Clips without a reference (jfk, librispeech, aishell,
  funasr) are one turn each, from the first to the last voiced VAD frame (prob >= 0.5), so the
  reference there is our own VAD; their end is never skipped (the clip ends with the sentence).
- A declared end is the frame at which a policy closes an utterance (audio time).
- Latency of a reference turn end E: the first declared end in [E - 0.3 s, min(E + 3 s, start
  of the next reference turn + 0.3 s)] minus E (slightly negative when the annotation ends
  after the voice does). "+inf" adds the measured time of the deciding model call
  (time.perf_counter) to the model's decisions: the live call waits for it.
- Missed: a reference turn end with no declared end in that window: the next turn (often the
  other speaker's) merged into it.
- Cut: a declared end inside a reference turn: the turn started before the closed utterance's
  last voiced frame and goes on for more than 0.3 s after the declared end. The speaker had
  not finished: a mid-sentence cut.
- Other: declared ends that are neither (noise, laughter, unannotated speech).

Overlapping speech in sample.wav and the AMI excerpts makes all of this imperfect: the VAD sees
the mix, the annotations' boundaries are a few hundred ms loose, and a quiet backchannel the VAD
misses can turn a good end into a "cut". Few Mandarin turn ends (three clips): read its row as
a sanity check, not a measurement.
"""

from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from common import AUDIO, machine, percentile, require_shared
from scoring import Seg, load_rttm, load_stm

warnings.filterwarnings("ignore")
RATE = 16_000  # speech.codecs.TARGET_RATE; checked in main()
MERGE_GAP = 0.3  # s: a speaker's segments closer than this are one turn
TOLERANCE = 0.3  # s: how loose a reference boundary is taken to be
WINDOW = 3.0  # s after a turn end within which a declared end still counts
TAIL = 3.5  # s of silence appended: longer than any fallback, so every last turn can end
RECHECK = 0.2  # s of further silence between model checks
CLIP = "clip"  # the speaker of a one-turn clip: its end is the speech's, never a truncation
MODEL = "Smart Turn v3.2 int8 ONNX from pipecat-ai 1.14.0 wheel"


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    language: str  # "English" or "Mandarin"
    stm: Path | None = None
    rttm: Path | None = None


def cases() -> list[Case]:
    pa = AUDIO / "pyannote"
    dev = pa / "debug.development.rttm"
    return [
        Case("sample", pa / "sample.wav", "English", stm=pa / "sample.stm"),
        Case("dev00", pa / "dev00.wav", "English", rttm=dev),
        Case("dev01", pa / "dev01.wav", "English", rttm=dev),
        Case("jfk", AUDIO / "faster-whisper/jfk.flac", "English"),
        Case("librispeech", AUDIO / "wenet/librispeech-1995-1837-0001.wav", "English"),
        Case("aishell", AUDIO / "wenet/aishell-BAC009S0724W0121.wav", "Mandarin"),
        Case("funasr_api", AUDIO / "funasr/funasr_api_asr_example.wav", "Mandarin"),
        Case("funasr_llama", AUDIO / "funasr/llama.cpp_tests_sample.wav", "Mandarin"),
    ]


# ---- policies -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SilenceOnly:
    name: str
    flat: float | None = None  # None: today's length-dependent silence


@dataclass(frozen=True)
class SmartTurn:
    name: str
    check_after: float
    fallback: float
    threshold: float = 0.5


@dataclass(frozen=True)
class Hybrid:
    """What StreamingTranscriber does with the model loaded: today's silence rule, and one
    model check at `check_after` s of silence where that rule would wait longer, once the
    utterance holds `min_speech` voiced seconds (StreamingConfig.end_of_turn_*)."""

    name: str
    check_after: float
    min_speech: float
    threshold: float = 0.5


Policy = SilenceOnly | SmartTurn | Hybrid


@dataclass(frozen=True)
class Declared:
    at: float  # audio time of the frame that closed the utterance
    voiced_end: float  # end of the utterance's last voiced frame
    by: str  # "silence", "model" or "fallback"
    infer_ms: float = 0.0  # the deciding model call's time; 0 unless by == "model"


@dataclass
class Endpoints:
    declared: list[Declared] = field(default_factory=list)
    call_ms: list[float] = field(default_factory=list)  # every model call, deciding or not
    checks: list[tuple[float, float, float]] = field(default_factory=list)  # (at, silence, p)
    splits: int = 0


class TurnModel:
    """EndOfTurnModel with a cache: policies that check the same audio share one inference."""

    def __init__(self) -> None:
        from speech.end_of_turn import EndOfTurnModel

        self.model = EndOfTurnModel()
        self.cache: dict[tuple[str, int, int], tuple[float, float]] = {}

    def __call__(self, key: str, audio: np.ndarray, start: int, end: int) -> tuple[float, float]:
        hit = self.cache.get((key, start, end))
        if hit is None:
            t0 = time.perf_counter()
            p = self.model.predict(audio[start:end][-8 * RATE :], RATE)
            hit = self.cache[(key, start, end)] = (p, (time.perf_counter() - t0) * 1000)
        return hit


def required_silence(cfg, length: float) -> float:  # type: ignore[no-untyped-def]
    """StreamingTranscriber._required_silence: min_silence, long_after, min_silence_long."""
    if length <= cfg.long_after / 2:
        return float(cfg.min_silence)
    if length >= cfg.long_after:
        return float(cfg.min_silence_long)
    share = (length - cfg.long_after / 2) / (cfg.long_after / 2)
    return float(cfg.min_silence + share * (cfg.min_silence_long - cfg.min_silence))


def endpoint(probs: np.ndarray, audio: np.ndarray, frame: int, cfg, policy: Policy,  # type: ignore[no-untyped-def]
             model: TurnModel | None, key: str) -> Endpoints:
    """The utterances StreamingTranscriber._on_frame would cut, with `policy` closing them."""
    out = Endpoints()
    pad = int(cfg.pad * RATE)
    start: int | None = None  # open utterance's first sample
    last_voiced = 0  # sample just past the last voiced frame
    voiced = 0  # voiced frames in the open utterance
    frames: list[tuple[int, float]] = []  # (frame end, prob) of the open utterance
    next_check = 0.0  # silence at which the model is asked next
    asked = False  # Hybrid: the model was asked in this pause

    def close(at: int, by: str, ms: float = 0.0) -> None:
        nonlocal start
        start = None
        if voiced * frame / RATE >= cfg.min_speech:  # shorter: noise, today's code drops it
            out.declared.append(Declared(at / RATE, last_voiced / RATE, by, ms))

    for i, p in enumerate(probs.tolist()):
        frame_start, frame_end = i * frame, (i + 1) * frame
        if start is None:
            if p >= cfg.speech_threshold:
                start, frames, voiced = max(0, frame_start - pad), [], 1
                last_voiced, asked = frame_end, False
                next_check = policy.check_after if isinstance(policy, SmartTurn) else 0.0
            continue
        frames.append((frame_end, p))
        if p >= cfg.silence_threshold and (p >= cfg.speech_threshold or voiced):
            voiced += 1
            last_voiced = frame_end
            asked = False
            if isinstance(policy, SmartTurn):
                next_check = policy.check_after  # speech resumed: the turn goes on
        silence = (frame_end - last_voiced) / RATE
        length = (frame_end - start) / RATE
        if isinstance(policy, SilenceOnly):
            need = required_silence(cfg, length) if policy.flat is None else policy.flat
            if silence >= need:
                close(frame_end, "silence")
                continue
        elif isinstance(policy, Hybrid):
            need = required_silence(cfg, length)
            if silence >= need:
                close(frame_end, "silence")
                continue
            if (not asked and policy.check_after <= silence
                    and voiced * frame / RATE >= policy.min_speech):
                assert model is not None
                asked = True
                prob, ms = model(key, audio, start, frame_end)
                out.call_ms.append(ms)
                out.checks.append((frame_end / RATE, silence, prob))
                if prob > policy.threshold:
                    close(frame_end, "model", ms)
                    continue
        else:
            if silence >= policy.fallback:
                close(frame_end, "fallback")
                continue
            if silence >= next_check:
                assert model is not None
                prob, ms = model(key, audio, start, frame_end)
                out.call_ms.append(ms)
                out.checks.append((frame_end / RATE, silence, prob))
                next_check += RECHECK
                if prob >= policy.threshold:
                    close(frame_end, "model", ms)
                    continue
        if length >= cfg.max_utterance:
            # StreamingTranscriber._cut_long_utterance: split at the quietest frame of the last
            # third and reopen; the speaker goes on, so no turn ends here.
            out.splits += 1
            lo = len(frames) * 2 // 3
            cut = min(frames[lo:], key=lambda f: f[1])[0] if lo < len(frames) else frame_end
            frames = [f for f in frames if f[0] > cut]
            start = cut
            voiced = sum(q >= cfg.speech_threshold for _, q in frames)
    return out


# ---- references and scoring -----------------------------------------------------------------
@dataclass(frozen=True)
class Turn:
    speaker: str
    start: float
    end: float


def merge(segs: list[Seg]) -> list[Turn]:
    turns: list[Turn] = []
    last: dict[str, int] = {}  # speaker -> index of their latest turn
    for s in sorted(segs, key=lambda s: s.start):
        k = last.get(s.speaker)
        if k is not None and s.start - turns[k].end < MERGE_GAP:
            turns[k] = Turn(s.speaker, turns[k].start, max(turns[k].end, s.end))
        else:
            last[s.speaker] = len(turns)
            turns.append(Turn(s.speaker, s.start, s.end))
    return turns


def reference(case: Case, probs: np.ndarray, frame: int, threshold: float) -> list[Turn]:
    if case.stm is not None:
        return merge(load_stm(case.stm))
    if case.rttm is not None:
        return merge(load_rttm(case.rttm, case.path.stem))
    voiced = np.flatnonzero(probs >= threshold)
    if not len(voiced):
        return []
    return [Turn(CLIP, voiced[0] * frame / RATE, (voiced[-1] + 1) * frame / RATE)]


@dataclass
class Score:
    ends: int = 0
    skipped: int = 0
    latency: list[float] = field(default_factory=list)
    latency_inf: list[float] = field(default_factory=list)
    cuts: int = 0
    missed: int = 0
    other: int = 0
    calls: int = 0
    call_ms: list[float] = field(default_factory=list)
    splits: int = 0
    files: int = 0

    def add(self, s: Score) -> None:
        for name in ("ends", "skipped", "cuts", "missed", "other", "calls", "splits", "files"):
            setattr(self, name, getattr(self, name) + getattr(s, name))
        self.latency += s.latency
        self.latency_inf += s.latency_inf
        self.call_ms += s.call_ms


def score(turns: list[Turn], ep: Endpoints, duration: float,
          log: list[str] | None = None) -> Score:
    sc = Score(files=1, calls=len(ep.call_ms), call_ms=list(ep.call_ms), splits=ep.splits)
    used: set[int] = set()
    for t in sorted(turns, key=lambda t: t.end):
        if t.end > duration - TOLERANCE and t.speaker != CLIP:
            sc.skipped += 1
            continue
        if any(o.speaker != t.speaker and o.start < t.end - TOLERANCE
               and o.end > t.end + TOLERANCE for o in turns):
            sc.skipped += 1
            continue
        sc.ends += 1
        later = [o.start for o in turns if o.start > t.end]
        close = min(t.end + WINDOW, (min(later) + TOLERANCE) if later else np.inf)
        hit = next((k for k, d in enumerate(ep.declared)
                    if t.end - TOLERANCE <= d.at <= close), None)
        if hit is None:
            sc.missed += 1
            if log is not None:
                log.append(f"    missed {t.speaker} end {t.end:6.2f}")
            continue
        d = ep.declared[hit]
        used.add(hit)
        sc.latency.append(d.at - t.end)
        sc.latency_inf.append(d.at + d.infer_ms / 1000 - t.end)
        if log is not None:
            log.append(f"    end    {t.speaker} {t.end:6.2f} -> {d.at:6.2f} ({d.by}, "
                       f"+{d.at - t.end:.2f} s)")
    for k, d in enumerate(ep.declared):
        cut = next((t for t in turns if t.start < d.voiced_end and d.at < t.end - TOLERANCE),
                   None)
        if cut is not None:
            sc.cuts += 1
            if log is not None:
                log.append(f"    CUT    {cut.speaker} {cut.start:6.2f}-{cut.end:6.2f} at "
                           f"{d.at:6.2f} ({d.by}, voice stopped {d.voiced_end:6.2f})")
        elif k not in used:
            sc.other += 1
            if log is not None:
                log.append(f"    other  at {d.at:6.2f} ({d.by})")
    return sc


# ---- report ---------------------------------------------------------------------------------
def row(name: str, s: Score) -> str:
    ms = f"{np.mean(s.call_ms):6.1f}" if s.call_ms else f"{'-':>6}"
    p50i = f"{percentile(s.latency_inf, 50):7.2f}" if s.calls else f"{'-':>7}"
    return (f"{name:16} {s.files:5} {s.ends:4} {percentile(s.latency, 50):6.2f} "
            f"{percentile(s.latency, 95):6.2f} {p50i} {s.cuts:4} {s.missed:6} {s.other:5} "
            f"{s.calls:5} {ms}")


HEADER = (f"{'policy':16} {'files':>5} {'ends':>4} {'p50':>6} {'p95':>6} {'p50+inf':>7} "
          f"{'cuts':>4} {'missed':>6} {'other':>5} {'calls':>5} {'ms':>6}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="only the recordings whose name contains this")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="per-recording rows and every turn end, cut and declared end")
    args = ap.parse_args()
    require_shared()

    from speech.audio_file import load_audio
    from speech.codecs import TARGET_RATE
    from speech.streaming import StreamingConfig
    from speech.vad import FRAME, StreamingVad

    assert TARGET_RATE == RATE
    cfg = StreamingConfig()
    policies: list[Policy] = [
        SilenceOnly("silence today"),
        SilenceOnly("silence 0.3", flat=0.3),
        SilenceOnly("silence 0.8", flat=0.8),
        *(SmartTurn(f"turn {ca}/{fb}", ca, fb) for ca in (0.2, 0.3) for fb in (1.0, 1.5)),
        Hybrid("today+turn 0.2", cfg.end_of_turn_after, cfg.end_of_turn_min_speech),
        Hybrid("today+turn any", cfg.end_of_turn_after, cfg.min_speech),
    ]
    selected = [c for c in cases() if args.only is None or args.only in c.name]
    if not selected:
        raise SystemExit(f"turns: no recording matches --only {args.only!r}")
    model = TurnModel()

    print(f"machine: {machine()}")
    print(f"model: {MODEL} (threshold 0.5, re-checked every {RECHECK} s of silence)")
    print(f"today's silence: {cfg.min_silence} s, {cfg.min_silence_long} s after "
          f"{cfg.long_after} s; speech {cfg.speech_threshold}, silence {cfg.silence_threshold}, "
          f"pad {cfg.pad} s")
    totals: dict[tuple[str, str], Score] = {}
    for case in selected:
        clip = load_audio(case.path).to_16k()
        audio = clip.samples.mean(axis=0).astype(np.float32)
        duration = len(audio) / RATE
        audio = np.concatenate([audio, np.zeros(int(TAIL * RATE), np.float32)])
        probs = StreamingVad()(audio)
        turns = reference(case, probs, FRAME, cfg.speech_threshold)
        if args.verbose:
            print(f"\n{case.name} ({case.language}, {duration:.1f} s, {len(turns)} turns)")
            print("  " + HEADER)
        for policy in policies:
            ep = endpoint(probs, audio, FRAME, cfg, policy, model, case.name)
            log: list[str] | None = [] if args.verbose else None
            s = score(turns, ep, duration, log)
            for group in ("all", case.language):
                totals.setdefault((group, policy.name), Score()).add(s)
            if args.verbose:
                print("  " + row(policy.name, s))
                print("\n".join(log or []))
                if ep.checks:
                    print("    model (at, silence, p): " + ", ".join(
                        f"{a:.2f} {q:.2f} {p:.2f}" for a, q, p in ep.checks))

    print("\nlatency in audio seconds after the reference turn end; p50+inf adds the deciding "
          "model call; ms: mean per model call")
    for group in ("all", "English", "Mandarin"):
        if (group, policies[0].name) not in totals:
            continue
        first = totals[(group, policies[0].name)]
        print(f"\n{group} ({first.skipped} turn ends skipped: truncated or overlapped)")
        print(HEADER)
        for policy in policies:
            print(row(policy.name, totals[(group, policy.name)]))
    splits = sum(totals[("all", p.name)].splits for p in policies)
    if splits:
        print(f"\n{splits} max_utterance splits (not counted as ends)")


if __name__ == "__main__":
    main()
