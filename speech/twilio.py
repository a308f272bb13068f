"""Twilio Media Streams: the websocket messages (connected/start/media/mark/dtmf/stop) of one
call, decoded into per-track PCM.

Each media frame carries base64 G.711 audio of one track with a millisecond timestamp. Lost
frames leave a gap in timestamps; we fill it with silence so both tracks stay on the call's
clock. A frame we cannot decode is logged and skipped; the call goes on.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from .codecs import decode_alaw, decode_mulaw, decode_pcm16, pcm16_to_float
from .errors import AudioFormatError, FrameError
from .events import Role

log = logging.getLogger(__name__)
MAX_GAP_MS = 5_000  # a longer hole is a clock jump, not lost packets: do not invent minutes

DECODERS = {
    "audio/x-mulaw": decode_mulaw,
    "audio/x-alaw": decode_alaw,
    "audio/l16": lambda payload: decode_pcm16(payload, byteorder=">")[:, 0],
}


class MediaFormat(BaseModel):
    encoding: str
    sampleRate: int = 8000
    channels: int = 1


class StartInfo(BaseModel):
    streamSid: str | None = None
    callSid: str | None = None
    tracks: list[str] = Field(default_factory=lambda: ["inbound"])
    mediaFormat: MediaFormat
    customParameters: dict[str, str] = Field(default_factory=dict)


class StartMessage(BaseModel):
    event: Literal["start"]
    start: StartInfo
    streamSid: str | None = None


class MediaPayload(BaseModel):
    track: str = "inbound"
    chunk: int | str | None = None
    timestamp: int | str | None = None
    payload: str


class MediaMessage(BaseModel):
    event: Literal["media"]
    media: MediaPayload
    sequenceNumber: int | str | None = None


class TrackAudio(BaseModel):
    model_config = {"arbitrary_types_allowed": True}
    channel: int
    track: str
    samples: np.ndarray
    sample_rate: int


class TwilioMediaStream:
    """Feed each websocket text message to `handle`; it returns the audio it carried."""

    # Inbound is what the caller's side says; outbound is what our side (agent or bot) plays.
    DEFAULT_TRACK_ROLES: ClassVar[dict[str, Role]] = {"inbound": "customer", "outbound": "agent"}

    def __init__(self, track_roles: dict[str, Role] | None = None) -> None:
        self.track_roles = track_roles or dict(self.DEFAULT_TRACK_ROLES)
        self.start: StartInfo | None = None
        self.stopped = False
        self.skipped_frames = 0
        self.errors: list[str] = []
        self.marks: list[str] = []
        self._decode = None
        self._next_ms: dict[str, int] = {}

    @property
    def tracks(self) -> list[str]:
        return self.start.tracks if self.start else []

    @property
    def layout(self) -> str:
        return "stereo" if len(self.tracks) > 1 else "mono"

    @property
    def channel_roles(self) -> list[Role]:
        return [self.track_roles.get(t, "unknown") for t in self.tracks]

    def handle(self, message: str | bytes) -> list[TrackAudio]:
        try:
            data = json.loads(message)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError) as exc:
            return self._skip(f"malformed message: {exc}")
        event = data.get("event")
        if event == "start":
            self._on_start(data)
            return []
        if event == "media":
            try:
                return self._on_media(MediaMessage.model_validate(data))
            except (ValidationError, FrameError) as exc:
                return self._skip(f"bad media frame: {_short(exc)}")
        if event == "stop":
            self.stopped = True
        elif event == "mark":
            self.marks.append(str((data.get("mark") or {}).get("name", "")))
        elif event not in ("connected", "dtmf"):
            log.info("ignoring Twilio event %r", event)
        return []

    def _on_start(self, data: dict) -> None:
        try:
            start = StartMessage.model_validate(data).start
        except ValidationError as exc:
            raise AudioFormatError(f"start message is malformed: {_short(exc)}") from None
        encoding = start.mediaFormat.encoding.lower()
        if encoding not in DECODERS:
            raise AudioFormatError(
                f"media encoding {start.mediaFormat.encoding!r} is not supported "
                f"(supported: {', '.join(DECODERS)})"
            )
        if start.mediaFormat.channels != 1:
            raise AudioFormatError("each Twilio track must be mono; got "
                                   f"{start.mediaFormat.channels} channels")
        self.start = start
        self._decode = DECODERS[encoding]

    def _on_media(self, msg: MediaMessage) -> list[TrackAudio]:
        if self.start is None or self._decode is None:
            raise FrameError("media before the start message")
        track = msg.media.track
        if track not in self.start.tracks:
            if len(self.start.tracks) == 1:
                track = self.start.tracks[0]  # some gateways omit or rename the only track
            else:
                raise FrameError(f"unknown track {track!r}")
        try:
            payload = base64.b64decode(msg.media.payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise FrameError(f"payload is not base64 ({exc})") from None
        if not payload:
            raise FrameError("empty payload")
        try:
            samples = pcm16_to_float(self._decode(payload))
        except AudioFormatError as exc:
            raise FrameError(str(exc)) from None
        rate = self.start.mediaFormat.sampleRate
        out = []
        stamp = _int_or_none(msg.media.timestamp)
        expected = self._next_ms.get(track, 0)
        if stamp is not None:
            if stamp + len(samples) * 1000 // rate <= expected:
                raise FrameError(f"frame at {stamp} ms repeats audio already received")
            gap = stamp - expected
            if 0 < gap <= MAX_GAP_MS:
                out.append(np.zeros(gap * rate // 1000, dtype=np.float32))
            self._next_ms[track] = max(expected, stamp) + len(samples) * 1000 // rate
        else:
            self._next_ms[track] = expected + len(samples) * 1000 // rate
        out.append(samples)
        channel = self.start.tracks.index(track)
        return [TrackAudio(channel=channel, track=track, samples=np.concatenate(out),
                           sample_rate=rate)]

    def _skip(self, reason: str) -> list[TrackAudio]:
        self.skipped_frames += 1
        if len(self.errors) < 100:
            self.errors.append(reason)
        log.warning("skipped a media stream message: %s", reason)
        return []


def _int_or_none(value: int | str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
