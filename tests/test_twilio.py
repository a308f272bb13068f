import base64
import json

import numpy as np
import pytest

from speech.codecs import encode_mulaw
from speech.errors import AudioFormatError
from speech.twilio import TwilioMediaStream

from .twilio_frames import twilio_messages


def _tone(seconds: float, rate: int = 8000, freq: float = 440) -> np.ndarray:
    return (0.3 * np.sin(np.arange(int(rate * seconds)) / rate * 2 * np.pi * freq)).astype(
        np.float32)


def _feed(stream, messages):
    out = {}
    for m in messages:
        for piece in stream.handle(m):
            out.setdefault(piece.channel, []).append(piece.samples)
    return {c: np.concatenate(v) for c, v in out.items()}


def test_two_tracks_decode_to_two_channels_with_roles():
    msgs = twilio_messages([_tone(1.0, freq=300), _tone(1.0, freq=600)], 8000,
                           ["inbound", "outbound"])
    stream = TwilioMediaStream()
    audio = _feed(stream, msgs)
    assert stream.layout == "stereo" and stream.stopped
    assert stream.channel_roles == ["customer", "agent"]
    assert len(audio[0]) == len(audio[1]) == 8000
    assert np.abs(audio[0] - _tone(1.0, freq=300)).max() < 0.02  # mu-law quantisation only


def test_corrupt_and_malformed_frames_are_skipped_and_the_rest_is_kept():
    msgs = twilio_messages([_tone(1.0)], 8000, ["inbound"])
    bad_b64 = json.loads(msgs[10])
    bad_b64["media"]["payload"] = "%%% not base64 %%%"
    msgs[10] = json.dumps(bad_b64)
    msgs.insert(20, "{this is not json")
    msgs.insert(21, json.dumps({"event": "media", "media": {"track": "inbound"}}))
    stream = TwilioMediaStream()
    audio = _feed(stream, msgs)
    assert stream.skipped_frames == 3
    assert any("base64" in e for e in stream.errors)
    # The lost frame becomes 20 ms of silence when the next frame's timestamp shows the gap.
    assert len(audio[0]) == 8000
    assert np.abs(audio[0][160 * 8 : 160 * 9]).max() == 0


def test_lost_frames_are_filled_with_silence_on_the_call_clock():
    msgs = twilio_messages([_tone(1.0)], 8000, ["inbound"])
    del msgs[12:17]  # five frames lost in transit
    audio = _feed(TwilioMediaStream(), msgs)
    assert len(audio[0]) == 8000


def test_repeated_frames_are_dropped():
    msgs = twilio_messages([_tone(0.5)], 8000, ["inbound"])
    msgs.insert(6, msgs[5])
    stream = TwilioMediaStream()
    audio = _feed(stream, msgs)
    assert len(audio[0]) == 4000 and stream.skipped_frames == 1


def test_unknown_codec_is_a_clear_error():
    msgs = twilio_messages([_tone(0.1)], 8000, ["inbound"], encoding="audio/opus")
    stream = TwilioMediaStream()
    stream.handle(msgs[0])
    with pytest.raises(AudioFormatError, match=r"audio/opus.*not supported"):
        stream.handle(msgs[1])


def test_alaw_streams_decode_too():
    stream = TwilioMediaStream()
    stream.handle(json.dumps({"event": "start", "start": {
        "tracks": ["inbound"], "mediaFormat": {"encoding": "audio/x-alaw", "sampleRate": 8000}}}))
    payload = base64.b64encode(bytes([0xD5] * 160)).decode()  # A-law code for near-zero
    (piece,) = stream.handle(json.dumps({"event": "media", "media": {
        "track": "inbound", "timestamp": "0", "payload": payload}}))
    assert len(piece.samples) == 160 and np.abs(piece.samples).max() < 0.001


def test_media_before_start_is_skipped_not_fatal():
    stream = TwilioMediaStream()
    payload = base64.b64encode(encode_mulaw(np.zeros(160, np.int16))).decode()
    assert stream.handle(json.dumps({"event": "media", "media": {"payload": payload}})) == []
    assert stream.skipped_frames == 1 and "before the start" in stream.errors[0]


def test_no_garbage_message_can_break_a_running_stream():
    rng = np.random.default_rng(7)
    msgs = twilio_messages([_tone(0.5)], 8000, ["inbound"])
    stream = TwilioMediaStream()
    stream.handle(msgs[1])  # a valid start
    garbage = [
        b"\xff\xfe\x00", "", "null", "[]", "42", '{"event": null}', '{"event": "media"}',
        '{"event": "media", "media": null}', '{"event": "media", "media": {"payload": 5}}',
        '{"event": "media", "media": {"payload": "", "track": "inbound"}}',
        '{"event": "media", "media": {"payload": "AAAA", "timestamp": "soon"}}',
        '{"event": "mark"}', '{"event": "dtmf", "dtmf": {"digit": "5"}}', '{"event": "weird"}',
    ] + [rng.bytes(int(rng.integers(1, 300))) for _ in range(200)]
    for g in garbage:
        for piece in stream.handle(g):  # never raises once the call has started
            assert piece.samples.dtype == np.float32
    audio = _feed(stream, msgs[2:])
    assert len(audio[0]) >= 4000 and stream.stopped
