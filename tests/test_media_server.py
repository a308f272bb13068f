"""The media server as a telephony gateway and a sidebar would use it: real websockets."""

import asyncio
import json

import numpy as np
import pytest
from websockets.asyncio.client import connect

from assist.media_server import MediaServer
from speech.audio_file import load_audio
from speech.codecs import resample

from .conftest import FIXTURES
from .twilio_frames import twilio_messages


@pytest.fixture
async def server(speech_models):
    app = MediaServer(speech_models)
    ws_server = await app.serve("127.0.0.1", 0)
    port = ws_server.sockets[0].getsockname()[1]
    yield app, f"ws://127.0.0.1:{port}"
    ws_server.close()
    await ws_server.wait_closed()


async def _collect(url, until_call_ended):
    events = []
    async with connect(url) as ws:
        async for message in ws:
            event = json.loads(message)
            events.append(event)
            if event["event"] == "call_ended" and until_call_ended:
                return events
    return events


async def test_a_twilio_call_streams_role_labelled_utterances(server):
    app, base = server
    clip = load_audio(FIXTURES / "calls" / "demo_call_stereo.flac")
    msgs = twilio_messages([clip.samples[1], clip.samples[0]], clip.sample_rate,
                           ["inbound", "outbound"])
    msgs.insert(400, "{not json")
    listener = asyncio.create_task(_collect(f"{base}/events?call_id=CA1", True))
    await asyncio.sleep(0.2)
    async with connect(f"{base}/twilio") as media:
        for i, m in enumerate(msgs):
            await media.send(m)
            if i % 100 == 0:
                await asyncio.sleep(0.01)
    events = await asyncio.wait_for(listener, 120)
    finals = [e for e in events if e["event"] == "utterance" and e["final"]]
    assert events[-1] == {"event": "call_ended", "call_id": "CA1", "utterances": len(finals),
                          "skipped_frames": 1}
    agent = " ".join(e["text"] for e in finals if e["role"] == "agent").lower()
    customer = " ".join(e["text"] for e in finals if e["role"] == "customer").lower()
    assert "harbor" in agent and "credit card" in customer
    assert app.calls["CA1"].ended and len(app.calls["CA1"].finals) == len(finals)


async def test_a_pcm_call_is_diarized_and_a_torn_frame_is_skipped(server):
    _, base = server
    clip = load_audio(FIXTURES / "calls" / "demo_call_mono.flac")
    pcm = (resample(clip.samples[0], clip.sample_rate) * 32767).astype("<i2")
    listener = asyncio.create_task(_collect(f"{base}/events?call_id=mono1", True))
    await asyncio.sleep(0.2)
    async with connect(f"{base}/pcm?rate=16000&call_id=mono1") as media:
        for i in range(0, len(pcm), 3200):
            await media.send(pcm[i : i + 3200].tobytes())
            if i == 3200 * 20:
                await media.send(b"\x01\x02\x03")  # half a sample: cannot be PCM16
        await media.send(json.dumps({"event": "stop"}))
    events = await asyncio.wait_for(listener, 120)
    finals = [e for e in events if e["event"] == "utterance" and e["final"]]
    assert events[-1]["skipped_frames"] == 1
    assert {e["speaker"] for e in finals} == {"S1", "S2"}
    text = " ".join(e["text"] for e in finals).lower()
    assert "harbor" in text and "credit card" in text and "thanks for your help" in text


async def test_an_unsupported_codec_closes_with_a_reason(server):
    _, base = server
    msgs = twilio_messages([np.zeros(800, np.float32)], 8000, ["inbound"],
                           encoding="audio/opus")
    async with connect(f"{base}/twilio") as media:
        await media.send(msgs[0])
        await media.send(msgs[1])
        with pytest.raises(Exception):  # noqa: B017 - the close is what we assert on below
            for _ in range(3):
                await asyncio.wait_for(media.recv(), 5)
        assert media.close_code == 1003 and "not supported" in media.close_reason
