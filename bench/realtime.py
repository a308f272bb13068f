"""Speed of the live path: real-time factor, end-of-utterance -> final-text latency, and how
many concurrent real-time calls one process sustains.

    python bench/realtime.py [--file pyannote/sample.wav] [--partials 1.0] [--max-calls 6]
    python bench/realtime.py --file ../fixtures/calls/demo_call_stereo.flac

Latency runs from the moment the last voiced audio of an utterance was handed to the call (as a
live media stream hands it) to the moment its final, speaker-labelled text is emitted: it
includes the endpointing silence, the decode, and for mono calls the diarizer settling the
speaker (DiarizationConfig.latency). Concurrency replays the same recording as N simultaneous
calls at real-time speed, started STAGGER seconds apart; N is sustained while the p95 latency
stays within 1 s of one call's.
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


async def run_calls(models, clip, layout, n, realtime, partials, diar_latency):  # type: ignore[no-untyped-def]
    from speech import CallConfig, DiarizationConfig, StreamingConfig
    from speech.replay import replay

    configs = [CallConfig(call_id=f"call{i}", layout=layout,
                          streaming=StreamingConfig(language="en", partial_interval=partials),
                          diarization=DiarizationConfig(latency=diar_latency))
               for i in range(n)]
    async def one(i: int, config):  # type: ignore[no-untyped-def]
        # Calls in a contact center do not start, pause and end in lockstep: stagger them.
        await asyncio.sleep(i * STAGGER if realtime else 0)
        return await replay(clip, models, config, realtime=realtime)

    busy0 = models.asr.busy_seconds
    t0 = time.monotonic()
    results = await asyncio.gather(*(one(i, c) for i, c in enumerate(configs)))
    return results, time.monotonic() - t0 - (n - 1) * STAGGER * realtime, (
        models.asr.busy_seconds - busy0)


async def main(args: argparse.Namespace, path: Path) -> None:
    from speech import SpeechModels
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
    print(f"machine: {machine()}")
    print(f"model: whisper base ({engine.device}, {engine.compute_type}; beam 5 finals, greedy "
          f"partials every {args.partials:g} s) + pyannote segmentation + resemblyzer")
    print(f"audio: {path.name}, {clip.duration:.1f} s, {layout}"
          + (f", diarization latency {args.diarization_latency:g} s" if layout == "mono" else
             ", speakers by channel" if clip.channels > 1 else ", ASR only"))

    _, wall, busy = await run_calls(models, clip, layout, 1, False, 0.0, args.diarization_latency)
    print(f"batch replay, finals only: RTF {wall / clip.duration:.3f} "
          f"(ASR alone {busy / clip.duration:.3f})")

    print(f"{'calls':>5} {'p50 s':>7} {'p95 s':>7} {'max s':>7} {'ASR busy':>8}  sustained")
    base = None
    for n in range(1, args.max_calls + 1):
        results, wall, busy = await run_calls(models, clip, layout, n, True, args.partials,
                                              args.diarization_latency)
        lat = [x for r in results for x in (r.latency_seconds or [])]
        p95 = percentile(lat, 95)
        base = p95 if base is None else base
        ok = p95 <= base + 1.0
        print(f"{n:5d} {percentile(lat, 50):7.2f} {p95:7.2f} {max(lat):7.2f} "
              f"{busy / wall:8.2f}  {'yes' if ok else 'no'}")
        if not ok:
            break
    models.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--file", default="pyannote/sample.wav")
    parser.add_argument("--partials", type=float, default=1.0, help="seconds; 0 turns them off")
    parser.add_argument("--diarization-latency", type=float, default=5.0)
    parser.add_argument("--max-calls", type=int, default=6)
    parser.add_argument("--asr-only", action="store_true", help="skip diarization")
    cli = parser.parse_args()
    audio = Path(cli.file) if Path(cli.file).exists() else AUDIO / cli.file
    if not audio.exists():
        require_shared()
    asyncio.run(main(cli, audio))
