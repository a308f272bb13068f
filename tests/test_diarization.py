"""Who spoke when: the streaming diarizer on a real call, channels of stereo calls, roles."""

import json

from pyannote.core import Annotation, Segment
from pyannote.metrics.diarization import DiarizationErrorRate

from speech import CallConfig, RoleConfig
from speech.audio_file import load_audio
from speech.diarization import StreamingDiarizer
from speech.replay import replay, transcribe_file

from .conftest import FIXTURES, shared_audio

DEMO = json.loads((FIXTURES / "calls" / "demo_call.json").read_text())


def _rttm(path, uri):
    ann = Annotation(uri=uri)
    for line in path.read_text().splitlines():
        f = line.split()
        ann[Segment(float(f[3]), float(f[3]) + float(f[4]))] = f[7]
    return ann


def test_streaming_der_on_the_pyannote_sample_call(speech_models):
    wav = shared_audio("pyannote/sample.wav")
    audio = load_audio(wav).to_16k().samples[0]
    diarizer = StreamingDiarizer(speech_models.diarization)
    for i in range(0, len(audio), 320):
        diarizer.accept(audio[i : i + 320])
    diarizer.flush()
    der = DiarizationErrorRate()(_rttm(wav.with_suffix(".rttm"), "sample"),
                                 diarizer.annotation("sample"))
    assert der <= 0.10
    assert diarizer.speakers == ["S1", "S2"]


async def test_stereo_calls_are_diarized_by_channel_exactly(speech_models):
    t = await transcribe_file(shared_audio("faster-whisper/stereo_diarization.wav"), speech_models)
    left = " ".join(s.text for s in t.segments if s.speaker == "ch1").lower()
    right = " ".join(s.text for s in t.segments if s.speaker == "ch2").lower()
    assert "wizard" in left and "curtain" in left and "horizon" not in left
    assert "horizon" in right and "wizard" not in right
    assert {s.role for s in t.segments} == {"agent", "customer"}


async def test_stereo_demo_call_roles_follow_the_channel_map(speech_models):
    t = await transcribe_file(FIXTURES / "calls" / "demo_call_stereo.flac", speech_models)
    turns = DEMO["turns"]
    for seg in t.segments:
        # Each segment lies inside a scripted turn of the role its channel carries.
        owner = next(x for x in turns if x["start"] - 0.3 <= seg.start <= x["end"])
        assert owner["role"] == seg.role
    assert next(s.role for s in t.segments) == "agent"


async def test_mono_call_speakers_are_stable_and_roles_follow_the_first_speaker_rule(
        speech_models):
    clip = load_audio(FIXTURES / "calls" / "demo_call_mono.flac")
    config = CallConfig(roles=RoleConfig(first_speaker="agent"))
    t = await replay(clip, speech_models, config)
    assert {s.speaker for s in t.segments} == {"S1", "S2"}
    for seg in t.segments:
        owner = next(x for x in DEMO["turns"] if x["start"] - 0.3 <= seg.start <= x["end"])
        assert seg.role == owner["role"], (seg, owner)


async def test_an_enrolled_agent_voice_decides_roles_and_unsure_means_unknown(speech_models):
    stereo = load_audio(FIXTURES / "calls" / "demo_call_stereo.flac").to_16k()
    first = DEMO["turns"][0]
    enrol = stereo.samples[0, int(first["start"] * 16000) : int(first["end"] * 16000)]
    voice = speech_models.diarization.embedding.embed(enrol)
    clip = load_audio(FIXTURES / "calls" / "demo_call_mono.flac")

    enrolled = await replay(clip, speech_models,
                            CallConfig(roles=RoleConfig(agent_voice=voice.tolist())))
    for seg in enrolled.segments:
        owner = next(x for x in DEMO["turns"] if x["start"] - 0.3 <= seg.start <= x["end"])
        assert seg.role == owner["role"]

    nobody = await replay(clip, speech_models, CallConfig())
    assert {s.role for s in nobody.segments} == {"unknown"}


