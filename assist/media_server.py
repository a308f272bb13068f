"""Media ingress over websockets: Twilio Media Streams and raw PCM in, utterance events out.

    /twilio            Twilio <Stream> messages (connected/start/media/mark/stop); one call each
    /pcm?rate=16000&channels=1&language=en&call_id=...
                       binary frames of little-endian 16-bit PCM (interleaved when stereo);
                       a text frame {"event": "stop"} or closing the socket ends the call
    /events[?call_id=] every partial and final utterance of every call (or of one), as JSON

Plain HTTP requests (no websocket upgrade) go to the supervisor dashboard (campaigns.dashboard):
/dashboard, /api/campaigns, /api/campaigns/{id}/report; without a database those answer 503.

One process, one asyncio loop, the models loaded once and shared by all calls.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlparse

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from campaigns.dashboard import Dashboard, open_database
from campaigns.db import Database
from speech import (
    AudioFormatError,
    CallConfig,
    CallTranscriber,
    SpeechModels,
    StreamingConfig,
    TwilioMediaStream,
    Utterance,
)
from speech.codecs import decode_pcm16, pcm16_to_float

log = logging.getLogger(__name__)
UNSUPPORTED_DATA = 1003  # websocket close code: "I cannot take this kind of data"
WEBSOCKET_PATHS = ("/twilio", "/media", "/pcm", "/events")


@dataclass
class CallRecord:
    call_id: str
    finals: list[Utterance] = field(default_factory=list)
    skipped_frames: int = 0
    ended: bool = False


class MediaServer:
    def __init__(
        self, models: SpeechModels, language: str | None = "en", database: Database | None = None
    ) -> None:
        self.models, self.language = models, language
        self.calls: dict[str, CallRecord] = {}
        self._subscribers: set[tuple[ServerConnection, str | None]] = set()
        self.dashboard = Dashboard(database, WEBSOCKET_PATHS)

    async def serve(self, host: str = "127.0.0.1", port: int = 8765) -> Server:
        # one server for media and dashboard: the hook answers plain HTTP, upgrades go to _route
        return await serve(
            self._route, host, port, max_size=2**20, process_request=self.dashboard.process_request
        )

    async def _route(self, ws: ServerConnection) -> None:
        url = urlparse(ws.request.path if ws.request else "/")
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path in ("/twilio", "/media"):
            await self._twilio(ws)
        elif url.path == "/pcm":
            await self._pcm(ws, query)
        elif url.path == "/events":
            await self._events(ws, query.get("call_id"))
        else:
            await ws.close(1008, f"unknown path {url.path}; use /twilio, /pcm or /events")

    # ---- ingress -------------------------------------------------------------------------
    async def _twilio(self, ws: ServerConnection) -> None:
        stream = TwilioMediaStream()
        call: CallTranscriber | None = None
        record: CallRecord | None = None
        try:
            async for message in ws:
                try:
                    pieces = stream.handle(message)
                except AudioFormatError as exc:
                    await ws.close(UNSUPPORTED_DATA, str(exc)[:120])
                    break
                if call is None and stream.start is not None:
                    call_id = stream.start.callSid or stream.start.streamSid or f"call{id(ws)}"
                    config = self._config(call_id, stream.layout)
                    if stream.layout == "stereo":
                        config.roles.channel_roles = stream.channel_roles
                    call, record = self._open(config)
                if call is not None:
                    for piece in pieces:
                        call.accept(piece.channel, piece.samples, piece.sample_rate)
                    record.skipped_frames = stream.skipped_frames  # type: ignore[union-attr]
                if stream.stopped:
                    break
        except ConnectionClosed:
            log.info("media socket closed without a stop message; finishing the call")
        finally:
            if call is not None and record is not None:
                await self._close(call, record)

    async def _pcm(self, ws: ServerConnection, query: dict[str, str]) -> None:
        try:
            rate = int(query.get("rate", "16000"))
            channels = int(query.get("channels", "1"))
            if rate < 8000 or rate > 48000 or channels not in (1, 2):
                raise ValueError
        except ValueError:
            await ws.close(UNSUPPORTED_DATA, "rate must be 8000-48000 and channels 1 or 2")
            return
        config = self._config(query.get("call_id") or f"pcm{id(ws)}",
                              "stereo" if channels == 2 else "mono", query.get("language"))
        call, record = self._open(config)
        try:
            async for message in ws:
                if isinstance(message, str):
                    if _is_stop(message):
                        break
                    continue
                try:
                    frames = pcm16_to_float(decode_pcm16(message, channels))
                except AudioFormatError as exc:
                    record.skipped_frames += 1
                    log.warning("call %s: skipped a PCM frame: %s", config.call_id, exc)
                    continue
                for ch in range(channels):
                    call.accept(ch, np.ascontiguousarray(frames[:, ch]), rate)
        except ConnectionClosed:
            pass
        finally:
            await self._close(call, record)

    def _config(self, call_id: str, layout: str, language: str | None = None) -> CallConfig:
        lang = language or self.language
        return CallConfig(call_id=call_id, layout=layout,  # type: ignore[arg-type]
                          streaming=StreamingConfig(language=None if lang == "auto" else lang))

    def _open(self, config: CallConfig) -> tuple[CallTranscriber, CallRecord]:
        record = self.calls[config.call_id] = CallRecord(config.call_id)

        async def sink(u: Utterance) -> None:
            await self._publish(u)

        log.info("call %s started (%s)", config.call_id, config.layout)
        return CallTranscriber(self.models, config, sink), record

    async def _close(self, call: CallTranscriber, record: CallRecord) -> None:
        record.finals = await call.finish()
        record.ended = True
        await self._broadcast(record.call_id, {"event": "call_ended", "call_id": record.call_id,
                                               "utterances": len(record.finals),
                                               "skipped_frames": record.skipped_frames})
        log.info("call %s ended: %d utterances", record.call_id, len(record.finals))

    # ---- egress --------------------------------------------------------------------------
    async def _events(self, ws: ServerConnection, call_id: str | None) -> None:
        entry = (ws, call_id)
        self._subscribers.add(entry)
        try:
            await ws.wait_closed()
        finally:
            self._subscribers.discard(entry)

    async def _publish(self, u: Utterance) -> None:
        payload = {"event": "utterance", **u.model_dump(exclude={"audio_end_wallclock",
                                                                  "emitted_wallclock"})}
        await self._broadcast(u.call_id, payload)

    async def _broadcast(self, call_id: str, payload: dict) -> None:
        text = json.dumps(payload, ensure_ascii=False)
        for ws, wanted in list(self._subscribers):
            if wanted in (None, call_id):
                try:
                    await ws.send(text)
                except ConnectionClosed:
                    self._subscribers.discard((ws, wanted))


def _is_stop(message: str) -> bool:
    try:
        return json.loads(message).get("event") == "stop"
    except (ValueError, AttributeError):
        return False


async def run(host: str, port: int, language: str | None) -> None:
    models = SpeechModels.load()
    database = await open_database()
    server = MediaServer(models, language, database)
    async with await server.serve(host, port) as ws_server:
        log.warning(
            "callwise on ws://%s:%d (/twilio, /pcm, /events) and http://%s:%d/dashboard",
            host, port, host, port,
        )  # fmt: skip
        try:
            await ws_server.serve_forever()
        finally:
            models.close()
            if database is not None:
                await database.close()
