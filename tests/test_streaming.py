"""The streaming path on real recordings and on our own synthesized calls."""

import asyncio
import itertools
import json
import logging
import re
import time

import jiwer
import numpy as np

from speech import CallConfig, StreamingConfig
from speech.audio_file import AudioClip, load_audio
from speech.codecs import TARGET_RATE
from speech.events import Word
from speech.streaming import StreamingTranscriber, _collapse_loops

from .conftest import FIXTURES, shared_audio


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


async def _stream(models, audio, config, pace=0.0, keep_up=False, turn=None, chunk=320):
    """keep_up: wait for each partial before more audio, as if the ASR were always fast
    enough; what a test checks then does not depend on this machine's speed or load."""
    events = []

    async def sink(u):
        events.append(u)

    t = StreamingTranscriber(models.asr, sink, config, turn=turn)
    for i in range(0, len(audio), chunk):
        t.accept(audio[i : i + chunk])
        if pace:
            await asyncio.sleep(pace)
        if keep_up:
            await asyncio.sleep(0)  # the worker sees the new audio and starts what is due
        while keep_up and t.decoding_partial:  # noqa: ASYNC110 (polls a flag of the real ASR)
            await asyncio.sleep(0.005)
    await t.flush()
    return events


async def test_english_finals_match_the_reference(speech_models):
    audio = load_audio(shared_audio("wenet/librispeech-1995-1837-0001.wav")).to_16k().samples[0]
    events = await _stream(speech_models, audio, StreamingConfig(language="en",
                                                                 partial_interval=0))
    finals = [e for e in events if e.final]
    ref = ("it was the first great sorrow of his life it was not so much the loss of the cotton "
           "itself but the fantasy the hopes the dreams built around it")
    hyp = _norm(" ".join(f.text for f in finals))
    assert jiwer.wer(ref, hyp) <= 0.1, hyp
    words = [w for f in finals for w in f.words]
    assert all(a.start <= b.start for a, b in itertools.pairwise(words))
    assert 0 <= words[0].start < 1.5 and 7 < words[-1].end <= 8.8


async def test_mandarin_comes_out_in_simplified_characters(speech_models):
    audio = load_audio(shared_audio("wenet/aishell-BAC009S0724W0121.wav")).to_16k().samples[0]
    events = await _stream(speech_models, audio, StreamingConfig(language="zh",
                                                                 partial_interval=0))
    text = "".join(e.text for e in events if e.final)
    hyp = re.sub(r"[^\w]", "", text)
    assert "廣" not in hyp and "產" not in hyp and "协会" in hyp
    assert jiwer.cer("广州市房地产中介协会分析", hyp) <= 0.35, hyp


async def test_silence_pause_splits_utterances_and_noise_makes_none(speech_models):
    clip = load_audio(FIXTURES / "calls" / "demo_call_stereo.flac").to_16k()
    agent = clip.samples[0]
    turns = json.loads((FIXTURES / "calls" / "demo_call.json").read_text())["turns"]
    first, third = turns[0], turns[2]
    a = agent[int(first["start"] * TARGET_RATE) : int(first["end"] * TARGET_RATE)]
    b = agent[int(third["start"] * TARGET_RATE) : int(third["end"] * TARGET_RATE)]
    rng = np.random.default_rng(0)
    hiss = (rng.standard_normal(TARGET_RATE * 2) * 0.002).astype(np.float32)
    audio = np.concatenate([hiss, a, np.zeros(TARGET_RATE, np.float32), b, hiss])
    events = await _stream(speech_models, audio, StreamingConfig(language="en",
                                                                 partial_interval=0))
    finals = [e for e in events if e.final]
    assert len(finals) >= 2
    assert "harbor" in _norm(finals[0].text).replace(" ", "")
    assert finals[0].end < 2 + len(a) / TARGET_RATE + 0.5 < finals[-1].start
    assert len({f.utterance_id for f in finals}) == len(finals)

    silent = await _stream(speech_models, hiss, StreamingConfig(language="en"))
    assert silent == []


