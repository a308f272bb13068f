"""Word latency of the peer system ufal/whisper_streaming, run unmodified at real-time speed.

    python bench/peer_streaming.py --peer DIR [--file pyannote/sample.wav] [--language en]

DIR is a checkout of https://github.com/ufal/whisper_streaming (it holds whisper_online.py).
The peer runs as its own simulation does in its default, computation-aware mode: its
OnlineASRProcessor (LocalAgreement-2, "segment" buffer trimming at 15 s), faster-whisper with
beam 5, and each turn sleeps until min_chunk seconds of new audio exist by the wall clock, then
inserts all audio up to now and calls process_iter. The model is callwise's Whisper base folder
on CPU, int8, so both systems decode with the same weights on the same cores.

A word's latency is the wall time its committed text was emitted minus the time the word ends in
the audio (the peer's own Whisper word timestamp), both measured from the start of feeding. The
words online.finish() flushes count too, emitted when finish returns.

The peer runs in a child process (this file with --child) so its imports, threads and logging
stay out of the caller's process; the child prints one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
SAMPLING_RATE = 16000  # whisper_online's, fixed
BUFFER_TRIMMING = ("segment", 15.0)  # whisper_online's defaults (--buffer_trimming, _sec)


@dataclass
class PeerResult:
    word_latency: list[float]  # seconds, one per committed word, in emission order
    text: str  # all committed text, finish() included
    wall_s: float  # from the start of feeding to the return of finish()
    audio_s: float
    # (word, audio end s, latency s) per committed word, for inspecting outliers
    words: list[tuple[str, float, float]] = field(default_factory=list)
    finish_words: int = 0  # of those, flushed uncommitted by finish() (the peer fell behind)
    # (audio fed so far s, process_iter compute s) per iteration: why the latency is what it is
    iterations: list[tuple[float, float]] = field(default_factory=list)


def run_peer(peer_dir: Path, audio: Path, language: str, model_dir: str, threads: int = 2,
             min_chunk: float = 1.0) -> PeerResult:
    """Run whisper_streaming's simulation on `audio` in real time and measure its word latency.

    `language` is a Whisper code or "auto"; `model_dir` a CTranslate2 Whisper folder. Blocks for
    about the audio's duration plus model loading. Raises RuntimeError if the peer fails.
    """
    peer_dir = Path(peer_dir).resolve()
    if not (peer_dir / "whisper_online.py").is_file():
        raise FileNotFoundError(f"{peer_dir} holds no whisper_online.py (a whisper_streaming "
                                "checkout is expected)")
    spec = {"peer": str(peer_dir), "audio": str(Path(audio).resolve()), "language": language,
            "model_dir": str(model_dir), "threads": threads, "min_chunk": min_chunk}
    # Thread pools outside CTranslate2 (OpenMP in numpy/librosa) would otherwise size
    # themselves to every core and compete with the decoder the caller sized with `threads`.
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, str(HERE), "--child", json.dumps(spec)],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"whisper_streaming exited with {proc.returncode}:\n"
                           f"{proc.stderr[-4000:]}")
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"whisper_streaming printed no result:\n{proc.stderr[-4000:]}")
    data = json.loads(lines[-1])
    words = [(w["text"], w["end"], w["latency"]) for w in data["words"]]
    return PeerResult(word_latency=[w[2] for w in words], text=data["text"],
                      wall_s=data["wall_s"], audio_s=data["audio_s"], words=words,
                      finish_words=data["finish_words"],
                      iterations=[(i[0], i[1]) for i in data["iterations"]])


def _child(spec: dict[str, Any]) -> None:
    """The peer's simulation loop (whisper_online.py __main__, online mode), instrumented."""
    result_out = sys.stdout
    # Anything the peer or its libraries print must not land in the JSON line.
    sys.stdout = sys.stderr
    # bench/ is sys.path[0] here and holds modules named asr, common, ...: keep them from
    # shadowing whatever the peer or its dependencies import.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE.parent]
    sys.path.insert(0, spec["peer"])
    import whisper_online as wo

    threads = int(spec["threads"])
    min_chunk = float(spec["min_chunk"])
    audio_path = spec["audio"]

    class CpuFasterWhisperASR(wo.FasterWhisperASR):  # type: ignore[misc,name-defined]
        # The peer's load_model hard-codes CUDA float16; only the device, precision and thread
        # count change here, transcribe (beam 5, word timestamps, prompt) stays the peer's.
        def load_model(self, modelsize: str | None = None, cache_dir: str | None = None,
                       model_dir: str | None = None) -> Any:
            from faster_whisper import WhisperModel

            return WhisperModel(model_dir, device="cpu", compute_type="int8",
                                cpu_threads=threads, local_files_only=True)

    duration = len(wo.load_audio(audio_path)) / SAMPLING_RATE  # librosa, 16 kHz, mono mixdown
    asr = CpuFasterWhisperASR(lan=spec["language"], model_dir=spec["model_dir"])
    online = wo.OnlineASRProcessor(asr, None, buffer_trimming=BUFFER_TRIMMING)
    # As the peer does before its timer starts: the first transcribe is much slower.
    asr.transcribe(wo.load_audio_chunk(audio_path, 0, 1))

    words: list[dict[str, Any]] = []
    iterations: list[tuple[float, float]] = []

    def emit(new: list[tuple[float, float, str]], now: float) -> None:
        # The peer's word timestamps are already absolute (buffer offset added on insert).
        words.extend({"text": t, "end": e, "latency": now - e} for _, e, t in new)

    # The peer times with time.time(); monotonic measures the same span without clock steps.
    start = time.monotonic()
    beg = end = 0.0
    while True:
        now = time.monotonic() - start
        if now < end + min_chunk:
            time.sleep(min_chunk + end - now)
        end = time.monotonic() - start
        online.insert_audio_chunk(wo.load_audio_chunk(audio_path, beg, end))
        beg = end
        n = len(online.commited)
        t = time.monotonic()
        try:
            online.process_iter()
        except AssertionError as e:  # the peer logs these and carries on, emitting nothing
            print(f"assertion error: {e}", file=sys.stderr)
        else:
            # process_iter returns only the joined text; its words are what it appended here.
            emit(online.commited[n:], time.monotonic() - start)
        iterations.append((end, time.monotonic() - t))
        if end >= duration:
            break
    tail = list(online.transcript_buffer.complete())  # what finish() flushes, as words
    online.finish()
    wall = time.monotonic() - start
    emit(tail, wall)

    text = "".join(w["text"] for w in words).strip()  # faster-whisper words carry their spaces
    for w in words:
        w["text"] = w["text"].strip()
    print(json.dumps({"words": words, "text": text, "wall_s": wall, "audio_s": duration,
                      "finish_words": len(tail), "iterations": iterations}),
          file=result_out, flush=True)


