"""Decoding is batched across calls: each utterance must come back to its own caller intact."""

import asyncio

from speech.asr import DecodeRequest
from speech.audio_file import load_audio

from .conftest import shared_audio


def _requests():
    files = [("wenet/librispeech-1995-1837-0001.wav", "en", 3.0),
             ("wenet/aishell-BAC009S0724W0121.wav", "zh", 50.0),
             ("faster-whisper/jfk.flac", "en", 120.5)]
    return [DecodeRequest(audio=load_audio(shared_audio(f)).to_16k().samples.mean(axis=0),
                          language=lang, offset=offset) for f, lang, offset in files]


def test_a_batch_returns_each_utterance_to_its_own_request(speech_models):
    engine = speech_models.asr.engine
    reqs = _requests()
    together = engine.transcribe_batch(reqs)
    alone = [engine.transcribe_batch([r])[0] for r in reqs]
    assert [[w.text for w in ws] for ws in together] == [[w.text for w in ws] for ws in alone]
    for req, words in zip(reqs, together, strict=True):
        assert req.offset <= words[0].start and words[-1].end <= req.offset + len(req.audio) / 16000
    assert "cotton" in "".join(w.text for w in together[0])
    assert "协会" in "".join(w.text for w in together[1])
    assert "country" in "".join(w.text for w in together[2])


async def test_concurrent_callers_share_one_worker(speech_models):
    reqs = _requests()
    results = await asyncio.gather(*(speech_models.asr.final(r) for r in reqs))
    assert "cotton" in "".join(w.text for w in results[0])
    assert "country" in "".join(w.text for w in results[2])


def test_auto_language_is_detected_per_utterance_not_per_batch(speech_models):
    # Mostly Mandarin in one batch: a batch-wide detection would say zh and turn the English
    # utterance into a Chinese "translation".
    files = ["wenet/librispeech-1995-1837-0001.wav", "wenet/aishell-BAC009S0724W0121.wav",
             "funasr/llama.cpp_tests_sample.wav"]
    reqs = [DecodeRequest(audio=load_audio(shared_audio(f)).to_16k().samples.mean(axis=0),
                          language=None) for f in files]
    words = speech_models.asr.engine.transcribe_batch(reqs)
    english = "".join(w.text for w in words[0]).lower()
    assert "cotton" in english and "sorrow" in english, english
    zh = "".join(w.text for w in words[1])
    assert "协会" in zh and "協" not in zh
    assert "有房" in "".join(w.text for w in words[2])
