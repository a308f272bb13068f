"""Media transports at the edge: a websocket carrying one call's audio, in and (later) out.

    TwilioTransport   Twilio Media Streams (connected/start/media/mark/dtmf/stop JSON messages)
    PcmTransport      raw little-endian 16-bit PCM frames, interleaved when stereo; a text
                      message {"event": "stop"} ends the call

Each `run()` reads its socket until the call ends, opens the call on the runtime when it knows
what the call is, feeds every decoded piece of audio to `CallSession.accept`, and always ends
the session (the words so far are kept) however the socket went away. The send side
(`send_audio`, `send_clear`, `send_mark`) is ready for the voice bot: it is what an outbound
call will play back through the same socket.

The sender is not trusted. Nothing it sends may end another call or the server: an unexpected
failure is logged (rate-limited) and closes this socket only, with 1011.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from core.ids import new_id
from speech import AudioFormatError, TwilioMediaStream
from speech.codecs import decode_pcm16, pcm16_to_float
from speech.twilio import WarningLimiter

from .runtime import CallInfo, CallRejected, CallSession, Runtime

log = logging.getLogger(__name__)

NORMAL, POLICY, UNSUPPORTED_DATA, INTERNAL_ERROR = 1000, 1008, 1003, 1011
MAX_REASON_BYTES = 123  # what a websocket close frame holds after its 2-byte code
PCM_RATES = (8_000, 192_000)
# query parameters of /pcm that describe the audio or carry the credential, not the call
PCM_AUDIO_PARAMS = frozenset({"rate", "channels", "token"})


def close_reason(text: str) -> str:
    """`text` cut to fit a close frame (123 bytes of UTF-8), never inside a character."""
    data = " ".join(str(text).split()).encode("utf-8")
    if len(data) <= MAX_REASON_BYTES:
        return data.decode("utf-8")
    return data[: MAX_REASON_BYTES - 3].decode("utf-8", errors="ignore") + "..."


async def close(ws: WebSocket, code: int, reason: str = "") -> None:
    """Close with a code and reason unless the socket is closed already; never raises."""
    if ws.application_state == WebSocketState.DISCONNECTED:
        return
    try:
        if ws.application_state == WebSocketState.CONNECTING:
            await ws.accept()
        await ws.close(code, close_reason(reason))
    except (RuntimeError, OSError, WebSocketDisconnect):
        pass


class ErrorLog:
    """Unexpected failures with their traceback, at most `burst` per `window_s`; the rest are
    counted and summarised, so a client that triggers a bug in a loop cannot flood the log."""

    def __init__(self, what: str, burst: int = 5, window_s: float = 60.0) -> None:
        self.what, self.burst, self.window_s = what, burst, window_s
        self._window_start = time.monotonic()
        self._logged = 0
        self._suppressed = 0

    def __call__(self, context: str) -> None:
        now = time.monotonic()
        if now - self._window_start >= self.window_s:
            if self._suppressed:
                log.error("%s: %d more failures in the last %.0f s (not shown)", self.what,
                          self._suppressed, now - self._window_start)
            self._window_start, self._logged, self._suppressed = now, 0, 0
        if self._logged < self.burst:
            self._logged += 1
            log.exception("%s: %s", self.what, context)
        else:
            self._suppressed += 1


media_errors = ErrorLog("media socket failed")


class CallRegistry:
    """The calls this process's media sockets have open, so shutdown can end what is left."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._live: dict[int, CallSession] = {}
        self._ending: dict[int, asyncio.Task[None]] = {}

    def add(self, session: CallSession) -> None:
        self._live[id(session)] = session

    def __len__(self) -> int:
        return len(self._live)

    async def end(self, session: CallSession, reason: str | None) -> None:
        """End the call once, even if the socket's task is cancelled while it finishes."""
        key = id(session)
        task = self._ending.get(key)
        if task is None:
            task = asyncio.create_task(self._end(key, session, reason),
                                       name=f"end-{session.info.call_id}")
            self._ending[key] = task
        await asyncio.shield(task)

    async def _end(self, key: int, session: CallSession, reason: str | None) -> None:
        try:
            # the runtime flushes the call, publishes call_ended and releases its id
            await self.runtime.end_call(session, reason)
        except Exception:
            media_errors(f"call {session.info.call_id}: ending it")
        finally:
            self._live.pop(key, None)
            self._ending.pop(key, None)

    async def end_all(self, reason: str) -> None:
        live = list(self._live.values())
        ending = list(self._ending.values())
        await asyncio.gather(*(self.end(s, reason) for s in live), *ending,
                             return_exceptions=True)


