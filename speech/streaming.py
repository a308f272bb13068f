"""Streaming transcription of one channel: VAD endpointing, partials, words final as they settle.

Utterances are cut where the audio says (VAD endpoints), never where the clock or a busy ASR
happens to be. While an utterance is spoken, its audio is decoded every `partial_interval`
seconds *of audio* (a window), in one of two modes:

- partials only (the default): each window is a greedy, best-effort partial of the utterance
  so far; at the endpoint the whole utterance is decoded once with beam search. The cheapest
  way to the best words: WER is that of the off-line decode.
- `commit_words`: a word two consecutive windows agree on is final at once (LocalAgreement-2,
  speech/agreement.py) and never rewritten, so a long turn does not hold its first words back
  until its end; at the endpoint only the rest is decoded. Each window is a beam search, and
  on our benches its words are worse than the whole utterance's (README, bench/realtime.py).

Every decision is taken at a position in the audio, never at a moment of the clock, and one
worker per utterance decodes its committing windows in order: a replayed call is cut and
committed exactly like the live call, however its audio was chunked, and WER measured off-line
is the live path's. Two deliberate exceptions, both for live calls: when audio stops arriving
while an utterance is open (a stalled or half-open socket), it is finalized after
`stall_timeout_s` of wall time; and when committing windows fall more than `catch_up_after_s`
behind the audio (an overloaded machine), the worker skips to the newest audio instead of
queueing decodes (fewer, longer windows: the calls keep up, at more latency per word). A replay
that feeds audio without pausing sets neither off.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, Field

from .agreement import LocalAgreement, _key
from .asr import ZH_PROMPT, AsrService, DecodeRequest
from .codecs import TARGET_RATE
from .end_of_turn import EndOfTurnModel
from .events import Utterance, Word
from .vad import FRAME, StreamingVad

log = logging.getLogger(__name__)
FRAME_S = FRAME / TARGET_RATE
EventSink = Callable[[Utterance], Awaitable[None]]
PARTIAL_QUIET_S = 0.12  # trailing silence past which no window is decoded: it adds no words
MAX_WINDOW_S = 20.0  # an undecided window this long commits its words: Whisper stops at 30 s
PROMPT_CHARS = 200
TRIM_AFTER_S = 8.0  # windows this long start again where the final words end
MIN_WINDOW_S = 1.0  # shortest audio decoded: Whisper hallucinates on clips under a second
# Words committed off a first window this short came out as loops ("Hello Hello") in our benches.
MIN_COMMIT_WINDOW_S = 2.0


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
    max_utterance: float = Field(15.0, description="a longer utterance is split (at the end of "
                                 "its final words, or at its quietest point without windows)")
    partial_interval: float = Field(
        1.0, ge=0, description="seconds of audio between decodes of an utterance still being "
        "spoken (windows): each shows a partial; 0: none, only finals (batch work)")
    commit_words: bool = Field(
        False, description="words two windows in a row agree on are final at once and never "
        "rewritten, instead of at the utterance's end: earlier final text for long turns, at "
        "the cost of a beam search per window and, on our benches, a higher WER (see README)")
    final_beam: int = 5
    partial_beam: int = Field(1, description="beam of windows that only show partials; "
                              "committing windows use `final_beam`")
    prompt_final_words: bool = Field(
        True, description="committing windows are prompted with the utterance's final words, "
        "so Whisper keeps the sentence's context across windows")
    initial_prompt: str | None = None
    short_context: bool = Field(
        True, description="windows encode only their audio plus a second of silence, not "
        "Whisper's 30 s: a fraction of the work per window; finals always get the full 30 s, "
        "whose words are a little better")
    end_of_turn_after: float = Field(
        0.2, ge=0, description="with the end-of-turn model loaded: silence after which it is "
        "asked whether the speaker is done; yes ends the utterance there, instead of after the "
        "`min_silence` a short utterance otherwise waits for; 0: silence alone decides "
        "(so does `commit_words`, whose windows were measured without it)")
    end_of_turn_min_speech: float = Field(
        1.0, description="voiced seconds an utterance needs before the end-of-turn model may "
        "end it: a shorter one (\"Hi.\", \"Yeah.\") decoded alone loses its sentence's context "
        "(WER on our benches) and Whisper is unreliable on clips under a second")
    stall_timeout_s: float = Field(
        1.2, ge=0, description="wall-clock seconds without any audio after which an open "
        "utterance is finalized as if silence had followed; 0: wait for the audio")
    catch_up_after_s: float = Field(
        1.5, ge=0, description="live calls: when the window decodes fall this many seconds of "
        "audio behind, skip to the newest audio (an overloaded ASR); 0: never skip, every "
        "window decoded (replays, reproducible runs)")


@dataclass
class _Open:
    """An utterance being spoken: its own audio as it arrives, and what its worker knows."""

    utt_id: str
    start: int  # sample index in the channel
    audio: np.ndarray  # samples from `start` on (capacity grows by doubling)
    size: int
    grew: asyncio.Event = field(default_factory=asyncio.Event)
    voiced_ends: list[int] = field(default_factory=list)  # end sample of each voiced frame
    end: int | None = None  # set when the endpoint is found
    wallclock: float = 0.0  # when its last voiced audio arrived
    noise: bool = False  # too little voiced audio to be speech
    final_words: list[Word] = field(default_factory=list)  # of the whole utterance, for prompts
    # The previous utterance's worker. Waiting for it before decoding would hold this turn's
    # windows behind the previous final's sink, which waits seconds for a mono call's speaker.
    previous: asyncio.Future[None] | None = None
    final_sent: bool = False
    end_of_turn: float | None = None  # the end-of-turn model's probability at its last pause

    async def after_previous(self) -> None:
        """Final events leave in the order the words were spoken."""
        if self.previous is not None:
            await self.previous

    @property
    def previous_done(self) -> bool:
        return self.previous is None or self.previous.done()

    @classmethod
    def of(cls, utt_id: str, start: int, audio: np.ndarray) -> _Open:
        buf = np.zeros(max(len(audio) * 2, TARGET_RATE * 4), dtype=np.float32)
        buf[: len(audio)] = audio
        return cls(utt_id, start, buf, len(audio))

    @property
    def available(self) -> int:
        return self.start + self.size

    def append(self, chunk: np.ndarray) -> None:
        if self.size + len(chunk) > len(self.audio):
            grown = np.zeros(max(len(self.audio) * 2, self.size + len(chunk)), np.float32)
            grown[: self.size] = self.audio[: self.size]
            self.audio = grown
        self.audio[self.size : self.size + len(chunk)] = chunk
        self.size += len(chunk)
        self.grew.set()

    def slice(self, a: int, b: int) -> np.ndarray:
        return self.audio[max(0, a - self.start) : max(0, min(b, self.available) - self.start)
                          ].copy()

    def last_voiced_before(self, pos: int) -> int:
        k = bisect.bisect_right(self.voiced_ends, pos)
        return self.voiced_ends[k - 1] if k else self.start

    async def audio_until(self, pos: int) -> None:
        while self.end is None and self.available < pos:
            self.grew.clear()
            await self.grew.wait()


class StreamingTranscriber:
    """Feed 16 kHz float32 audio with `accept`; utterances go to `sink` in order."""

    def __init__(self, asr: AsrService, sink: EventSink, config: StreamingConfig,
                 call_id: str = "call", channel: int = 0,
                 turn: EndOfTurnModel | None = None) -> None:
        self.asr, self.sink, self.config = asr, sink, config
        self.turn = turn if config.end_of_turn_after > 0 else None
        self.call_id, self.channel = call_id, channel
        self.vad = StreamingVad()
        self._ids = itertools.count(1)
        self._audio = np.zeros(0, dtype=np.float32)  # recent audio, from self._audio_start on
        self._audio_start = 0  # sample index of self._audio[0]
        self._frames_done = 0  # VAD frames processed so far
        # (frame end sample, VAD probability, arrival time) of each frame of the current utterance
        self._frames: list[tuple[int, float, float]] = []
        self._utt: _Open | None = None  # the utterance being spoken
        self._last_voiced_end = 0  # sample index just past the last voiced frame
        self._voiced = 0  # voiced frames in the current utterance
        self._voiced_wallclock = 0.0
        self._worker: asyncio.Future[None] | None = None  # the newest utterance's worker
        self._decoding = 0  # window decodes in flight
        self._preview_task: asyncio.Future[None] | None = None  # partials-only mode
        self._next_window: int | None = None  # where the current worker decodes next
        self._last_audio_at = 0.0  # time.monotonic() of the last accept
        self._stall_timer: asyncio.TimerHandle | None = None
        self._stall_due = 0.0
        self.stalls = 0  # utterances finalized because audio stopped arriving
        self.samples_seen = 0
        # While the end-of-turn model is asked about a pause, later VAD frames wait here: the
        # answer applies at the pause, and every frame after it is taken as if it had come at
        # once, so where utterances end never depends on how fast the model answered.
        self._turn_check: asyncio.Future[None] | None = None
        self._held: list[tuple[float, float]] = []  # (VAD probability, arrival time)
        self._turn_asked = False  # in this pause

    # ---- input ---------------------------------------------------------------------------
    def accept(self, audio: np.ndarray) -> None:
        """Never blocks on the ASR: decoding runs in tasks; the caller keeps reading media."""
        now = time.monotonic()
        audio = audio.astype(np.float32, copy=False)
        self._audio = np.concatenate([self._audio, audio])
        self.samples_seen += len(audio)
        if self._utt is not None:
            self._utt.append(audio)  # an endpoint inside this chunk bounds it by `end`
        for prob in self.vad(audio):
            if self._turn_check is not None:
                self._held.append((float(prob), now))
            else:
                self._on_frame(float(prob), now)
        # The open utterance holds its own audio: keep only the padding we may prepend to the
        # next one, counted from the frame the VAD has not seen yet, so chunk sizes never
        # change where utterances start.
        pending = self.samples_seen - self._frames_done * FRAME
        keep = int(self.config.pad * TARGET_RATE) + pending
        self._trim_to(max(self._audio_start, self.samples_seen - keep))
        self._last_audio_at = now
        self._arm_stall_timer()

    async def flush(self) -> None:
        """End of stream: finalize what is open and wait until every final is delivered."""
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        while self._turn_check is not None:
            await self._turn_check  # it takes in the frames held meanwhile
        if self._utt is not None:
            self._finalize(self.samples_seen)
        if self._worker is not None:
            await self._worker
        if self._preview_task is not None:
            self._preview_task.cancel()

    # ---- stalled input -------------------------------------------------------------------
    def _arm_stall_timer(self) -> None:
        # One timer per stream, not one per frame: when it fires it checks how long ago the
        # last audio came and sleeps again for the rest of the timeout.
        timeout = self.config.stall_timeout_s
        if timeout <= 0 or self._utt is None or self._stall_timer is not None:
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
        if self._utt is None:
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
        if self._utt is None:
            if prob >= cfg.speech_threshold:
                self._open(max(self._audio_start, frame_start - int(cfg.pad * TARGET_RATE)))
                self._mark_voiced(frame_end, now)
            return
        self._frames.append((frame_end, prob, now))
        if prob >= cfg.silence_threshold:
            if prob >= cfg.speech_threshold or self._voiced:
                self._mark_voiced(frame_end, now)
        silence = (frame_end - self._last_voiced_end) / TARGET_RATE
        required = self._required_silence(frame_end)
        if silence >= required:
            self._finalize(min(frame_end, self._last_voiced_end + int(cfg.pad * TARGET_RATE)))
        elif (self.turn is not None and not self._turn_asked and not self._commits
              and cfg.end_of_turn_after <= silence < required
              and self._voiced * FRAME_S >= cfg.end_of_turn_min_speech):
            self._ask_turn(frame_end)
        elif (not self._commits
              and (frame_end - self._utt.start) / TARGET_RATE >= cfg.max_utterance):
            # (Committing windows split a long utterance at its final words instead.)
            self._cut_long_utterance(frame_end)

    def _required_silence(self, now: int) -> float:
        # People in a quick exchange leave short gaps; a long utterance takes a short pause as
        # its end, so finals keep coming during rapid back-and-forth instead of every 15 s.
        assert self._utt is not None
        length = (now - self._utt.start) / TARGET_RATE
        cfg = self.config
        if length <= cfg.long_after / 2:
            return cfg.min_silence
        if length >= cfg.long_after:
            return cfg.min_silence_long
        share = (length - cfg.long_after / 2) / (cfg.long_after / 2)
        return cfg.min_silence + share * (cfg.min_silence_long - cfg.min_silence)

    def _open(self, start: int, audio: np.ndarray | None = None) -> None:
        if audio is None:
            audio = self._audio[start - self._audio_start :]
        self._utt = _Open.of(f"{self.call_id}-c{self.channel}-u{next(self._ids)}", start, audio)
        self._frames = []
        self._voiced = 0
        self._turn_asked = False
        self._worker = asyncio.ensure_future(self._run(self._utt, self._worker))

    def _ask_turn(self, frame_end: int) -> None:
        """Is the speaker done? The model hears the utterance up to this frame, pause included."""
        u, turn = self._utt, self.turn
        assert u is not None and turn is not None
        self._turn_asked = True
        end = min(frame_end, self._last_voiced_end + int(self.config.pad * TARGET_RATE))
        audio = u.slice(max(u.start, frame_end - int(turn.config.max_audio_s * TARGET_RATE)),
                        frame_end)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # fed outside an event loop: answer at once
            self._on_turn_answer(u, end, self._predict(audio))
            return
        self._turn_check = loop.create_task(self._check_turn(u, end, audio))

    def _predict(self, audio: np.ndarray) -> float | None:
        assert self.turn is not None
        try:
            return self.turn.predict(audio)
        except Exception:
            # Silence alone ends the utterance then, a little later: nothing is lost.
            log.exception("end-of-turn model failed on %s", self.call_id)
            return None

    async def _check_turn(self, u: _Open, end: int, audio: np.ndarray) -> None:
        # Off the event loop that reads the media: the model takes 40-300 ms on a busy CPU.
        probability = await asyncio.to_thread(self._predict, audio)
        self._turn_check = None
        self._on_turn_answer(u, end, probability)
        held, self._held = self._held, []
        for i, (prob, now) in enumerate(held):
            if self._turn_check is not None:  # a frame asked again: the rest waits again
                self._held = held[i:] + self._held
                break
            self._on_frame(prob, now)

    def _on_turn_answer(self, u: _Open, end: int, probability: float | None) -> None:
        assert self.turn is not None
        if probability is None or self._utt is not u:
            return  # the stall timer closed it meanwhile
        u.end_of_turn = round(probability, 3)
        if probability > self.turn.config.threshold:
            self._finalize(end)

    def _mark_voiced(self, frame_end: int, now: float) -> None:
        self._turn_asked = False  # speech again: the next pause is asked about afresh
        self._voiced += 1
        self._last_voiced_end = frame_end
        self._voiced_wallclock = now
        if self._utt is not None:
            self._utt.voiced_ends.append(frame_end)

    def _cut_long_utterance(self, frame_end: int) -> None:
        # Cut at the quietest frame of the last third, so a long turn splits between words.
        frames = self._frames
        lo = len(frames) * 2 // 3
        if lo >= len(frames):
            self._finalize(frame_end, reopen=True)
            return
        quietest = min(frames[lo:], key=lambda f: f[1])
        self._finalize(quietest[0], reopen=True, wallclock=quietest[2])

    def _finalize(self, end: int, reopen: bool = False, wallclock: float | None = None) -> None:
        u = self._utt
        assert u is not None
        u.end = end
        u.wallclock = self._voiced_wallclock if wallclock is None else wallclock
        u.noise = self._voiced * FRAME_S < self.config.min_speech
        u.grew.set()
        self._utt = None
        if reopen:
            tail = [f for f in self._frames if f[0] > end]
            self._open(end, u.slice(end, u.available))
            assert self._utt is not None
            self._utt.voiced_ends = [e for e in u.voiced_ends if e > end]
            self._frames = tail
            self._voiced = sum(p >= self.config.speech_threshold for _, p, _ in tail)

    # ---- decoding ------------------------------------------------------------------------
    @property
    def _commits(self) -> bool:
        return self.config.commit_words and self.config.partial_interval > 0

    @property
    def decoding_partial(self) -> bool:
        """A window is being decoded, or due: its audio has come and its decode is yet to start
        (the next one waits for it)."""
        due = self._next_window is not None and self.samples_seen >= self._next_window
        preview = self._preview_task is not None and not self._preview_task.done()
        return self._decoding > 0 or due or preview

    async def _run(self, u: _Open, previous: asyncio.Future[None] | None) -> None:
        """One utterance's decodes, in audio order: windows while it is spoken, then the rest.
        Its decodes start at once; its final events wait for the previous utterance's."""
        u.previous = previous
        try:
            await self._decode_utterance(u)
        except Exception:
            # A failed decode loses the words not yet final, never the call.
            log.exception("decoding of %s failed", u.utt_id)
        finally:
            await u.after_previous()  # the next utterance waits on this one: keep the chain

    async def _decode_utterance(self, u: _Open) -> None:
        cfg = self.config
        step = int(cfg.partial_interval * TARGET_RATE)
        seg = _Segment(u.utt_id, u.start)
        if step > 0:
            first = MIN_COMMIT_WINDOW_S if self._commits else MIN_WINDOW_S
            pos = u.start + max(step, int(first * TARGET_RATE))
            while True:
                self._next_window = pos
                await u.audio_until(pos)
                if u.end is not None and pos >= u.end:
                    break
                behind = u.available - pos
                if u.end is None and cfg.catch_up_after_s and \
                        behind > cfg.catch_up_after_s * TARGET_RATE:
                    pos += behind // step * step
                if pos - u.last_voiced_before(pos) <= PARTIAL_QUIET_S * TARGET_RATE:
                    seg = await self._window(u, seg, pos)
                pos += step
            self._next_window = None
        if u.noise and not seg.agreement.committed:
            return
        await self._final(u, seg)

    async def _preview(self, u: _Open, seg: _Segment, pos: int) -> None:
        # Partials only: the whole utterance so far, greedy, at the ASR's lowest priority (a
        # newer window of this channel supersedes it); what two agree on is shown as stable.
        cfg = self.config
        self._decoding += 1
        try:
            words = await self.asr.partial(f"{self.call_id}/{self.channel}", self._request(
                u, seg.start, pos, cfg.partial_beam, short=cfg.short_context, prompt=False))
        except Exception:
            log.exception("partial decode of %s failed; its final will still come", seg.utt_id)
            return
        finally:
            self._decoding -= 1
        if not words or u.final_sent:
            return  # its final is out: a partial now would show older text
        # Shown as stable: words two partials in a row agreed on (they are not final text).
        seg.preview.update(words[len(seg.preview.committed):])
        event = self._event(seg.utt_id, words, final=False, start=seg.start, end=pos,
                            wallclock=None)
        event.stable_text = join_words(seg.preview.committed, cfg.language)
        await self.sink(event)

    async def _window(self, u: _Open, seg: _Segment, pos: int) -> _Segment:
        cfg = self.config
        if not self._commits:
            # Best effort, off the worker: a partial must never hold back the final after it.
            if self._preview_task is None or self._preview_task.done():
                self._preview_task = asyncio.ensure_future(self._preview(u, seg, pos))
            return seg
        self._decoding += 1
        try:
            words = await self.asr.final(self._request(u, seg.window_from, pos, cfg.final_beam,
                                                       short=cfg.short_context))
            words = _past(words, seg.commit_from)
        except ValueError as exc:
            log.warning("window decode of %s refused: %.200s", seg.utt_id, exc)
            return seg
        except Exception:
            log.exception("window decode of %s failed; its final will still come", seg.utt_id)
            return seg
        finally:
            self._decoding -= 1
        # No two decodes agreeing for this long, with Whisper's 30 s near: take this one's words.
        force = pos - seg.window_from >= MAX_WINDOW_S * TARGET_RATE
        fresh = seg.agreement.update(words, force=force)[0]
        now = time.monotonic()
        for w in fresh:
            w.final_at = now
        u.final_words.extend(fresh)
        seg.commit_from = min(pos, max(seg.commit_from, round(
            seg.agreement.boundary(seg.commit_from / TARGET_RATE) * TARGET_RATE)))
        if seg.agreement.committed and pos - seg.window_from >= TRIM_AFTER_S * TARGET_RATE:
            # Windows keep the utterance's start while they are short: Whisper hears the final
            # words again and continues them consistently (windows that started at each
            # sentence's end lost overlapped words in our benches).
            seg.window_from = seg.commit_from
        shown = seg.agreement.committed + seg.agreement.tentative
        if shown and u.previous_done:  # a partial never overtakes the final before it
            event = self._event(seg.utt_id, shown, final=False, start=seg.start, end=pos,
                                wallclock=None)
            event.stable_text = join_words(seg.agreement.committed, cfg.language)
            await self.sink(event)
        if (pos - seg.start) / TARGET_RATE >= cfg.max_utterance and seg.agreement.committed:
            # A long turn: what is final becomes its own utterance, the rest goes on.
            await u.after_previous()
            await self.sink(self._event(seg.utt_id, seg.agreement.committed, final=True,
                                        start=seg.start, end=seg.commit_from,
                                        wallclock=now))
            seg = seg.next(u.utt_id)
        return seg

    async def _final(self, u: _Open, seg: _Segment) -> None:
        while u.end is None:
            await u.audio_until(u.available + 1)
        assert u.end is not None
        words: list[Word] = []
        if u.end - seg.commit_from >= int(0.1 * TARGET_RATE):
            try:
                words = await self.asr.final(self._request(u, seg.window_from, u.end,
                                                           self.config.final_beam))
                words = _past(words, seg.commit_from)
            except ValueError as exc:
                # The request itself is refused (a bad language): no traceback per utterance.
                log.warning("final decode of %s refused: %.200s", seg.utt_id, exc)
            except Exception:
                # A failed decode loses the words not yet final, and the gap stays visible.
                log.exception("final decode of %s failed", seg.utt_id)
        words = seg.agreement.committed + seg.agreement.drop_repeated_tail(words)
        await u.after_previous()
        u.final_sent = True
        if not words:
            return
        event = self._event(seg.utt_id, words, final=True, start=seg.start, end=u.end,
                            wallclock=u.wallclock)
        event.end_of_turn = u.end_of_turn
        await self.sink(event)

    def _request(self, u: _Open, window_from: int, b: int, beam: int, short: bool = False,
                 prompt: bool = True) -> DecodeRequest:
        # A short rest is decoded with some of the final words before it, heard again and
        # dropped after. The prompt holds the final words before the audio, never those it
        # will hear.
        cfg = self.config
        a = max(u.start, min(window_from, b - int(MIN_WINDOW_S * TARGET_RATE)))
        text = cfg.initial_prompt
        before = [w for w in u.final_words if w.end * TARGET_RATE <= a]
        if prompt and cfg.prompt_final_words and before:
            base = text or (ZH_PROMPT if cfg.language == "zh" else "")
            text = base + join_words(before, cfg.language)[-PROMPT_CHARS:]
        return DecodeRequest(audio=u.slice(a, b), language=cfg.language, offset=a / TARGET_RATE,
                             beam_size=beam, initial_prompt=text, short_context=short)

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

    def _trim_to(self, sample: int) -> None:
        drop = sample - self._audio_start
        if drop > 0:
            self._audio = self._audio[drop:]
            self._audio_start = sample


