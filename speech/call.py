"""One call, end to end: channels in, role-labelled final utterances out.

Stereo (or two-track) calls: each channel is one party, transcribed on its own; its speaker is the
channel. Mono calls: one transcriber plus the streaming diarizer; each final utterance waits until
the diarizer has seen its audio, then its words are split where the speaker changes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from .asr import AsrService, WhisperEngine
from .codecs import StreamResampler
from .diarization import DiarizationConfig, DiarizationModels, StreamingDiarizer
from .end_of_turn import EndOfTurnModel
from .events import Transcript, TranscriptSegment, Utterance, Word
from .models import ModelRegistry
from .roles import RoleAssigner, RoleConfig, opposite
from .settings import SpeechSettings
from .streaming import StreamingConfig, StreamingTranscriber, join_words

log = logging.getLogger(__name__)
UtteranceSink = Callable[[Utterance], Awaitable[None]]


class CallConfig(BaseModel):
    call_id: str = "call"
    layout: Literal["mono", "stereo"] = "mono"
    streaming: StreamingConfig = Field(default_factory=StreamingConfig)
    diarization: DiarizationConfig = Field(default_factory=DiarizationConfig)
    roles: RoleConfig = Field(default_factory=RoleConfig)
    provisional_finals: bool = Field(
        False, description="mono: send each final at once with the diarizer's guess of the "
        "speaker (provisional), then its settled parts (the live runtime turns this on)")


class SpeechModels:
    """Everything heavy, loaded once per process and shared by all calls."""

    def __init__(self, asr: AsrService, diarization: DiarizationModels | None,
                 turn: EndOfTurnModel | None = None) -> None:
        self.asr, self.diarization, self.turn = asr, diarization, turn

    @classmethod
    def load(cls, settings: SpeechSettings | None = None, diarization: bool = True,
             end_of_turn: bool | None = None) -> SpeechModels:
        settings = settings or SpeechSettings()
        registry = ModelRegistry(settings)
        asr = AsrService(WhisperEngine.from_settings(settings))
        use_turn = settings.end_of_turn if end_of_turn is None else end_of_turn
        return cls(asr, DiarizationModels.from_registry(registry) if diarization else None,
                   EndOfTurnModel(registry.turn()) if use_turn else None)

    def close(self) -> None:
        self.asr.close()


async def _ignore(_: Utterance) -> None:
    return None


class CallTranscriber:
    def __init__(self, models: SpeechModels, config: CallConfig,
                 sink: UtteranceSink = _ignore) -> None:
        self.models, self.config, self.sink = models, config, sink
        self.finals: list[Utterance] = []  # the transcript so far: kept whatever comes later
        self.roles = RoleAssigner(config.roles)
        self._resamplers: dict[int, StreamResampler] = {}
        self._channels: dict[int, StreamingTranscriber] = {}
        self.diarizer: StreamingDiarizer | None = None
        self._diar_buffer: list[np.ndarray] = []
        self._diar_buffered = 0
        self._diar_tail: asyncio.Future[None] | None = None
        self._diar_progress = asyncio.Event()
        self._finished = False
        self._last_final: Utterance | None = None
        if config.layout == "mono":
            if models.diarization is None:
                raise ValueError("mono calls need the diarization models")
            self.diarizer = StreamingDiarizer(models.diarization, config.diarization)

    # ---- input ---------------------------------------------------------------------------
    def accept(self, channel: int, audio: np.ndarray, sample_rate: int) -> None:
        """Float32 samples of one channel at their own rate; returns at once."""
        if self.config.layout == "mono" and channel != 0:
            raise ValueError("a mono call has only channel 0")
        resampler = self._resamplers.get(channel)
        if resampler is None or resampler.rate != sample_rate:
            resampler = self._resamplers[channel] = StreamResampler(sample_rate)
        self._accept16k(channel, resampler(audio))

    def _accept16k(self, channel: int, audio: np.ndarray) -> None:
        if not len(audio):
            return
        self._transcriber(channel).accept(audio)
        if self.diarizer is not None:
            self._diar_buffer.append(audio)
            self._diar_buffered += len(audio)
            if self._diar_buffered >= self.diarizer.step:
                self._run_diarizer(np.concatenate(self._diar_buffer))
                self._diar_buffer, self._diar_buffered = [], 0

    async def finish(self) -> list[Utterance]:
        """End of the call: flush every stage; returns all final utterances in time order."""
        for channel, resampler in self._resamplers.items():
            tail = resampler.flush()
            if len(tail):
                self._accept16k(channel, tail)
        if self.diarizer is not None:
            rest = np.concatenate(self._diar_buffer) if self._diar_buffer else np.zeros(0)
            self._diar_buffer = []
            self._run_diarizer(rest.astype(np.float32), final=True)
            await self._diar_tail  # type: ignore[misc]
        self._finished = True
        self._diar_progress.set()
        await asyncio.gather(*(t.flush() for t in self._channels.values()))
        return sorted(self.finals, key=lambda u: (u.start, u.channel))

    # ---- stages --------------------------------------------------------------------------
    def _transcriber(self, channel: int) -> StreamingTranscriber:
        if channel not in self._channels:
            self._channels[channel] = StreamingTranscriber(
                self.models.asr, lambda u, c=channel: self._on_utterance(c, u),
                self.config.streaming, self.config.call_id, channel, turn=self.models.turn,
            )
        return self._channels[channel]

    def _run_diarizer(self, audio: np.ndarray, final: bool = False) -> None:
        diarizer = self.diarizer
        assert diarizer is not None
        previous = self._diar_tail

        async def step() -> None:
            if previous is not None:
                await previous
            try:
                await asyncio.to_thread(diarizer.accept, audio)
                if final:
                    await asyncio.to_thread(diarizer.flush)
            except Exception:
                # Speaker labels degrade to the nearest known speaker; the words are kept.
                log.exception("diarization step failed on call %s", self.config.call_id)
            self._diar_progress.set()

        self._diar_tail = asyncio.ensure_future(step())

    async def _on_utterance(self, channel: int, utt: Utterance) -> None:
        if self.config.layout == "stereo":
            utt.speaker = f"ch{channel + 1}"
            utt.role = self.roles.channel_role(channel)
            await self._emit(utt)
            return
        if not utt.final:
            await self._emit(utt)  # partials carry no speaker: the diarizer has not caught up
            return
        diarizer = self.diarizer
        assert diarizer is not None
        settle = utt.end + min(self.config.diarization.latency, self.config.diarization.window)
        guesses: list[Utterance] = []
        if self.config.provisional_finals and diarizer.processed_until < settle:
            # The words are final now; who said them is not settled for seconds. An agent's
            # screen cannot wait that long: send the diarizer's guess, correct it later.
            _stamp(utt.words)
            guesses = self._provisional(utt)
            for guess in guesses:
                await self._emit(guess)
        while diarizer.processed_until < settle and not self._finished:
            self._diar_progress.clear()
            await self._diar_progress.wait()
        parts = self._split_by_speaker(utt)
        if not guesses:
            for part in parts:
                await self._emit(part)
            return
        for part in _settle_guesses(parts, guesses):
            await self._emit(part)

    def _provisional(self, utt: Utterance) -> list[Utterance]:
        """The diarizer's guess of who said which words, split where it hears a change."""
        diarizer = self.diarizer
        assert diarizer is not None
        utt.provisional = True  # marks the original: its settled parts replace the guesses
        if diarizer.processed_until > utt.start + 0.3 and diarizer.centroids:
            parts = []
            for part in self._split_by_speaker(utt.model_copy(deep=True), decide=False):
                if parts and part.speaker is None:
                    # Words past what the diarizer has heard: most often the voice before.
                    parts[-1] = _with_words(parts[-1], parts[-1].utterance_id,
                                            parts[-1].words + part.words)
                else:
                    parts.append(part)
            for i, part in enumerate(parts):
                part.provisional = True
                part.utterance_id = (utt.utterance_id if len(parts) == 1
                                     else f"{utt.utterance_id}.p{i + 1}")
                self._remember(part)
            return parts
        guess = utt.model_copy(deep=True)
        guess.provisional = True
        if diarizer.processed_until > utt.start + 0.3:
            guess.speaker = diarizer.speaker_at(utt.start, min(utt.end, diarizer.processed_until))
            guess.role = self.roles.guess(guess.speaker, diarizer.speakers, diarizer.centroids)
        else:
            # None of it diarized yet: in a two-party call the next stretch of speech is most
            # often the other party's reply.
            previous = self._last_final
            if previous is not None and previous.role != "unknown":
                guess.role = opposite(previous.role)
            elif previous is None:
                guess.role = self.config.roles.first_speaker or "unknown"
            guess.speaker = None
        self._remember(guess)
        return [guess]

    def _remember(self, utt: Utterance) -> None:
        # Settled parts of an older utterance can arrive after the next one's guess: the guess
        # that follows must build on the latest speech, not the latest event.
        if self._last_final is None or utt.start >= self._last_final.start:
            self._last_final = utt

    def _split_by_speaker(self, utt: Utterance, decide: bool = True) -> list[Utterance]:
        """Runs of one speaker's words; `decide`: their roles are settled for good."""
        diarizer = self.diarizer
        assert diarizer is not None
        runs: list[tuple[str | None, list[Word]]] = []
        for word in utt.words:
            word.speaker = diarizer.speaker_at(word.start, word.end)
            if runs and runs[-1][0] == word.speaker:
                runs[-1][1].append(word)
            else:
                runs.append((word.speaker, [word]))
        runs = _snap_to_sentences(runs)
        # A single short word on the far side of a speaker change is usually a word-timestamp
        # error at the boundary, not a turn: it stays with the run before it.
        merged: list[tuple[str | None, list[Word]]] = []
        for speaker, words in runs:
            lone = len(words) == 1 and words[0].end - words[0].start < 0.3
            if merged and (speaker == merged[-1][0] or (lone and merged[-1][0] is not None)):
                merged[-1][1].extend(words)
            else:
                merged.append((speaker, words))
        parts = []
        for i, (speaker, words) in enumerate(merged):
            part = _with_words(utt, f"{utt.utterance_id}.{i + 1}" if len(merged) > 1
                               else utt.utterance_id, words)
            part.speaker = speaker
            role = self.roles.role if decide else self.roles.guess
            part.role = role(speaker, diarizer.speakers, diarizer.centroids)
            parts.append(part)
        return parts

    async def _emit(self, utt: Utterance) -> None:
        utt.emitted_wallclock = time.monotonic()
        if utt.final:
            _stamp(utt.words, utt.emitted_wallclock)
        if utt.final and not utt.provisional:
            self.finals.append(utt)
            self._remember(utt)
        try:
            await self.sink(utt)
        except Exception:
            log.exception("utterance sink failed; the transcript keeps the utterance")


