import audioop  # stdlib G.711 reference (3.11); an independent oracle for our tables

import numpy as np
import pytest

from speech.codecs import (
    StreamResampler,
    decode_alaw,
    decode_mulaw,
    decode_pcm16,
    encode_mulaw,
    resample,
)
from speech.errors import AudioFormatError


def test_g711_tables_match_the_reference_decoder():
    codes = bytes(range(256))
    assert decode_mulaw(codes).tobytes() == audioop.ulaw2lin(codes, 2)
    assert decode_alaw(codes).tobytes() == audioop.alaw2lin(codes, 2)


def test_mulaw_encoder_matches_the_reference_encoder():
    pcm = np.linspace(-32768, 32767, 5000).astype(np.int16)
    assert encode_mulaw(pcm) == audioop.lin2ulaw(pcm.tobytes(), 2)


def test_pcm16_rejects_a_torn_frame():
    with pytest.raises(AudioFormatError, match="not a whole number"):
        decode_pcm16(b"\x00\x01\x02", channels=1)
    assert decode_pcm16(b"\x01\x00\xff\xff").ravel().tolist() == [1, -1]


@pytest.mark.parametrize("rate,chunk", [(8000, 160), (44100, 1000), (48000, 960), (22050, 333)])
def test_streaming_resampler_equals_resampling_the_whole_signal(rate, chunk):
    t = np.arange(rate * 2) / rate
    signal = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3000 * t)).astype(
        np.float32)
    whole = resample(signal, rate)
    stream = StreamResampler(rate)
    pieces = [stream(signal[i : i + chunk]) for i in range(0, len(signal), chunk)]
    pieces.append(stream.flush())
    streamed = np.concatenate(pieces)
    assert len(streamed) == len(whole)
    assert np.abs(streamed - whole).max() < 1e-4
