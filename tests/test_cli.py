"""The `callwise` command as a user runs it: a real process, real models."""

import json
import subprocess
import sys

import pytest

from speech.audio_file import load_audio

from .conftest import FIXTURES, ROOT, shared_audio
from .twilio_frames import twilio_messages


def callwise(*args, check=True):
    return subprocess.run([sys.executable, "-m", "callwise", *args], capture_output=True,
                          text=True, check=check, cwd=ROOT, timeout=600)


def test_transcribe_json_has_the_documented_shape():
    out = callwise("transcribe", str(FIXTURES / "calls" / "demo_call_stereo.flac"), "--json")
    data = json.loads(out.stdout)
    assert set(data) >= {"segments", "audio_seconds", "processing_seconds"}
    assert data["audio_seconds"] == pytest.approx(31.1, abs=0.1)
    assert data["processing_seconds"] > 0
    for seg in data["segments"]:
        assert set(seg) == {"start", "end", "speaker", "role", "text"}
        assert seg["role"] in ("agent", "customer") and seg["end"] > seg["start"]
    text = " ".join(s["text"] for s in data["segments"]).lower()
    assert "harbor bank" in text and "goodbye" in text


def test_transcribe_mandarin_file():
    wav = shared_audio("funasr/llama.cpp_tests_sample.wav")
    data = json.loads(callwise("transcribe", str(wav), "--language", "zh", "--speakers", "1",
                               "--json").stdout)
    text = "".join(s["text"] for s in data["segments"])
    assert "我想问" in text and "区有房" in text
    assert {s["speaker"] for s in data["segments"]} == {"S1"}


def test_a_recorded_twilio_stream_with_a_corrupt_frame_keeps_the_call(tmp_path):
    clip = load_audio(FIXTURES / "calls" / "demo_call_stereo.flac")
    # The customer is the caller (inbound); the agent is our side (outbound).
    msgs = twilio_messages([clip.samples[1], clip.samples[0]], clip.sample_rate,
                           ["inbound", "outbound"])
    frame = json.loads(msgs[300])
    frame["media"]["payload"] = "!!corrupt!!"
    msgs[300] = json.dumps(frame)
    capture = tmp_path / "call.jsonl"
    capture.write_text("\n".join(msgs) + "\n")
    data = json.loads(callwise("transcribe", str(capture), "--json").stdout)
    assert data["skipped_frames"] == 1
    by_role = {}
    for s in data["segments"]:
        by_role.setdefault(s["role"], []).append(s["text"].lower())
    assert any("harbor" in t for t in by_role["agent"])
    assert any("credit card" in t for t in by_role["customer"])


def test_bad_input_is_a_clear_error_not_a_traceback(tmp_path):
    bogus = tmp_path / "call.wav"
    bogus.write_bytes(b"definitely not audio" * 50)
    out = callwise("transcribe", str(bogus), check=False)
    assert out.returncode == 2
    assert "not a readable audio file" in out.stderr and "Traceback" not in out.stderr
    silent = tmp_path / "silent.wav"
    import numpy as np
    import soundfile as sf

    sf.write(silent, np.zeros(16000 * 3, dtype=np.float32), 16000)
    data = json.loads(callwise("transcribe", str(silent), "--json").stdout)
    assert data["segments"] == [] and data["audio_seconds"] == 3.0


def test_demo_prints_a_role_labelled_transcript():
    out = callwise("demo")
    lines = [line for line in out.stdout.splitlines() if line.startswith("[")]
    assert len(lines) >= 6
    assert lines[0].split()[3] == "agent"
    assert any(line.split()[3] == "customer" for line in lines)
    assert "real-time factor" in out.stdout


def test_realtime_replay_reports_latency_per_utterance():
    wav = shared_audio("faster-whisper/stereo_diarization.wav")
    out = callwise("transcribe", str(wav), "--realtime", "--json")
    data = json.loads(out.stdout)
    assert data["processing_seconds"] >= data["audio_seconds"] - 0.1  # it really took real time
    assert len(data["latency_seconds"]) == len(data["segments"]) >= 2
    # How small the latency is depends on the machine and its load: bench/realtime.py.
    assert all(0 < x < data["processing_seconds"] for x in data["latency_seconds"])
    # One figure per final word: from the end of the word in the audio to its final text.
    words = sum(len(s["text"].split()) for s in data["segments"])
    assert len(data["word_latency_seconds"]) == words
    assert all(0 < x < data["processing_seconds"] for x in data["word_latency_seconds"])