def _with_words(utt: Utterance, utterance_id: str, words: list[Word]) -> Utterance:
    """A copy of `utt` that holds only `words` (its text and times follow them)."""
    part = utt.model_copy(deep=True)
    part.utterance_id, part.words = utterance_id, words
    part.start, part.end = words[0].start, words[-1].end
    part.text = part.stable_text = join_words(words, utt.language)
    return part


def _settle_guesses(parts: list[Utterance], guesses: list[Utterance]) -> list[Utterance]:
    """The settled parts of an utterance, cut where its guesses were cut: each piece replaces
    the guess its words were shown in (the first piece in a guess takes the guess's line, the
    others follow it), so no guessed line is left standing and none is replaced twice."""
    owner = [part for part in parts for _ in part.words]
    words = [w for part in parts for w in part.words]
    out: list[Utterance] = []
    taken = 0
    for guess in guesses:
        span = range(taken, taken + len(guess.words))
        taken += len(guess.words)
        runs: list[tuple[Utterance, list[Word]]] = []
        for k in span:
            if runs and runs[-1][0] is owner[k]:
                runs[-1][1].append(words[k])
            else:
                runs.append((owner[k], [words[k]]))
        for i, (part, ws) in enumerate(runs):
            piece = _with_words(part, guess.utterance_id if len(runs) == 1
                                else f"{guess.utterance_id}.{i + 1}", ws)
            piece.provisional, piece.replaces = False, guess.utterance_id
            out.append(piece)
    return out


