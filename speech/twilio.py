"""Twilio Media Streams: the websocket messages (connected/start/media/mark/dtmf/stop) of one
call, decoded into per-track PCM.

Each media frame carries base64 G.711 audio of one track with a millisecond timestamp. Lost
frames leave a gap in timestamps; we fill it with silence so both tracks stay on the call's
clock. A frame we cannot decode is logged and skipped; the call goes on.

The sender is not trusted: no message it sends may end the call with a traceback, make us
invent much more audio than it sent, or write a log line per bad message.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError, field_validator

from .codecs import decode_alaw, decode_mulaw, decode_pcm16, pcm16_to_float
from .errors import AudioFormatError, FrameError
from .events import Role

log = logging.getLogger(__name__)
MAX_GAP_MS = 5_000  # a longer hole is a clock jump, not lost packets: do not invent minutes
# Padding is bounded by what the sender really sent: timestamps alone must not buy audio (a
# jump of 4.9 s per 20 ms frame would otherwise turn 44 KB of frames into 2,000 s to decode).
# All the silence padded in a stream stays within the real audio received plus this per track.
PAD_ALLOWANCE_MS = 1_000
MAX_TIMESTAMP_MS = 2**31 - 1  # about 24 days: Twilio ends a call after 24 hours
MIN_RATE, MAX_RATE = 8_000, 192_000  # below 8 kHz each byte would stand for more audio to decode
MAX_MARKS, MAX_MARK_NAME = 1_000, 256

DECODERS = {
    "audio/x-mulaw": decode_mulaw,
    "audio/x-alaw": decode_alaw,
    "audio/l16": lambda payload: decode_pcm16(payload, byteorder=">")[:, 0],
}


class MediaFormat(BaseModel):
    encoding: str
    sampleRate: int = 8000
    channels: int = 1

    @field_validator("sampleRate", mode="before")
    @classmethod
    def _whole_hz_in_range(cls, value: Any) -> int:
        return _sample_rate(value)


class StartInfo(BaseModel):
    streamSid: str | None = None
    callSid: str | None = None
    tracks: list[str] = Field(default_factory=lambda: ["inbound"])
    mediaFormat: MediaFormat
    customParameters: dict[str, str] = Field(default_factory=dict)

    @field_validator("tracks")
    @classmethod
    def _one_or_two_tracks(cls, tracks: list[str]) -> list[str]:
        # Each track becomes a transcribed channel: a start naming 1,000 would open 1,000.
        if not 1 <= len(tracks) <= 2 or len(set(tracks)) != len(tracks):
            raise ValueError(f"must name one or two distinct tracks, got {_clip(tracks)}")
        return tracks


class StartMessage(BaseModel):
    event: Literal["start"]
    start: StartInfo
    streamSid: str | None = None


class MediaPayload(BaseModel):
    track: str = "inbound"
    chunk: int | str | None = None
    timestamp: Any = None  # checked by _timestamp, which says what is wrong with it
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


class WarningLimiter:
    """Logs the first `burst` messages one by one, then one summary line per `every` more or per
    `interval` seconds, whichever comes first; `close` logs what is still unreported."""

    def __init__(self, what: str, level: int = logging.WARNING, burst: int = 10,
                 every: int = 1_000, interval: float = 10.0) -> None:
        self.what, self.level = what, level
        self.burst, self.every, self.interval = burst, every, interval
        self.count = 0
        self._unreported = 0
        self._last_reason = ""
        self._last_line = time.monotonic()

    def __call__(self, context: str, reason: str) -> None:
        self.count += 1
        if self.count <= self.burst:
            log.log(self.level, "%s%s: %s", context, self.what, reason)
            if self.count == self.burst:
                log.log(self.level, "%sfurther messages like this are summarised", context)
            self._last_line = time.monotonic()
            return
        self._unreported += 1
        self._last_reason = reason
        if self._unreported >= self.every or time.monotonic() - self._last_line >= self.interval:
            self._summary(context)

    def close(self, context: str) -> None:
        if self._unreported:
            self._summary(context)

    def _summary(self, context: str) -> None:
        log.log(self.level, "%s%s: %d more (%d in all), the last: %s", context, self.what,
                self._unreported, self.count, self._last_reason)
        self._unreported = 0
        self._last_line = time.monotonic()


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
        self.clock_jumps = 0  # timestamps that moved more than MAX_GAP_MS: re-anchored, unpadded
        self.padding_refused_ms = 0  # gap silence not inserted because of the padding budget
        self._decode = None
        self._next_ms: dict[str, int] = {}
        self._received: dict[str, int] = {}  # samples of real audio per track
        self._padded: dict[str, int] = {}  # samples of silence inserted per track
        self._skip_log = WarningLimiter("skipped a media stream message")
        self._clock_log = WarningLimiter("media clock", level=logging.INFO)
        self._event_log = WarningLimiter("ignoring a Twilio event", level=logging.INFO)

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
        """Audio the message carried. Raises AudioFormatError only for a first start message
        that we cannot take (codec, rate, layout); every other bad message is a counted skip."""
        try:
            data = json.loads(message)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            return self._skip(f"malformed message: {_clip(exc)}")
        event = data.get("event")
        if not isinstance(event, str):
            return self._skip(f"event is not a string: {_clip(event)}")
        if event == "start":
            if self.start is not None:
                # The call's channels and decoder are set up from the first start; switching
                # them mid-call would garble the transcript, so a repeat is only reported.
                return self._skip("a second start message was ignored: the stream has started "
                                  "and its codec and tracks cannot change mid-call")
            self._on_start(data)
            return []
        if event == "media":
            try:
                return self._on_media(MediaMessage.model_validate(data))
            except ValidationError as exc:
                return self._skip(f"bad media frame: {_describe(exc)}")
            except FrameError as exc:
                return self._skip(f"bad media frame: {_clip(exc)}")
        if event == "stop":
            self.stopped = True
            for limiter in (self._skip_log, self._clock_log, self._event_log):
                limiter.close(self._context())
        elif event == "mark":
            mark = data.get("mark")
            if not isinstance(mark, dict):
                return self._skip(f"mark message without a mark object: {_clip(mark)}")
            if len(self.marks) >= MAX_MARKS:
                del self.marks[0]
            self.marks.append(str(mark.get("name", ""))[:MAX_MARK_NAME])
        elif event not in ("connected", "dtmf"):
            self._event_log(self._context(), repr(event[:40]))
        return []

    def _on_start(self, data: dict[str, Any]) -> None:
        try:
            start = StartMessage.model_validate(data).start
        except ValidationError as exc:
            # Short: the server sends this as the close reason, which holds 123 bytes.
            raise AudioFormatError(f"bad start message: {_describe(exc, 'start')}") from None
        encoding = start.mediaFormat.encoding.lower()
        if encoding not in DECODERS:
            raise AudioFormatError(
                f"media encoding {_clip(start.mediaFormat.encoding)} is not supported "
                f"(supported: {', '.join(DECODERS)})"
            )
        if start.mediaFormat.channels != 1:
            raise AudioFormatError("each Twilio track must be mono; got "
                                   f"{_clip(start.mediaFormat.channels)} channels")
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
                raise FrameError(f"unknown track {_clip(track)}")
        stamp = _timestamp(msg.media.timestamp)
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
        duration = len(samples) * 1000 // rate
        expected = self._next_ms.get(track, 0)
        out = []
        if stamp is None:
            self._next_ms[track] = expected + duration
        # (A last frame shorter than a millisecond is new audio, not a repeat of none.)
        elif stamp + max(duration, 1) <= expected and expected - stamp <= MAX_GAP_MS + duration:
            raise FrameError(f"frame at {stamp} ms repeats audio already received")
        elif abs(stamp - expected) > MAX_GAP_MS:
            # Far ahead or far behind: the sender's clock jumped (or restarted). Follow it
            # without padding, or every frame after a jump back would look like a repeat.
            self.clock_jumps += 1
            self._clock_log(self._context(), f"track {track} jumped from {expected} ms to "
                            f"{stamp} ms; re-anchored without padding")
            self._next_ms[track] = stamp + duration
        else:
            gap = stamp - expected
            if gap > 0:
                out.append(self._padding(track, gap, rate, len(samples)))
            self._next_ms[track] = max(expected, stamp) + duration
        self._received[track] = self._received.get(track, 0) + len(samples)
        out.append(samples)
        channel = self.start.tracks.index(track)
        return [TrackAudio(channel=channel, track=track, samples=np.concatenate(out),
                           sample_rate=rate)]

    def _padding(self, track: str, gap_ms: int, rate: int, incoming: int) -> np.ndarray:
        wanted = gap_ms * rate // 1000
        # Counted over the whole stream, so a track that starts late (its first frame stamped
        # seconds in) is still aligned with the other track's audio.
        allowance = PAD_ALLOWANCE_MS * rate // 1000 * len(self.tracks)
        budget = (sum(self._received.values()) + incoming + allowance
                  - sum(self._padded.values()))
        pad = max(0, min(wanted, budget))
        if pad < wanted:
            self.padding_refused_ms += (wanted - pad) * 1000 // rate
            self._clock_log(self._context(), f"track {track} timestamps run ahead of its audio; "
                            f"padded {pad * 1000 // rate} of a {gap_ms} ms gap")
        self._padded[track] = self._padded.get(track, 0) + pad
        return np.zeros(pad, dtype=np.float32)

    def _skip(self, reason: str) -> list[TrackAudio]:
        self.skipped_frames += 1
        if len(self.errors) < 100:
            self.errors.append(reason)
        self._skip_log(self._context(), reason)
        return []

    def _context(self) -> str:
        sid = self.start and (self.start.callSid or self.start.streamSid)
        return f"call {_clip(sid, 40)}: " if sid else ""


def _sample_rate(value: Any) -> int:
    whole = None
    if isinstance(value, int) and not isinstance(value, bool):
        whole = value
    elif isinstance(value, float) and value.is_integer():
        whole = int(value)
    elif isinstance(value, str) and value.strip().isdigit() and len(value) < 10:
        whole = int(value)
    if whole is None or not MIN_RATE <= whole <= MAX_RATE:
        raise ValueError(f"must be a whole number of Hz from {MIN_RATE} to {MAX_RATE}, "
                         f"got {_clip(value, 20)}")
    return whole


def _timestamp(value: Any) -> int | None:
    if value is None:
        return None
    stamp = None
    if isinstance(value, int) and not isinstance(value, bool):
        stamp = value
    elif isinstance(value, str) and len(value) <= 12:
        try:
            stamp = int(value)
        except ValueError:
            stamp = None
    if stamp is None or not 0 <= stamp <= MAX_TIMESTAMP_MS:
        raise FrameError(f"timestamp must be a whole number of ms from 0 to {MAX_TIMESTAMP_MS}, "
                         f"got {_clip(value, 20)}")
    return stamp


def _describe(exc: ValidationError, under: str = "") -> str:
    """The first problem pydantic found, as `field.path: message` (its own text is multi-line);
    `under` is a leading field left out of the path."""
    errors = exc.errors(include_url=False)
    if not errors:
        return _clip(exc)
    first = errors[0]
    loc = list(first.get("loc", ()))
    if under and loc[:1] == [under] and len(loc) > 1:
        loc = loc[1:]
    where = ".".join(str(p) for p in loc)
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _clip(value: Any, limit: int = 60) -> str:
    """A short repr of what the sender sent: its messages may be megabytes long."""
    text = str(value).splitlines()[0] if isinstance(value, Exception) and str(value) else (
        type(value).__name__ if isinstance(value, Exception) else repr(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."
