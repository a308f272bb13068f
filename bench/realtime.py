"""Speed of the live path: real-time factor, end-of-utterance -> final-text latency, and how
many concurrent real-time calls one process sustains.

    python bench/realtime.py [--max-calls N] [--file pyannote/sample.wav]

Latency is measured from the moment the last voiced audio of an utterance was handed to the call
(as a live media stream would) to the moment its final, speaker-labelled text was emitted; it
includes the endpointing silence and the diarizer catching up. Concurrency replays the same
recording as N simultaneous calls at real-time speed with partials on (as in production); N is
sustained when every call still finishes within 2 s of its audio and the p95 latency stays
under 3 s.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import warnings

from common import AUDIO, machine, percentile, require_shared

warnings.filterwarnings("ignore")


async def run_calls(models, clip, n: int, realtime: bool):  # type: ignore[no-untyped-def]
    from speech import CallConfig, StreamingConfig
    from speech.replay import replay

    configs = [CallConfig(call_id=f"call{i}", streaming=StreamingConfig(language="en"))
               for i in range(n)]
    busy0 = models.asr.busy_seconds
    t0 = time.monotonic()
    results = await asyncio.gather(*(replay(clip, models, c, realtime=realtime) for c in configs))
    wall = time.monotonic() - t0
    return results, wall, models.asr.busy_seconds - busy0


async def main() -> None:
    require_shared()
    parser = argparse.ArgumentParser()
    parser.add_argument("--file", default="pyannote/sample.wav")
    parser.add_argument("--max-calls", type=int, default=4)
    args = parser.parse_args()

    from speech import SpeechModels
    from speech.audio_file import load_audio

    models = SpeechModels.load()
    engine = models.asr.engine
    print(f"machine: {machine()}")
    print(f"model: whisper base ({engine.device}, {engine.compute_type}, beam 5 finals, greedy "
          "partials every 1 s) + pyannote segmentation + resemblyzer diarization")
    clip = load_audio(AUDIO / args.file)
    print(f"audio: {args.file}, {clip.duration:.1f} s, mono call with two speakers")

    results, wall, busy = await run_calls(models, clip, 1, realtime=False)
    print(f"batch replay (no partials): RTF {wall / clip.duration:.3f} "
          f"(ASR busy {busy / clip.duration:.3f} of audio time)")

    print(f"{'calls':>5} {'p50 s':>7} {'p95 s':>7} {'max s':>7} {'finish lag s':>12} "
          f"{'ASR busy':>8}  sustained")
    for n in range(1, args.max_calls + 1):
        results, wall, busy = await run_calls(models, clip, n, realtime=True)
        lat = [x for r in results for x in (r.latency_seconds or [])]
        lag = wall - clip.duration
        ok = lag < 2.0 and percentile(lat, 95) < 3.0
        print(f"{n:5d} {percentile(lat, 50):7.2f} {percentile(lat, 95):7.2f} {max(lat):7.2f} "
              f"{lag:12.2f} {busy / wall:8.2f}  {'yes' if ok else 'no'}")
        if not ok:
            break
    models.close()


if __name__ == "__main__":
    asyncio.run(main())