async def test_partials_come_before_the_final_and_their_stable_prefix_only_grows(speech_models):
    audio = load_audio(shared_audio("faster-whisper/jfk.flac")).to_16k().samples.mean(axis=0)
    # 20 ms frames as a live call delivers them, with an ASR that keeps up (how fast partials
    # come on this CPU is a figure for bench/realtime.py, not a test).
    # (the test pauses the audio for the ASR: no wall-clock endpoint while it does)
    events = await _stream(speech_models, audio, StreamingConfig(language="en",
                                                                 partial_interval=1.0,
                                                                 stall_timeout_s=60),
                           keep_up=True)
    by_utt = {}
    for e in events:
        by_utt.setdefault(e.utterance_id, []).append(e)
    assert any(not e.final for e in events), "no partial hypothesis was emitted"
    for evs in by_utt.values():
        finals = [i for i, e in enumerate(evs) if e.final]
        assert finals == [len(evs) - 1], "exactly one final, after all partials"
        stable = [e.stable_text for e in evs[:-1]]
        for x, y in itertools.pairwise(stable):
            assert y.startswith(x)
    text = _norm(" ".join(e.text for e in events if e.final))
    ref = ("and so my fellow americans ask not what your country can do for you ask what you can "
           "do for your country")
    assert jiwer.wer(ref, text) <= 0.15, text


async def test_finals_do_not_depend_on_timing(speech_models):
    """Endpoints come from the audio alone, whatever the chunk sizes and the ASR's load."""
    from speech.replay import replay

    clip = load_audio(FIXTURES / "calls" / "demo_call_stereo.flac")
    config = CallConfig(layout="stereo")
    fast = await replay(clip, speech_models, config)
    paced = config.model_copy(deep=True)
    paced.streaming.partial_interval = 0.5
    # Partials on and audio arriving in bursts: the ASR is busier, the finals must not change.
    from speech import CallTranscriber

    call = CallTranscriber(speech_models, paced)
    for i in range(0, clip.samples.shape[1], 1600):
        for ch in range(2):
            call.accept(ch, clip.samples[ch, i : i + 1600], clip.sample_rate)
        await asyncio.sleep(0.01)
    finals = await call.finish()
    assert [(s.start, s.speaker, s.text) for s in fast.segments] == [
        (f.start, f.speaker, f.text) for f in finals]


async def test_committed_words_are_final_before_the_turn_ends_and_never_rewritten(
        speech_models):
    audio = load_audio(shared_audio("wenet/librispeech-1995-1837-0001.wav")).to_16k().samples[0]
    config = StreamingConfig(language="en", commit_words=True, partial_interval=1.0,
                             catch_up_after_s=0, stall_timeout_s=60)
    events = await _stream(speech_models, audio, config, keep_up=True)
    finals = [e for e in events if e.final]
    text = _norm(" ".join(f.text for f in finals))
    ref = ("it was the first great sorrow of his life it was not so much the loss of the cotton "
           "itself but the fantasy the hopes the dreams built around it")
    assert jiwer.wer(ref, text) <= 0.15, text
    final_text = {f.utterance_id: f.text for f in finals}
    early = [e for e in events if not e.final and e.stable_text]
    assert early, "no word was final before its utterance ended"
    for e in early:  # what was shown as final is exactly how the final text begins
        assert final_text[e.utterance_id].startswith(e.stable_text)
    first = finals[0].words[0]
    assert first.final_at is not None and first.final_at < finals[0].emitted_wallclock - 1.0