def _reference(audio: Path) -> str | None:
    """A reference transcript bench/asr.py knows for this file, if any."""
    from asr import CASES, stm_text  # bench/asr.py

    for name, _, ref, _ in CASES:
        if audio.resolve() == (AUDIO / name).resolve():
            if ref is None and audio.with_suffix(".stm").is_file():
                return stm_text(audio.with_suffix(".stm"))
            return ref
    return stm_text(audio.with_suffix(".stm")) if audio.with_suffix(".stm").is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peer", type=Path, help="a whisper_streaming checkout")
    parser.add_argument("--file", default="pyannote/sample.wav")
    parser.add_argument("--language", default="en")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-chunk", type=float, default=1.0, help="seconds")
    parser.add_argument("--model-dir", help="default: callwise's Whisper base folder")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(json.loads(args.child))
        return
    if args.peer is None:
        parser.error("--peer DIR is required")

    audio = Path(args.file) if Path(args.file).exists() else AUDIO / args.file
    if not audio.exists():
        require_shared()
        sys.exit(f"bench: {audio} is missing")
    model_dir = args.model_dir
    if model_dir is None:
        from speech.models import ModelRegistry
        from speech.settings import SpeechSettings

        model_dir = str(ModelRegistry(SpeechSettings()).whisper())
    print(f"machine: {machine()}")
    print(f"peer: whisper_streaming at {args.peer} (LocalAgreement-2, min chunk "
          f"{args.min_chunk:g} s, segment trimming {BUFFER_TRIMMING[1]:g} s)")
    print(f"model: {model_dir} (cpu, int8, {args.threads} threads, beam 5)")
    r = run_peer(args.peer, audio, args.language, model_dir, args.threads, args.min_chunk)
    lat = r.word_latency
    print(f"audio: {audio.name}, {r.audio_s:.1f} s; wall {r.wall_s:.1f} s")
    steps = ", ".join(f"{fed:.1f}:{s:.1f}" for fed, s in r.iterations)
    print(f"{len(r.iterations)} iterations (audio fed s: compute s): {steps}")
    if lat:
        print(f"word latency over {len(lat)} words: p50 {percentile(lat, 50):.2f} s, "
              f"p95 {percentile(lat, 95):.2f} s, max {max(lat):.2f} s, min {min(lat):.2f} s; "
              f"{r.finish_words} of the words only from finish()")
    else:
        print("no words committed")
    print(f"text: {r.text[:300]}")
    ref = _reference(audio) if args.language == "en" else None
    if ref:
        from asr import errors  # bench/asr.py

        e, n = errors("en", ref, r.text)
        print(f"WER {e / n:.3f} ({n} reference words)")


if __name__ == "__main__":
    from common import AUDIO, machine, percentile, require_shared

    main()