@dataclass
class _Segment:
    """The part of an utterance one final event will carry (a long turn has several)."""

    utt_id: str
    start: int
    commit_from: int = -1  # where the audio not yet final starts
    window_from: int = -1  # where decodes start: the start of the sentence being spoken
    agreement: LocalAgreement = field(default_factory=LocalAgreement)
    preview: LocalAgreement = field(default_factory=LocalAgreement)  # partials-only mode
    part: int = 1

    def __post_init__(self) -> None:
        if self.commit_from < 0:
            self.commit_from = self.start
        if self.window_from < 0:
            self.window_from = self.commit_from

    def next(self, base_id: str) -> _Segment:
        seg = _Segment(f"{base_id}-{self.part + 1}", self.commit_from, part=self.part + 1)
        seg.agreement.carry_over(self.agreement)
        return seg


def _past(words: list[Word], commit_from: int) -> list[Word]:
    """The decoded words from `commit_from` on: those before it are final already."""
    cut = commit_from / TARGET_RATE
    return _collapse_loops([w for w in words if (w.start + w.end) / 2 >= cut - 0.05])


# Numbers are read out digit by digit or in groups ("1111 1111", "one one one one", "幺幺幺"):
# a repeat of these is what was said, and the redactor must see every digit of a card number.
_NUMBER_WORDS = frozenset(
    "zero oh o one two three four five six seven eight nine double triple "
    "零 〇 一 幺 二 两 三 四 五 六 七 八 九".split())


def _is_number(key: str) -> bool:
    return any(ch.isdigit() for ch in key) or key in _NUMBER_WORDS


def _collapse_loops(words: list[Word]) -> list[Word]:
    """Whisper's failure on short or clipped audio is one word over and over ("country country
    country country"); people repeat a word three times at most ("no, no, no"), but a number
    as often as its digits do."""
    out: list[Word] = []
    for key, group in itertools.groupby(words, key=_key):
        run = list(group)
        out.extend(run if len(run) <= 3 or _is_number(key) else run[:1])
    return out


def join_words(words: list[Word], language: str | None) -> str:
    text = "".join(w.text for w in words).strip()
    return text if language == "zh" else " ".join(text.split())