async def test_committed_words_do_not_depend_on_timing(speech_models):
    """Committing windows sit at positions in the audio: chunking and pacing change nothing."""
    from speech import CallTranscriber
    from speech.replay import replay

    stereo = load_audio(shared_audio("faster-whisper/jfk.flac"))  # the same voice twice
    clip = AudioClip(stereo.samples.mean(axis=0, keepdims=True), stereo.sample_rate)
    config = CallConfig(layout="stereo", streaming=StreamingConfig(
        language="en", commit_words=True, partial_interval=1.0, catch_up_after_s=0,
        stall_timeout_s=60))
    batch = await replay(clip, speech_models, config)
    call = CallTranscriber(speech_models, config)
    mono = clip.samples[0]
    for i in range(0, len(mono), 2400):
        call.accept(0, mono[i : i + 2400], clip.sample_rate)
        await asyncio.sleep(0.02)
    finals = await call.finish()
    assert [(s.start, s.text) for s in batch.segments] == [(f.start, f.text) for f in finals]


async def test_a_long_turn_is_cut_at_a_pause_and_loses_no_words(speech_models):
    audio = load_audio(shared_audio("wenet/librispeech-1995-1837-0001.wav")).to_16k().samples[0]
    config = StreamingConfig(language="en", partial_interval=0, max_utterance=3.0,
                             min_silence=5.0, min_silence_long=5.0)  # only the length cut acts
    finals = [e for e in await _stream(speech_models, audio, config) if e.final]
    assert len(finals) >= 3
    assert all(f.end - f.start <= 3.2 for f in finals)
    ref = ("it was the first great sorrow of his life it was not so much the loss of the cotton "
           "itself but the fantasy the hopes the dreams built around it")
    assert jiwer.wer(ref, _norm(" ".join(f.text for f in finals))) <= 0.25


async def test_a_card_number_read_out_keeps_every_digit(speech_models):
    # Whisper writes "4111 1111 1111 1111" read aloud as a run of "111"s: a run that long is
    # no loop to collapse, and the redactor has to see every digit of it.
    clip = load_audio(FIXTURES / "calls" / "offer_call_stereo.flac").to_16k()
    config = StreamingConfig(language="en", partial_interval=0)
    finals = [e for e in await _stream(speech_models, clip.samples[1], config) if e.final]
    card = next(f.text for f in finals if "card" in f.text)
    assert sum(ch.isdigit() for ch in card) >= 16, card


async def test_the_end_of_turn_model_ends_utterances_at_a_short_pause_whatever_the_timing(
        speech_models):
    # The agent's channel of our call: short sentences, each followed by a pause that silence
    # alone takes 0.5 s to call an end. The model's answers apply where they were asked, so
    # the cuts do not depend on chunk sizes or on how fast the model answered.
    agent = load_audio(FIXTURES / "calls" / "offer_call_stereo.flac").to_16k().samples[0]
    config = StreamingConfig(language="en", partial_interval=0)
    silence = [e for e in await _stream(speech_models, agent, config) if e.final]
    runs = [[e for e in await _stream(speech_models, agent, config, turn=speech_models.turn,
                                      chunk=chunk, pace=pace) if e.final]
            for chunk, pace in ((320, 0.0), (1600, 0.003))]
    # (A word's end can move by milliseconds with what else was in the ASR's batch.)
    cut = [(f.start, f.text, f.end_of_turn) for f in runs[0]]
    assert cut == [(f.start, f.text, f.end_of_turn) for f in runs[1]]
    assert all(f.end_of_turn is None for f in silence)
    ended = [f for f in runs[0] if f.end_of_turn is not None and f.end_of_turn > 0.5]
    assert ended, cut
    assert len(runs[0]) >= len(silence)
    spoken = _norm(" ".join(f.text for f in silence))
    assert jiwer.wer(spoken, _norm(" ".join(f.text for f in runs[0]))) <= 0.15


async def test_a_failing_end_of_turn_model_leaves_it_to_silence(speech_models, monkeypatch,
                                                               caplog):
    agent = load_audio(FIXTURES / "calls" / "offer_call_stereo.flac").to_16k().samples[0]
    config = StreamingConfig(language="en", partial_interval=0)
    silence = [e.text for e in await _stream(speech_models, agent, config) if e.final]

    def broken(audio, sample_rate=16_000):
        raise RuntimeError("onnxruntime: out of memory")

    monkeypatch.setattr(speech_models.turn, "predict", broken)
    with caplog.at_level(logging.ERROR):
        finals = [e for e in await _stream(speech_models, agent, config,
                                           turn=speech_models.turn) if e.final]
    assert [f.text for f in finals] == silence
    assert "end-of-turn model failed" in caplog.text