SENTENCE_END = (".", "?", "!", "。", "？", "！")
SNAP_WORDS = 2


def _snap_to_sentences(runs: list[tuple[str | None, list[Word]]]
                       ) -> list[tuple[str | None, list[Word]]]:
    """Move each speaker change to a sentence end at most SNAP_WORDS words away. The
    diarizer's activity is an average over seconds of windows, so its change lags or leads
    the voice by a word or two ("... down here, so what can I say? Oh, I | don't hear"), while
    people hand over the floor at the end of a sentence, which Whisper punctuates."""
    if len(runs) < 2:
        return runs
    words = [w for _, ws in runs for w in ws]
    owners = [spk for spk, ws in runs for _ in ws]
    b = 0
    for i in range(len(runs) - 1):
        b += len(runs[i][1])  # the first word of run i + 1
        ends = [j for j in range(b - SNAP_WORDS, b + SNAP_WORDS + 1)
                if 0 < j < len(words) and words[j - 1].text.strip().endswith(SENTENCE_END)]
        if not ends or b in ends:
            continue
        j = min(ends, key=lambda j: (abs(j - b), j))
        # Only within the two runs at this change: a move never swallows a third speaker's run.
        lo, hi = b - len(runs[i][1]), b + len(runs[i + 1][1])
        if lo < j < hi:
            left, right = owners[b - 1], owners[b]
            for k in range(min(j, b), max(j, b)):
                owners[k] = left if k < j else right
    out: list[tuple[str | None, list[Word]]] = []
    for spk, w in zip(owners, words, strict=True):
        if out and out[-1][0] == spk:
            out[-1][1].append(w)
        else:
            out.append((spk, [w]))
    return out


def _stamp(words: list[Word], now: float | None = None) -> None:
    """Mark when words were first shown as final (window-committed words already are)."""
    now = time.monotonic() if now is None else now
    for w in words:
        if w.final_at is None:
            w.final_at = now


def build_transcript(finals: list[Utterance], audio_seconds: float, processing_seconds: float,
                     language: str | None, skipped_frames: int = 0,
                     latencies: list[float] | None = None,
                     word_latencies: list[float] | None = None) -> Transcript:
    segments = [
        TranscriptSegment(start=u.start, end=u.end, speaker=u.speaker or "unknown", role=u.role,
                          text=u.text)
        for u in sorted(finals, key=lambda u: (u.start, u.channel))
    ]
    return Transcript(segments=segments, audio_seconds=round(audio_seconds, 3),
                      processing_seconds=round(processing_seconds, 3), language=language,
                      skipped_frames=skipped_frames, latency_seconds=latencies,
                      word_latency_seconds=word_latencies)

