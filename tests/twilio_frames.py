"""Builds Twilio Media Streams messages from our own audio (what Twilio would send us)."""

from __future__ import annotations

import base64
import json

import numpy as np

from speech.codecs import encode_mulaw, resample


def twilio_messages(channels: list[np.ndarray], rate: int, tracks: list[str],
                    encoding: str = "audio/x-mulaw", call_sid: str = "CA1",
                    custom: dict[str, str] | None = None) -> list[str]:
    """float32 channels at `rate` -> connected, start, 20 ms media frames per track, stop."""
    eight_k = [np.clip(resample(c, rate, 8000) * 32767, -32768, 32767).astype(np.int16)
               for c in channels]
    msgs = [json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
            json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": "MZ1",
                        "start": {"streamSid": "MZ1", "callSid": call_sid, "tracks": tracks,
                                  "mediaFormat": {"encoding": encoding, "sampleRate": 8000,
                                                  "channels": 1},
                                  "customParameters": custom or {}}})]
    seq = 2
    for chunk, start in enumerate(range(0, len(eight_k[0]), 160)):
        for track, pcm in zip(tracks, eight_k, strict=True):
            payload = base64.b64encode(encode_mulaw(pcm[start : start + 160])).decode()
            msgs.append(json.dumps({"event": "media", "sequenceNumber": str(seq),
                                    "streamSid": "MZ1",
                                    "media": {"track": track, "chunk": str(chunk + 1),
                                              "timestamp": str(start // 8), "payload": payload}}))
            seq += 1
    msgs.append(json.dumps({"event": "stop", "sequenceNumber": str(seq), "streamSid": "MZ1",
                            "stop": {"accountSid": "AC1", "callSid": call_sid}}))
    return msgs