class _Transport:
    """What every media transport shares: its socket, a send lock, the call it carries."""

    kind = "media"

    def __init__(self, ws: WebSocket, calls: CallRegistry,
                 default_language: str | None = None) -> None:
        self.ws, self.calls, self.runtime = ws, calls, calls.runtime
        self.default_language = default_language
        self.session: CallSession | None = None
        self._send_lock = asyncio.Lock()

    async def send_text(self, text: str) -> None:
        async with self._send_lock:
            await self.ws.send_text(text)

    async def send_bytes(self, data: bytes) -> None:
        async with self._send_lock:
            await self.ws.send_bytes(data)

    async def _open(self, info: CallInfo) -> bool:
        """Open the call on the runtime; False (the socket closed with the reason) if refused."""
        try:
            self.session = await self.runtime.open_call(info)
        except CallRejected as exc:
            log.info("%s call %s refused: %s", self.kind, info.call_id, exc.reason)
            await close(self.ws, POLICY, exc.reason)
            return False
        self.calls.add(self.session)
        log.info("%s call %s started (%s)", self.kind, info.call_id, info.layout)
        return True

    async def run(self) -> None:
        reason: str | None = "media socket closed"
        try:
            reason = await self._receive()
        except WebSocketDisconnect:
            reason = "media socket closed"
        except asyncio.CancelledError:
            reason = "server shutting down"
            raise
        except Exception:
            call = self.session.info.call_id if self.session else "(not started)"
            media_errors(f"{self.kind} call {call}")
            reason = "internal error in the media handler"
            await close(self.ws, INTERNAL_ERROR, "internal error; the call was ended")
        finally:
            if self.session is not None:
                await self.calls.end(self.session, reason)
        await close(self.ws, NORMAL, "call ended")

    async def _receive(self) -> str | None:
        raise NotImplementedError


def _disconnect_reason(message: Mapping[str, Any]) -> str:
    code = message.get("code")
    if code == 1012:
        return "server shutting down"
    return "media socket closed"


class TwilioTransport(_Transport):
    """One Twilio Media Streams websocket: its messages in, and what we send back to Twilio."""

    kind = "twilio"

    def __init__(self, ws: WebSocket, calls: CallRegistry,
                 default_language: str | None = None) -> None:
        super().__init__(ws, calls, default_language)
        self.stream = TwilioMediaStream()
        self.stream_sid: str | None = None

    # ---- out: what the voice bot will use ------------------------------------------------
    async def send_audio(self, mulaw: bytes) -> None:
        """8 kHz G.711 mu-law for Twilio to play to the caller."""
        await self.send_text(json.dumps({
            "event": "media", "streamSid": self.stream_sid,
            "media": {"payload": base64.b64encode(mulaw).decode("ascii")}}))

    async def send_mark(self, name: str) -> None:
        """Twilio echoes the mark back once the audio sent before it has been played."""
        await self.send_text(json.dumps({"event": "mark", "streamSid": self.stream_sid,
                                         "mark": {"name": name}}))

    async def send_clear(self) -> None:
        """Drop the audio Twilio has buffered but not played yet (barge-in)."""
        await self.send_text(json.dumps({"event": "clear", "streamSid": self.stream_sid}))

    # ---- in ------------------------------------------------------------------------------
    async def _receive(self) -> str | None:
        stream = self.stream
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return _disconnect_reason(message)
            data = message.get("text")
            if data is None:
                data = message.get("bytes")
            if data is None:
                continue
            try:
                pieces = stream.handle(data)
            except AudioFormatError as exc:
                log.info("twilio stream refused: %s", exc)
                await close(self.ws, UNSUPPORTED_DATA, str(exc))
                return f"unsupported media: {close_reason(str(exc))}"
            if self.session is None and stream.start is not None:
                try:
                    info = self._call_info()
                except CallRejected as exc:  # bad customParameters: the call never opens
                    await close(self.ws, POLICY, exc.reason)
                    return None
                if not await self._open(info):
                    return None
            if self.session is not None:
                for piece in pieces:
                    self.session.accept(piece.channel, piece.samples, piece.sample_rate)
                self.session.skipped_frames = stream.skipped_frames
            if stream.stopped:
                return None

    def _call_info(self) -> CallInfo:
        start = self.stream.start
        assert start is not None
        self.stream_sid = start.streamSid
        params = dict(start.customParameters)
        call_id = params.get("call_id") or start.callSid or new_id("call-")
        return CallInfo.from_params(  # type: ignore[attr-defined, no-any-return]
            params, layout=self.stream.layout, call_id=call_id,
                                    default_language=self.default_language,
                                    channel_roles=self.stream.channel_roles)


