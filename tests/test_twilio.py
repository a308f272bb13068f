import base64
import json
import logging

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


def test_a_last_frame_of_a_few_samples_is_kept_not_taken_for_a_repeat():
    # A recording rarely ends on a 20 ms boundary: its last frame can hold 4 samples (0 ms).
    tone = _tone(0.5)
    msgs = twilio_messages([np.concatenate([tone, tone[:4]])], 8000, ["inbound"])
    stream = TwilioMediaStream()
    audio = _feed(stream, msgs)
    assert stream.skipped_frames == 0
    assert len(audio[0]) == 4004


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


# ---- abuse: what a hostile or broken sender may send -------------------------------------------

def _start(encoding: str = "audio/x-mulaw", rate: object = 8000,
           tracks: list[str] | None = None) -> str:
    return json.dumps({"event": "start", "start": {
        "callSid": "CA1", "tracks": tracks or ["inbound"],
        "mediaFormat": {"encoding": encoding, "sampleRate": rate, "channels": 1}}})


def _media(timestamp: object, samples: int = 160, track: str = "inbound") -> str:
    payload = base64.b64encode(encode_mulaw(np.full(samples, 1000, np.int16))).decode()
    return json.dumps({"event": "media", "media": {"track": track, "timestamp": timestamp,
                                                   "payload": payload}})


@pytest.mark.parametrize("mark", ["x", [1, 2], 5, None, True])
def test_a_mark_that_is_not_an_object_is_a_counted_skip(mark):
    stream = TwilioMediaStream()
    stream.handle(_start())
    assert stream.handle(json.dumps({"event": "mark", "mark": mark})) == []
    stream.handle('{"event": "mark", "mark": {"name": "greeting-done"}}')
    assert stream.skipped_frames == 1 and "mark" in stream.errors[0]
    assert stream.marks == ["greeting-done"]


@pytest.mark.parametrize("rate", [0, -8000, 192_001, 10**12, 8000.5, "8k", "", None, True,
                                  [8000], {"hz": 8000}])
def test_an_impossible_sample_rate_is_a_clear_format_error(rate):
    stream = TwilioMediaStream()
    with pytest.raises(AudioFormatError, match=r"sampleRate: must be a whole number of Hz from "
                                                r"8000 to 192000") as info:
        stream.handle(_start(rate=rate))
    assert len(str(info.value)) <= 120  # it becomes the websocket close reason
    assert stream.start is None


@pytest.mark.parametrize("rate", [8000, "16000", 48000.0, 192_000])
def test_plausible_sample_rates_are_taken(rate):
    stream = TwilioMediaStream()
    stream.handle(_start(encoding="audio/l16", rate=rate))
    assert stream.start is not None and stream.start.mediaFormat.sampleRate == int(float(rate))


@pytest.mark.parametrize("tracks", [[], ["inbound", "inbound"], [f"t{i}" for i in range(3)]])
def test_a_start_must_name_one_or_two_distinct_tracks(tracks):
    start = json.loads(_start())
    start["start"]["tracks"] = tracks
    with pytest.raises(AudioFormatError, match="one or two distinct tracks"):
        TwilioMediaStream().handle(json.dumps(start))


def test_a_second_start_cannot_switch_codec_or_layout_mid_call():
    stream = TwilioMediaStream()
    stream.handle(_start())
    (before,) = stream.handle(_media("0"))
    stream.handle(_start(encoding="audio/x-alaw", rate=16000, tracks=["inbound", "outbound"]))
    assert stream.skipped_frames == 1 and "second start" in stream.errors[0]
    assert stream.layout == "mono" and stream.start.mediaFormat.encoding == "audio/x-mulaw"
    (after,) = stream.handle(_media("20"))
    assert after.sample_rate == 8000
    assert np.array_equal(after.samples, before.samples)  # still decoded as mu-law
    # A second start that is itself garbage is ignored the same way, never a format error.
    stream.handle(_start(rate=0))
    assert stream.skipped_frames == 2


