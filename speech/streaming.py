"""Streaming transcription of one channel: VAD endpointing, partial hypotheses, final utterances.

Final utterances are cut where the audio says (VAD endpoints), never where the clock or a busy
ASR happens to be, and each is decoded once with beam search; so a replayed call is cut exactly
like the live call and WER measured off-line is the live path's WER. Partials are best-effort:
a busy ASR skips them. One exception to "the audio decides": when audio stops arriving
altogether while an utterance is open (a stalled or half-open socket), the utterance is
finalized after `stall_timeout_s` of wall time, as if silence had followed; a replay that feeds
audio without pausing never meets it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable

import numpy as np
from pydantic import BaseModel, Field

from .agreement import LocalAgreement
from .asr import AsrService, DecodeRequest
from .codecs import TARGET_RATE
from .events import Utterance, Word
from .vad import FRAME, StreamingVad

log = logging.getLogger(__name__)
FRAME_S = FRAME / TARGET_RATE
EventSink = Callable[[Utterance], Awaitable[None]]
PARTIAL_QUIET_S = 0.12  # trailing silence past which no partial is started


class StreamingConfig(BaseModel):
    language: str | None = Field("en", description="zh or en; None auto-detects (slow, unsure)")
    speech_threshold: float = 0.5
    silence_threshold: float = 0.35
    min_silence: float = Field(0.5, description="silence that ends an utterance, seconds")
    min_silence_long: float = Field(
        0.15, description="silence that ends an utterance already `long_after` seconds long"
    )
    long_after: float = 4.0
    min_speech: float = Field(0.1, description="shorter bursts are noise, not speech")
    pad: float = Field(0.2, description="audio kept on both sides of detected speech")
    max_utterance: float = Field(15.0, description="cut at the quietest point past this length")
    partial_interval: float = Field(1.0, description="seconds of new speech per partial; 0: none")
    final_beam: int = 5
    partial_beam: int = 1
    initial_prompt: str | None = None
    stall_timeout_s: float = Field(
        1.2, ge=0, description="wall-clock seconds without any audio after which an open "
        "utterance is finalized as if silence had followed; 0: wait for the audio")


class StreamingTranscriber:
    """Feed 16 kHz float32 audio with `accept`; utterances go to `sink` in order."""

    def __init__(self, asr: AsrService, sink: EventSink, config: StreamingConfig,
                 call_id: str = "call", channel: int = 0) -> None:
        self.asr, self.sink, self.config = asr, sink, config
        self.call_id, self.channel = call_id, channel
        self.vad = StreamingVad()
        self._ids = itertools.count(1)
        self._audio = np.zeros(0, dtype=np.float32)  # from self._audio_start on
        self._audio_start = 0  # sample index of self._audio[0]
        self._frames_done = 0  # VAD frames processed so far
        # (frame end sample, VAD probability, arrival time) of each frame of the current utterance
        self._frames: list[tuple[int, float, float]] = []
        self._utt_start: int | None = None  # sample index where the current utterance starts
        self._last_voiced_end = 0  # sample index just past the last voiced frame
        self._voiced = 0  # voiced frames in the current utterance
        self._voiced_wallclock = 0.0
        self._utt_id = ""
        self._agreement = LocalAgreement()
        self._next_partial_at = 0
        self._partial_task: asyncio.Task[None] | None = None
        self._final_tail: asyncio.Task[None] | None = None
        self._last_audio_at = 0.0  # time.monotonic() of the last accept
        self._stall_timer: asyncio.TimerHandle | None = None
        self._stall_due = 0.0
        self.stalls = 0  # utterances finalized because audio stopped arriving
        self.samples_seen = 0

    # ---- input ---------------------------------------------------------------------------
    def accept(self, audio: np.ndarray) -> None:
        """Never blocks on the ASR: decoding runs in tasks; the caller keeps reading media."""
        now = time.monotonic()
        self._audio = np.concatenate([self._audio, audio.astype(np.float32, copy=False)])
        self.samples_seen += len(audio)
        for prob in self.vad(audio):
            self._on_frame(float(prob), now)
        if self._utt_start is None:
            # Idle: keep only the padding we may prepend to the next utterance, counted from the
            # frame the VAD has not seen yet, so chunk sizes never change where utterances start.
            pending = self.samples_seen - self._frames_done * FRAME
            keep = int(self.config.pad * TARGET_RATE) + pending
            keep_from = max(self._audio_start, self.samples_seen - keep)
            self._trim_to(keep_from)
        else:
            self._maybe_partial()
        self._last_audio_at = now
        self._arm_stall_timer()

    async def flush(self) -> None:
        """End of stream: finalize what is open and wait until every final is delivered."""
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        if self._utt_start is not None:
            self._finalize(self.samples_seen)
        if self._partial_task is not None:
            self._partial_task.cancel()
        if self._final_tail is not None:
            await self._final_tail

    # ---- stalled input -------------------------------------------------------------------
    def _arm_stall_timer(self) -> None:
        # One timer per stream, not one per frame: when it fires it checks how long ago the
        # last audio came and sleeps again for the rest of the timeout.
        timeout = self.config.stall_timeout_s
        if timeout <= 0 or self._utt_start is None or self._stall_timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # fed outside an event loop (a synchronous replay): nothing can stall
        self._schedule_stall_check(loop, timeout)

    def _schedule_stall_check(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        self._stall_due = time.monotonic() + delay
        self._stall_timer = loop.call_later(delay, self._on_stall_check, loop)

    def _on_stall_check(self, loop: asyncio.AbstractEventLoop) -> None:
        self._stall_timer = None
        if self._utt_start is None:
            return  # the audio closed the utterance; the next one re-arms the timer
        now = time.monotonic()
        timeout = self.config.stall_timeout_s
        idle = now - self._last_audio_at
        if idle < timeout:
            self._schedule_stall_check(loop, timeout - idle)
            return
        if now - self._stall_due > 0.25:
            # We fired late: the loop itself was blocked, and audio may be waiting to be read
            # behind us. Let it in before deciding the sender stalled.
            self._schedule_stall_check(loop, 0.05)
            return
        self.stalls += 1
        log.info("%s channel %d: no audio for %.1f s; finalizing the open utterance",
                 self.call_id, self.channel, idle)
        self._finalize(min(self.samples_seen,
                           self._last_voiced_end + int(self.config.pad * TARGET_RATE)))

    # ---- endpointing ---------------------------------------------------------------------
    def _on_frame(self, prob: float, now: float) -> None:
        cfg = self.config
        frame_start = self._frames_done * FRAME
        self._frames_done += 1
        frame_end = frame_start + FRAME
        if self._utt_start is None:
            if prob >= cfg.speech_threshold:
                self._open(max(self._audio_start, frame_start - int(cfg.pad * TARGET_RATE)))
                self._mark_voiced(frame_end, now)
            return
        self._frames.append((frame_end, prob, now))
        if prob >= cfg.silence_threshold:
            if prob >= cfg.speech_threshold or self._voiced:
                self._mark_voiced(frame_end, now)
        silence = (frame_end - self._last_voiced_end) / TARGET_RATE
        if silence >= self._required_silence(frame_end):
            self._finalize(min(frame_end, self._last_voiced_end + int(cfg.pad * TARGET_RATE)))
        elif (frame_end - self._utt_start) / TARGET_RATE >= cfg.max_utterance:
            self._cut_long_utterance(frame_end)

    def _required_silence(self, now: int) -> float:
        # People in a quick exchange leave short gaps; a long utterance takes a short pause as
        # its end, so finals keep coming during rapid back-and-forth instead of every 15 s.
        assert self._utt_start is not None
        length = (now - self._utt_start) / TARGET_RATE
        cfg = self.config
        if length <= cfg.long_after / 2:
            return cfg.min_silence
        if length >= cfg.long_after:
            return cfg.min_silence_long
        share = (length - cfg.long_after / 2) / (cfg.long_after / 2)
        return cfg.min_silence + share * (cfg.min_silence_long - cfg.min_silence)

    def _open(self, start: int) -> None:
        self._utt_start = start
        self._frames = []
        self._voiced = 0
        self._utt_id = f"{self.call_id}-c{self.channel}-u{next(self._ids)}"
        self._agreement = LocalAgreement()
        self._next_partial_at = start + int(self.config.partial_interval * TARGET_RATE)

    def _mark_voiced(self, frame_end: int, now: float) -> None:
        self._voiced += 1
        self._last_voiced_end = frame_end
        self._voiced_wallclock = now

    def _cut_long_utterance(self, frame_end: int) -> None:
        # Cut at the quietest frame of the last third, so a long turn splits between words.
        assert self._utt_start is not None
        frames = self._frames
        lo = len(frames) * 2 // 3
        if lo >= len(frames):
            self._finalize(frame_end, reopen=True)
            return
        quietest = min(frames[lo:], key=lambda f: f[1])
        self._finalize(quietest[0], reopen=True, wallclock=quietest[2])

    def _finalize(self, end: int, reopen: bool = False, wallclock: float | None = None) -> None:
        assert self._utt_start is not None
        start, utt_id, voiced = self._utt_start, self._utt_id, self._voiced
        wallclock = self._voiced_wallclock if wallclock is None else wallclock
        audio = self._slice(start, end)
        self._utt_start = None
        if self._partial_task is not None:
            self._partial_task.cancel()
            self._partial_task = None
        if reopen:
            tail = [f for f in self._frames if f[0] > end]
            self._open(end)
            self._frames = tail
            self._voiced = sum(p >= self.config.speech_threshold for _, p, _ in tail)
        self._trim_to(end)  # a reopened utterance starts at `end` too
        if voiced * FRAME_S < self.config.min_speech:
            return
        previous = self._final_tail
        self._final_tail = asyncio.ensure_future(
            self._decode_final(previous, utt_id, start, end, audio, wallclock)
        )

    # ---- decoding ------------------------------------------------------------------------
    async def _decode_final(self, previous: asyncio.Task[None] | None, utt_id: str, start: int,
                            end: int, audio: np.ndarray, wallclock: float) -> None:
        cfg = self.config
        request = DecodeRequest(audio=audio, language=cfg.language, offset=start / TARGET_RATE,
                                beam_size=cfg.final_beam, initial_prompt=cfg.initial_prompt)
        try:
            words = await self.asr.final(request)
        except ValueError as exc:
            # The request itself is refused (a bad language): no traceback per utterance.
            log.warning("final decode of %s refused: %.200s", utt_id, exc)
            words = []
        except Exception:
            # A failed decode loses the words but not the call, and the gap stays visible.
            log.exception("final decode of %s failed", utt_id)
            words = []
        if previous is not None:
            await previous  # finals leave in the order they were spoken
        if not words:
            return
        await self.sink(self._event(utt_id, words, final=True, start=start, end=end,
                                    wallclock=wallclock))

    @property
    def decoding_partial(self) -> bool:
        """A partial hypothesis is being decoded now (the next one waits for it)."""
        return self._partial_task is not None and not self._partial_task.done()

    def _maybe_partial(self) -> None:
        cfg = self.config
        if cfg.partial_interval <= 0 or self._utt_start is None:
            return
        if self.samples_seen < self._next_partial_at:
            return
        if self.decoding_partial:
            return  # the ASR is still on the previous one: skip rather than queue up
        if self.samples_seen - self._last_voiced_end > int(PARTIAL_QUIET_S * TARGET_RATE):
            # The speaker has paused: a partial now adds no words, and if the pause becomes the
            # endpoint, the final would wait behind it on the ASR worker.
            return
        self._next_partial_at = self.samples_seen + int(cfg.partial_interval * TARGET_RATE)
        start, end = self._utt_start, self.samples_seen
        request = DecodeRequest(audio=self._slice(start, end), language=cfg.language,
                                offset=start / TARGET_RATE, beam_size=cfg.partial_beam,
                                initial_prompt=cfg.initial_prompt)
        self._partial_task = asyncio.ensure_future(self._decode_partial(self._utt_id, request,
                                                                        start, end))

    async def _decode_partial(self, utt_id: str, request: DecodeRequest, start: int,
                              end: int) -> None:
        key = f"{self.call_id}/{self.channel}"
        try:
            words = await self.asr.partial(key, request)
        except Exception:
            log.exception("partial decode failed; the final will still come")
            return
        if not words or utt_id != self._utt_id or self._utt_start is None:
            return
        stable, _ = self._agreement.update(words)
        event = self._event(utt_id, words, final=False, start=start, end=end, wallclock=None)
        event.stable_text = join_words(stable, self.config.language)
        await self.sink(event)

    # ---- helpers -------------------------------------------------------------------------
    def _event(self, utt_id: str, words: list[Word], final: bool, start: int, end: int,
               wallclock: float | None) -> Utterance:
        return Utterance(
            call_id=self.call_id, utterance_id=utt_id, channel=self.channel, final=final,
            start=round(max(start / TARGET_RATE, words[0].start if final else 0), 3),
            end=round(min(end / TARGET_RATE, words[-1].end) if final else end / TARGET_RATE, 3),
            text=join_words(words, self.config.language), words=words,
            language=self.config.language or "auto", audio_end_wallclock=wallclock,
            emitted_wallclock=time.monotonic(),
        )

    def _slice(self, start: int, end: int) -> np.ndarray:
        a, b = start - self._audio_start, end - self._audio_start
        return self._audio[max(0, a) : max(0, b)].copy()

    def _trim_to(self, sample: int) -> None:
        drop = sample - self._audio_start
        if drop > 0:
            self._audio = self._audio[drop:]
            self._audio_start = sample


def join_words(words: list[Word], language: str | None) -> str:
    text = "".join(w.text for w in words).strip()
    return text if language == "zh" else " ".join(text.split())
