"""Speed of the live path: per-word and per-utterance latency, real-time factor, and how many
concurrent real-time calls one process sustains; the peer ufal/whisper_streaming in the same run.

    python bench/realtime.py [--file pyannote/sample.wav] [--partials 1.0] [--max-calls 6]
                             [--asr-only] [--peer DIR] [--modes partials,commit]
    python bench/realtime.py --file ../fixtures/calls/demo_call_stereo.flac

Per word (what an agent experiences): the wall time a word is first shown as final text minus
the time its audio was handed over (t0 + the word's end in the recording, replayed at real-time
speed in 20 ms frames); "stable" is the same for the words a partial first shows as stable.
Per utterance: from the last voiced audio of an utterance to its final, speaker-labelled text.
Both include the endpointing silence, the decodes, and for mono calls the diarizer settling the
speaker (DiarizationConfig.latency). Modes: `partials` (the default: greedy partials, finals at
the utterance's end) and `commit` (StreamingConfig.commit_words: words final as two windows
agree). --peer DIR runs a checkout of whisper_streaming (its source unmodified,
bench/peer_streaming.py) on the same audio and model right after, so both figures come from one
invocation on one machine. Concurrency replays the recording as N simultaneous calls at real-time
speed, started STAGGER seconds apart; N is sustained while the per-word p95 stays within 1 s of
one call's.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import warnings
from pathlib import Path

from common import AUDIO, machine, percentile, require_shared

warnings.filterwarnings("ignore")
STAGGER = 1.7  # seconds between the starts of concurrent calls


class Run:
    """One replayed call: its transcript and the stable words its partials showed, when."""

    def __init__(self) -> None:
        self.t0 = 0.0
        self.stable: dict[tuple[str, int], float] = {}  # (utterance, word index) -> latency
        self.transcript = None

    async def sink(self, u) -> None:  # type: ignore[no-untyped-def]
        if u.final or not u.stable_text:
            return
        n = len(u.stable_text.split()) if u.language != "zh" else len(u.words)
        for k, w in enumerate(u.words[:n]):
            self.stable.setdefault((u.utterance_id, k), u.emitted_wallclock - (self.t0 + w.end))

    @property
    def words(self) -> list[float]:
        return self.transcript.word_latency_seconds or []

    @property
    def stable_words(self) -> list[float]:
        # A word shown final without ever being a stable partial: its final is when it settled.
        return list(self.stable.values()) or self.words


async def run_calls(models, clip, layout, n, realtime, streaming, diar_latency):  # type: ignore[no-untyped-def]
    from speech import CallConfig, DiarizationConfig
    from speech.replay import replay

    async def one(i: int) -> Run:
        config = CallConfig(call_id=f"call{i}", layout=layout,
                            streaming=streaming.model_copy(),
                            diarization=DiarizationConfig(latency=diar_latency))
        run = Run()
        # Calls in a contact center do not start, pause and end in lockstep: stagger them.
        await asyncio.sleep(i * STAGGER if realtime else 0)
        run.t0 = time.monotonic()
        run.transcript = await replay(clip, models, config, realtime=realtime, sink=run.sink)
        return run

    busy0 = models.asr.busy_seconds
    t0 = time.monotonic()
    results = await asyncio.gather(*(one(i) for i in range(n)))
    return results, time.monotonic() - t0 - (n - 1) * STAGGER * realtime, (
        models.asr.busy_seconds - busy0)


def _wer(path: Path, text: str) -> str:
    from scoring import Seg, load_stm, wer

    stm = path.with_suffix(".stm")
    if not stm.exists():
        return ""
    return f" WER {wer(load_stm(stm), [Seg(0, 1e9, 'x', text)]).error_rate:.3f}"


def _line(name: str, words: list[float], stable: list[float], utts: list[float], extra: str
          ) -> str:
    return (f"{name:<22} {percentile(words, 50):6.2f} {percentile(words, 95):6.2f} "
            f"{percentile(stable, 50):6.2f} {percentile(stable, 95):6.2f} "
            f"{percentile(utts, 95):6.2f} {len(words):6d}{extra}")


async def main(args: argparse.Namespace, path: Path) -> None:
    from speech import SpeechModels, StreamingConfig
    from speech.audio_file import AudioClip, load_audio
    from speech.replay import channel_layout

    models = SpeechModels.load()
    engine = models.asr.engine
    clip = load_audio(path)
    # --asr-only: every channel is its own speaker, so no diarizer wait (the figure to compare
    # with ASR-only streaming systems such as whisper_streaming).
    layout = "stereo" if args.asr_only else channel_layout(clip)
    if args.asr_only and clip.channels > 1 and channel_layout(clip) == "mono":
        clip = AudioClip(clip.samples.mean(axis=0, keepdims=True), clip.sample_rate)
    language = args.language
    print(f"machine: {machine()}")
    print(f"model: whisper base ({engine.device}, {engine.compute_type}, {engine.model_name}); "
          f"beam 5 finals; windows every {args.partials:g} s of audio (greedy partials, or "
          f"beam 5 when committing) + pyannote segmentation + resemblyzer")
    print(f"audio: {path.name}, {clip.duration:.1f} s, {layout}"
          + (f", diarization latency {args.diarization_latency:g} s" if layout == "mono" else
             ", speakers by channel" if clip.channels > 1 else ", ASR only"))

    def config(mode: str) -> StreamingConfig:
        return StreamingConfig(language=language, partial_interval=args.partials,
                               commit_words=mode == "commit")

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    print(f"{'one call, seconds':<22} {'word':>6} {'p95':>6} {'stable':>6} {'p95':>6} "
          f"{'utt95':>6} {'words':>6}  (p50 p95 per word; per utterance p95)")
    for mode in modes:
        [run], wall, _ = await run_calls(models, clip, layout, 1, True, config(mode),
                                         args.diarization_latency)
        text = " ".join(s.text for s in run.transcript.segments)
        print(_line(f"callwise {mode}", run.words, run.stable_words,
                    run.transcript.latency_seconds or [], _wer(path, text)))
    if args.peer:
        from peer_streaming import run_peer

        peer = run_peer(Path(args.peer), path, language or "en", engine.model_name,
                        threads=args.threads)
        print(_line("whisper_streaming", peer.word_latency, peer.word_latency, [],
                    _wer(path, peer.text) + f" (wall {peer.wall_s:.1f} s)"))

    _, wall, busy = await run_calls(models, clip, layout, 1, False, config("partials"),
                                    args.diarization_latency)
    print(f"batch replay, finals only: RTF {wall / clip.duration:.3f} "
          f"(ASR alone {busy / clip.duration:.3f})")

    mode = modes[0] if modes else "partials"
    print(f"concurrent calls ({mode}):")
    print(f"{'calls':>5} {'word p50':>8} {'p95':>6} {'utt p95':>7} {'ASR busy':>8}  sustained")
    base = None
    for n in range(1, args.max_calls + 1):
        results, wall, busy = await run_calls(models, clip, layout, n, True, config(mode),
                                              args.diarization_latency)
        words = [x for r in results for x in r.words]
        utts = [x for r in results for x in (r.transcript.latency_seconds or [])]
        p95 = percentile(words, 95)
        base = p95 if base is None else base
        ok = p95 <= base + 1.0
        print(f"{n:5d} {percentile(words, 50):8.2f} {p95:6.2f} {percentile(utts, 95):7.2f} "
              f"{busy / wall:8.2f}  {'yes' if ok else 'no'}")
        if not ok:
            break
    models.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--file", default="pyannote/sample.wav")
    parser.add_argument("--language", default="en", choices=["en", "zh"])
    parser.add_argument("--partials", type=float, default=1.0,
                        help="seconds of audio between windows; 0 turns them off")
    parser.add_argument("--modes", default="partials,commit",
                        help="comma-separated: partials, commit (the first is used for the "
                        "concurrency run)")
    parser.add_argument("--diarization-latency", type=float, default=5.0)
    parser.add_argument("--max-calls", type=int, default=6)
    parser.add_argument("--asr-only", action="store_true", help="skip diarization")
    parser.add_argument("--peer", help="a checkout of ufal/whisper_streaming to run alongside")
    parser.add_argument("--threads", type=int, default=2, help="the peer's CPU threads")
    cli = parser.parse_args()
    audio = Path(cli.file) if Path(cli.file).exists() else AUDIO / cli.file
    if not audio.exists():
        require_shared()
    asyncio.run(main(cli, audio))