def test_every_kind_of_garbage_frame_is_a_counted_skip():
    stream = TwilioMediaStream()
    stream.handle(_start())
    good = json.loads(_media("0"))
    garbage = [
        '{"event": "media", "media": "AAAA"}', '{"event": "media", "media": [1, 2]}',
        '{"event": "media", "media": {"payload": 5}}',
        '{"event": "media", "media": {"payload": ["AAAA"]}}',
        '{"event": "media", "media": {"payload": null}}',
        '{"event": 5}', '{"event": ["media"]}', "[" * 100_000,
    ]
    for stamp in [10**30, -20, "-20", 2**31, "1" * 5000, "soon", 20.5, True, [20], {"ms": 1}]:
        bad = json.loads(json.dumps(good))
        bad["media"]["timestamp"] = stamp
        garbage.append(json.dumps(bad))
    for g in garbage:
        assert stream.handle(g) == []
    assert stream.skipped_frames == len(garbage), stream.errors
    assert any("timestamp must be a whole number" in e for e in stream.errors)
    # And the call goes on.
    (piece,) = stream.handle(_media("0"))
    assert len(piece.samples) == 160


def test_a_clock_that_jumps_back_or_far_ahead_is_followed_not_frozen():
    stream = TwilioMediaStream()
    stream.handle(_start())
    out = []
    # A relay restarting its clock at 0 after 10 s: the frames after it are new audio, not
    # repeats of what came before.
    for stamp in [*range(10_000, 10_200, 20), *range(0, 200, 20)]:
        out += stream.handle(_media(str(stamp)))
    total = sum(len(p.samples) for p in out)
    assert total == 20 * 160 and stream.skipped_frames == 0 and stream.clock_jumps == 2


def test_timestamps_running_ahead_cannot_buy_padding():
    stream = TwilioMediaStream()
    stream.handle(_start())
    frames = 300
    produced = 0
    for i in range(frames):  # each 20 ms frame claims 4.9 s passed since the last one
        for piece in stream.handle(_media(str(i * 4_900))):
            produced += len(piece.samples)
    received = frames * 160
    # Unbounded, this was 300 gaps of 4.9 s: 1,470 s of silence (11.8 M samples) to decode.
    assert produced <= 2 * received + 8000, produced
    assert stream.padding_refused_ms > 1_000_000 and stream.skipped_frames == 0


def test_honest_losses_are_still_padded_in_full():
    stream = TwilioMediaStream()
    stream.handle(_start())
    out = [p for t in range(0, 2000, 20) for p in stream.handle(_media(str(t)))]
    out += stream.handle(_media("5000"))  # 3 s of frames lost after 2 s of call
    assert sum(len(p.samples) for p in out) == 101 * 160 + 3000 * 8
    assert stream.padding_refused_ms == 0


def test_a_track_that_starts_late_is_aligned_with_the_other():
    stream = TwilioMediaStream()
    stream.handle(_start(tracks=["inbound", "outbound"]))
    lengths = {0: 0, 1: 0}
    for t in range(0, 4000, 20):
        for track in ["inbound", "outbound"] if t >= 3000 else ["inbound"]:
            for piece in stream.handle(_media(str(t), track=track)):
                lengths[piece.channel] += len(piece.samples)
    assert lengths[0] == lengths[1] == 4000 * 8


def test_a_flood_of_bad_frames_writes_a_few_log_lines_and_counts_them_all(caplog):
    stream = TwilioMediaStream()
    stream.handle(_start())
    bad = json.dumps({"event": "media", "media": {"track": "inbound", "payload": "%%%"}})
    with caplog.at_level(logging.WARNING, logger="speech.twilio"):
        for _ in range(25_000):
            stream.handle(bad)
        stream.handle('{"event": "stop"}')
    lines = [r for r in caplog.records if r.name == "speech.twilio"]
    assert stream.skipped_frames == 25_000
    # 10 one by one, a note, then a summary per 1,000 (or per 10 s on a slow machine).
    assert 11 <= len(lines) <= 11 + 25 + 30, len(lines)
    assert "25000 in all" in lines[-1].getMessage()
    assert all("CA1" in r.getMessage() for r in lines)
