"""WER/CER of the streaming path vs faster-whisper off-line, same model, same files.

    python bench/asr.py

Off-line is faster-whisper's own `WhisperModel.transcribe` over the whole file (beam 5, its
default 30 s windows conditioned on previous text). Streaming is our live path (VAD endpoints,
one beam-5 decode per utterance) replayed from the file; its finals are what a live call gets.
Mandarin is scored as CER on simplified characters, both outputs converted the same way.
"silence" is the streaming path with utterances ended by silence alone (no end-of-turn model,
as with CALLWISE_END_OF_TURN=false): the end-of-turn model must not cost words.
"""

from __future__ import annotations

import asyncio
import re
import time
import warnings

from common import AUDIO, machine, require_shared

warnings.filterwarnings("ignore")

# (file, language, reference, where the reference comes from)
CASES = [
    ("wenet/librispeech-1995-1837-0001.wav", "en",
     "IT WAS THE FIRST GREAT SORROW OF HIS LIFE IT WAS NOT SO MUCH THE LOSS OF THE COTTON ITSELF "
     "BUT THE FANTASY THE HOPES THE DREAMS BUILT AROUND IT", "LibriSpeech human"),
    ("faster-whisper/jfk.flac", "en",
     "And so my fellow Americans ask not what your country can do for you, ask what you can do "
     "for your country.", "faster-whisper test"),
    ("pyannote/sample.wav", "en", None, "sample.stm human"),
    ("wenet/aishell-BAC009S0724W0121.wav", "zh", "广州市房地产中介协会分析", "AISHELL human"),
    ("funasr/llama.cpp_tests_sample.wav", "zh", "我想问我在滨海新区有房", "FunASR golden"),
]


def stm_text(path) -> str:  # type: ignore[no-untyped-def]
    rows = []
    for line in path.read_text().splitlines():
        f = line.split(maxsplit=5)
        rows.append((float(f[3]), f[5]))
    return " ".join(text for _, text in sorted(rows))


def norm_en(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def norm_zh(text: str) -> str:
    return re.sub(r"[^\w]", "", text)


def errors(lang: str, ref: str, hyp: str) -> tuple[int, int]:
    import jiwer

    if lang == "zh":
        r, h = " ".join(norm_zh(ref)), " ".join(norm_zh(hyp))
    else:
        r, h = norm_en(ref), norm_en(hyp)
    out = jiwer.process_words(r, h)
    return out.substitutions + out.deletions + out.insertions, len(r.split())


async def main() -> None:
    require_shared()
    from speech import CallConfig, SpeechModels, StreamingConfig
    from speech.asr import ZH_PROMPT, to_simplified
    from speech.audio_file import load_audio
    from speech.replay import replay

    models = SpeechModels.load(diarization=False)
    silence_only = SpeechModels(models.asr, None, None)
    engine = models.asr.engine
    print(f"machine: {machine()}")
    print(f"model: {engine.model_name} ({engine.device}, {engine.compute_type})")
    print(f"end of turn: {'Smart Turn v3.2' if models.turn else 'silence only'}")
    print(f"{'file':40} {'lang':4} {'offline':>8} {'stream':>8} {'silence':>8} {'ref words':>9}"
          "  reference")
    totals: dict[str, list[int]] = {}
    for name, lang, ref, source in CASES:
        path = AUDIO / name
        if ref is None:
            ref = stm_text(path.with_suffix(".stm"))
        clip = load_audio(path)
        mono = clip.to_16k().samples.mean(axis=0)
        segments, _ = engine.model.transcribe(
            mono, language=lang, beam_size=5, initial_prompt=ZH_PROMPT if lang == "zh" else None)
        offline = "".join(s.text for s in segments)
        if lang == "zh":
            offline = to_simplified(offline)
        config = CallConfig(layout="stereo",
                            streaming=StreamingConfig(language=lang))
        # One channel of the mono mix: the ASR path alone (diarization does not change words).
        from speech.audio_file import AudioClip

        t = await replay(AudioClip(mono[None], 16000), models, config)
        joiner = "" if lang == "zh" else " "
        streamed = joiner.join(s.text for s in t.segments)
        t = await replay(AudioClip(mono[None], 16000), silence_only, config)
        e_sil, _ = errors(lang, ref, joiner.join(s.text for s in t.segments))
        e_off, n = errors(lang, ref, offline)
        e_str, _ = errors(lang, ref, streamed)
        tot = totals.setdefault(lang, [0, 0, 0, 0])
        tot[0] += e_off
        tot[1] += e_str
        tot[2] += n
        tot[3] += e_sil
        print(f"{name:40} {lang:4} {e_off / n:8.3f} {e_str / n:8.3f} {e_sil / n:8.3f} {n:9d}  "
              f"{source}")
        print(f"    offline: {offline.strip()[:150]}")
        print(f"    stream : {streamed.strip()[:150]}")
    for lang, (e_off, e_str, n, e_sil) in totals.items():
        metric = "CER" if lang == "zh" else "WER"
        rel = (e_str - e_off) / e_off if e_off else float("inf") if e_str else 0.0
        unit = "chars" if lang == "zh" else "words"
        print(f"pooled {lang} {metric}: offline {e_off / n:.3f}, streaming {e_str / n:.3f} "
              f"(silence only {e_sil / n:.3f}), relative difference {rel:+.1%} ({n} reference "
              f"{unit})")
    models.close()


if __name__ == "__main__":
    t0 = time.time()
    asyncio.run(main())
    print(f"bench time {time.time() - t0:.0f} s")