def test_a_speaker_change_moves_to_the_sentence_end_next_to_it():
    from speech.call import _snap_to_sentences
    from speech.events import Word

    def run(speaker, *texts):
        return speaker, [Word(start=0, end=0, text=f" {t}") for t in texts]

    def shown(runs):
        return [(spk, " ".join(w.text.strip() for w in ws)) for spk, ws in runs]

    # The diarizer hands "Oh, I" to the speaker before; the sentence ended two words earlier.
    late = [run("S1", "what", "can", "I", "say?", "Oh,", "I"), run("S2", "don't", "hear", "that")]
    assert shown(_snap_to_sentences(late)) == [("S1", "what can I say?"),
                                               ("S2", "Oh, I don't hear that")]
    early = [run("S1", "so", "what", "can"), run("S2", "I", "say?", "Oh", "no.")]
    assert shown(_snap_to_sentences(early)) == [("S1", "so what can I say?"), ("S2", "Oh no.")]
    # No sentence end near the change: it stays where the diarizer put it.
    far = [run("S1", "one", "two", "three", "four."), run("S2", "five", "six", "seven", "eight")]
    assert shown(_snap_to_sentences(far)) == shown(far)
    # A short run between two changes is never swallowed by a move across it.
    three = [run("S1", "yes."), run("S2", "no"), run("S1", "maybe.", "later")]
    assert [spk for spk, _ in _snap_to_sentences(three)] == ["S1", "S2", "S1"]


async def test_a_mono_calls_guessed_lines_are_each_replaced_and_no_word_is_lost(speech_models):
    # The live runtime shows the diarizer's guess of who said which words at once, split where
    # it hears a change, then the settled speakers: every guessed line must be replaced by
    # settled lines of exactly its words, or the agent's screen would keep a stale line.
    clip = load_audio(shared_audio("pyannote/sample.wav"))
    config = CallConfig(layout="mono", provisional_finals=True)
    events = []

    async def sink(u):
        if u.final:
            events.append(u)

    await replay(clip, speech_models, config, sink=sink)
    guesses = {e.utterance_id: e for e in events if e.provisional}
    settled = [e for e in events if not e.provisional]
    assert guesses, "the diarizer never lagged the ASR: no guess to check"
    assert len(set(guesses)) == len([e for e in events if e.provisional])
    for gid, guess in guesses.items():
        parts = [e for e in settled if e.replaces == gid]
        assert parts, f"guess {gid} was never replaced"
        assert [w.text for p in parts for w in p.words] == [w.text for w in guess.words]
    assert all(e.replaces in guesses for e in settled if e.replaces)
    assert len({e.utterance_id for e in settled}) == len(settled)


def test_settled_parts_are_cut_where_the_guesses_were():
    from speech.call import _settle_guesses
    from speech.events import Utterance, Word

    def utt(uid, speaker, *texts, provisional=False):
        words = [Word(start=i, end=i + 0.5, text=f" {t}") for i, t in enumerate(texts)]
        return Utterance(call_id="c", utterance_id=uid, channel=0, final=True, start=0, end=9,
                         text=" ".join(texts), words=words, language="en", speaker=speaker,
                         provisional=provisional)

    # Guessed: "a b" | "c d e"; settled: "a b c" (S1) | "d e" (S2).
    guesses = [utt("u.p1", "S1", "a", "b", provisional=True),
               utt("u.p2", "S2", "c", "d", "e", provisional=True)]
    parts = [utt("u.1", "S1", "a", "b", "c"), utt("u.2", "S2", "d", "e")]
    out = _settle_guesses(parts, guesses)
    assert [(p.utterance_id, p.replaces, p.speaker, p.text) for p in out] == [
        ("u.p1", "u.p1", "S1", "a b"), ("u.p2.1", "u.p2", "S1", "c"),
        ("u.p2.2", "u.p2", "S2", "d e")]
    assert not any(p.provisional for p in out)
