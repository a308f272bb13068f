import numpy as np
import pytest
import soundfile as sf

from speech.audio_file import load_audio
from speech.errors import AudioFormatError
from speech.replay import channel_layout

from .conftest import FIXTURES, shared_audio


@pytest.mark.parametrize("name,channels,rate", [
    ("faster-whisper/jfk.flac", 2, 44100),
    ("faster-whisper/hotwords.mp3", 2, 44100),
    ("pyannote/sample.wav", 1, 16000),
])
def test_reads_real_recordings(name, channels, rate):
    clip = load_audio(shared_audio(name))
    assert (clip.channels, clip.sample_rate) == (channels, rate)
    assert clip.duration > 3
    assert clip.to_16k().sample_rate == 16000


def test_stereo_with_the_same_signal_twice_is_treated_as_mono():
    assert channel_layout(load_audio(shared_audio("faster-whisper/jfk.flac"))) == "mono"
    assert channel_layout(load_audio(FIXTURES / "calls" / "demo_call_stereo.flac")) == "stereo"


def test_empty_and_garbage_files_are_clear_errors(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioFormatError, match="empty"):
        load_audio(empty)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x00\x00\x00\x00WAVEthis is not audio at all" * 10)
    with pytest.raises(AudioFormatError, match="not a readable audio file"):
        load_audio(garbage)
    with pytest.raises(AudioFormatError, match="no such file"):
        load_audio(tmp_path / "missing.wav")


def test_a_truncated_wav_keeps_the_audio_before_the_cut(tmp_path):
    audio = (np.sin(np.arange(16000 * 3) / 16000 * 2 * np.pi * 220) * 0.3).astype(np.float32)
    whole = tmp_path / "whole.wav"
    sf.write(whole, audio, 16000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # the header still promises three seconds
    clip = load_audio(cut)
    assert 1.3 < clip.duration < 1.7
    assert np.allclose(clip.samples[0, :1000], audio[:1000], atol=1e-3)