class PcmTransport(_Transport):
    """One raw PCM websocket (`/pcm?rate=16000&channels=1&call_id=...`)."""

    kind = "pcm"

    def __init__(self, ws: WebSocket, calls: CallRegistry,
                 default_language: str | None = None) -> None:
        super().__init__(ws, calls, default_language)
        self.rate = 16_000
        self.channels = 1
        self.skipped_frames = 0
        self._skip_log = WarningLimiter("skipped a PCM frame")

    async def send_audio(self, pcm16: bytes) -> None:
        """Little-endian 16-bit PCM at the call's rate, to play to the other side."""
        await self.send_bytes(pcm16)

    async def send_clear(self) -> None:
        await self.send_text(json.dumps({"event": "clear"}))

    @staticmethod
    def audio_format(params: Mapping[str, str]) -> tuple[int, int]:
        """(rate, channels) from the query; ValueError saying what is wrong."""
        low, high = PCM_RATES
        raw_rate, raw_channels = params.get("rate", "16000"), params.get("channels", "1")
        if not (raw_rate.isascii() and raw_rate.isdigit() and len(raw_rate) <= 6
                and low <= int(raw_rate) <= high):
            raise ValueError(f"rate must be a whole number of Hz from {low} to {high}")
        if raw_channels not in ("1", "2"):
            raise ValueError("channels must be 1 or 2")
        return int(raw_rate), int(raw_channels)

    async def run(self) -> None:
        params = dict(self.ws.query_params)
        try:
            self.rate, self.channels = self.audio_format(params)
        except ValueError as exc:
            await close(self.ws, UNSUPPORTED_DATA, str(exc))
            return
        call_params = {k: v for k, v in params.items() if k not in PCM_AUDIO_PARAMS}
        try:
            info = CallInfo.from_params(  # type: ignore[attr-defined]
                call_params, layout="stereo" if self.channels == 2 else "mono",
                call_id=call_params.get("call_id") or new_id("pcm-"),
                default_language=self.default_language)
        except CallRejected as exc:
            await close(self.ws, POLICY, exc.reason)
            return
        if not await self._open(info):
            return
        await super().run()

    async def _receive(self) -> str | None:
        assert self.session is not None
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return _disconnect_reason(message)
            data = message.get("bytes")
            if data is None:
                if _is_stop(message.get("text")):
                    return None
                continue
            try:
                frames = pcm16_to_float(decode_pcm16(data, self.channels))
            except AudioFormatError as exc:
                self.skipped_frames += 1
                self.session.skipped_frames = self.skipped_frames
                self._skip_log(f"call {self.session.info.call_id}: ", str(exc))
                continue
            for ch in range(self.channels):
                self.session.accept(ch, np.ascontiguousarray(frames[:, ch]), self.rate)


def _is_stop(text: str | None) -> bool:
    if not text or len(text) > 1000:
        return False
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("event") == "stop"