def test_a_word_looped_is_collapsed_but_a_number_is_kept():
    def words(texts):
        return [Word(start=i * 0.3, end=i * 0.3 + 0.2, text=f" {t}") for i, t in enumerate(texts)]

    looped = _collapse_loops(words(["country"] * 6 + ["roads"]))
    assert [w.text for w in looped] == [" country", " roads"]
    assert len(_collapse_loops(words(["no,", "no,", "no"]))) == 3
    for number in (["1111"] * 4, ["one"] * 8, ["幺"] * 5):
        assert len(_collapse_loops(words(number))) == len(number)


async def test_a_sender_that_stops_mid_sentence_still_gets_its_final(speech_models, caplog):
    """A half-open socket: audio stops arriving and no silence will ever end the sentence."""
    audio = load_audio(shared_audio("wenet/librispeech-1995-1837-0001.wav")).to_16k().samples[0]
    loud = np.flatnonzero(np.abs(audio) > 0.05 * np.abs(audio).max())
    audio = audio[: loud[-1] + 1]  # the recording stops inside its last word
    finals = []
    last = asyncio.Event()

    async def sink(u):
        if u.final:
            finals.append(u)
            if "around" in _norm(u.text):
                last.set()

    config = StreamingConfig(language="en", partial_interval=0, stall_timeout_s=1.0)
    t = StreamingTranscriber(speech_models.asr, sink, config)
    for i in range(0, len(audio), 320):
        t.accept(audio[i : i + 320])
    assert t._utt is not None, "the VAD ended the sentence: the test needs it open"
    busy, stopped, stopped_at = speech_models.asr.busy_seconds, time.monotonic(), time.time()
    with caplog.at_level(logging.INFO, logger="speech.streaming"):
        await asyncio.wait_for(last.wait(), timeout=60)  # no flush(): only the stall ends it
    waited = time.monotonic() - stopped
    decoding = speech_models.asr.busy_seconds - busy
    (stall,) = [r for r in caplog.records if "finalizing the open utterance" in r.getMessage()]
    # The endpoint is taken on the event loop's timer, about stall_timeout_s after the audio
    # stopped; the final then waits for the ASR (timed by the ASR: a slow machine is fair).
    assert stall.created - stopped_at <= config.stall_timeout_s + 1.0
    assert waited <= config.stall_timeout_s + decoding + 1.0, (waited, decoding)
    assert t.stalls == 1
    print(f"stall endpoint after {stall.created - stopped_at:.2f} s; final after {waited:.2f} s "
          f"({decoding:.2f} s of ASR work in that time)")
    ref = ("it was the first great sorrow of his life it was not so much the loss of the cotton "
           "itself but the fantasy the hopes the dreams built around it")
    assert jiwer.wer(ref, _norm(" ".join(f.text for f in finals))) <= 0.1
    count = len(finals)
    await t.flush()  # nothing is left open, and nothing is decoded twice
    assert len(finals) == count


async def test_audio_that_keeps_coming_is_never_taken_for_a_stall(speech_models):
    audio = load_audio(shared_audio("faster-whisper/jfk.flac")).to_16k().samples.mean(axis=0)
    config = StreamingConfig(language="en", partial_interval=0, stall_timeout_s=0.5)
    events = []

    async def sink(u):
        events.append(u)

    t = StreamingTranscriber(speech_models.asr, sink, config)
    for i in range(0, len(audio), 1600):  # 100 ms bursts, a burst every 50 ms: never idle long
        t.accept(audio[i : i + 1600])
        await asyncio.sleep(0.05)
    await t.flush()
    assert t.stalls == 0
