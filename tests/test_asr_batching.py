"""Decoding is batched across calls: each utterance must come back to its own caller intact."""

import asyncio
import logging
import re

import jiwer
import numpy as np
import pytest

from speech import StreamingConfig
from speech.asr import DecodeRequest, check_language
from speech.audio_file import load_audio
from speech.streaming import StreamingTranscriber

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


def test_check_language_normalises_codes_and_names_what_it_accepts():
    assert check_language(None) is None and check_language("auto") is None
    assert check_language(" AUTO ") is None and check_language("") is None
    assert check_language("EN") == "en" and check_language("zh") == "zh"
    for bad in ["xx", "english", "en-US", "zh_CN", "e" * 10_000]:
        with pytest.raises(ValueError, match=r"unknown language .*'auto'.*codes: af, am") as info:
            check_language(bad)
        assert len(str(info.value)) < 1_000
    with pytest.raises(ValueError, match=r"'english' \(did you mean 'en'\?\)"):
        check_language("english")
    with pytest.raises(ValueError, match="must be a string"):
        check_language(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"codes: en$"):
        check_language("zh", supported=["en"])  # what an English-only model knows


def test_a_request_that_breaks_its_batch_fails_alone(speech_models, caplog):
    engine = speech_models.asr.engine
    good = _requests()
    bad_language = DecodeRequest(audio=good[0].audio, language="xx")
    # Interleaved stereo where mono belongs, with the others' language, beam and prompt: it is
    # decoded in their very batch and breaks it.
    stereo = np.stack([good[2].audio, good[2].audio], axis=1)
    bad_audio = DecodeRequest(audio=stereo, language="en")
    with caplog.at_level(logging.WARNING, logger="speech.asr"):
        results = engine.transcribe_each([good[0], bad_language, bad_audio, good[2]])
    assert "decoding each request alone" in caplog.text
    assert isinstance(results[1], ValueError) and "unknown language 'xx'" in str(results[1])
    assert isinstance(results[2], Exception)
    alone = [engine.transcribe_batch([r])[0] for r in (good[0], good[2])]
    assert [[w.text for w in ws] for ws in (results[0], results[3])] == [
        [w.text for w in ws] for ws in alone]
    with pytest.raises(ValueError, match="unknown language"):
        engine.transcribe_batch([good[0], bad_language])


async def test_one_calls_bad_language_leaves_the_other_calls_transcript_intact(speech_models,
                                                                              monkeypatch):
    asr = speech_models.asr
    audio = load_audio(shared_audio("wenet/librispeech-1995-1837-0001.wav")).to_16k().samples[0]
    batches: list[list[str | None]] = []
    decode = asr.engine.transcribe_each

    def spy(requests):
        batches.append([r.language for r in requests])
        return decode(requests)

    monkeypatch.setattr(asr.engine, "transcribe_each", spy)
    finals: dict[str, list] = {"good": [], "bad": []}
    calls = {}
    for name, language in [("good", "en"), ("bad", "xx")]:
        async def sink(u, name=name):
            if u.final:
                finals[name].append(u)

        calls[name] = StreamingTranscriber(
            asr, sink, StreamingConfig(language=language, partial_interval=0, stall_timeout_s=0),
            call_id=name)
    # Hold the worker off until both calls' finals are queued: they must share a batch.
    with asr._lock:
        for i in range(0, len(audio), 320):
            for call in calls.values():
                call.accept(audio[i : i + 320])
        flushed = asyncio.gather(*(c.flush() for c in calls.values()))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if {r.language for r, _ in asr._finals} == {"en", "xx"}:
                break
        await asyncio.sleep(0.1)
    await flushed
    assert any({"en", "xx"} <= set(b) for b in batches), batches
    assert finals["bad"] == []
    ref = ("it was the first great sorrow of his life it was not so much the loss of the cotton "
           "itself but the fantasy the hopes the dreams built around it")
    hyp = " ".join(re.sub(r"[^\w\s']", " ", f.text.lower()) for f in finals["good"])
    assert jiwer.wer(ref, " ".join(hyp.split())) <= 0.1, hyp


def test_short_context_encodes_less_and_keeps_the_words(speech_models):
    from speech.asr import CONTEXT_MIN_S, context_frames

    # A short window is encoded in the floor context, a long one up to Whisper's 30 s.
    assert context_frames(2.0) == int(CONTEXT_MIN_S * 100)
    assert context_frames(12.5) == 1400  # 12.5 s + 1 s of silence, rounded up to 2 s steps
    assert context_frames(40.0) == 3000
    engine = speech_models.asr.engine
    audio = load_audio(shared_audio("wenet/librispeech-1995-1837-0001.wav")).to_16k().samples[0]
    full, short = (engine.transcribe_batch([DecodeRequest(audio=audio, language="en",
                                                          short_context=s)])[0]
                   for s in (False, True))
    assert engine.pipeline.context_frames == context_frames(len(audio) / 16000)
    ref = ("it was the first great sorrow of his life it was not so much the loss of the cotton "
           "itself but the fantasy the hopes the dreams built around it")
    for words in (full, short):
        hyp = " ".join(re.sub(r"[^\w\s']", " ", "".join(w.text for w in words).lower()).split())
        assert jiwer.wer(ref, hyp) <= 0.1, hyp
    # Both mixed in one queue: grouped apart, so each gets the context it asked for.
    mixed = engine.transcribe_batch([DecodeRequest(audio=audio, language="en"),
                                     DecodeRequest(audio=audio, language="en",
                                                   short_context=True)])
    assert [w.text for w in mixed[0]] == [w.text for w in full]
    assert [w.text for w in mixed[1]] == [w.text for w in short]


async def test_a_partial_kept_waiting_by_finals_rides_along_with_them(speech_models, monkeypatch):
    # A steady stream of finals (many calls) would starve a long turn's partials: the agent
    # would see nothing of it until its end. One that has waited rides along with the finals.
    import speech.asr as asr_module
    from speech.asr import AsrService

    monkeypatch.setattr(asr_module, "PARTIAL_STARVED_S", 0.0)
    engine = speech_models.asr.engine
    batches: list[int] = []
    transcribe_each = engine.transcribe_each

    def recorded(reqs):
        batches.append(len(reqs))
        return transcribe_each(reqs)

    monkeypatch.setattr(engine, "transcribe_each", recorded)
    service = AsrService(engine)
    try:
        short, _, jfk = _requests()
        long_final = jfk
        busy = asyncio.ensure_future(service.final(long_final))
        while not batches:  # noqa: ASYNC110 (the worker thread is decoding the first final)
            await asyncio.sleep(0.01)
        partial = asyncio.ensure_future(service.partial("call/0", jfk))
        finals = [asyncio.ensure_future(service.final(short)) for _ in range(2)]
        await asyncio.gather(busy, partial, *finals)
    finally:
        service.close()
    assert batches == [1, 3]
    assert "country" in "".join(w.text for w in partial.result())
