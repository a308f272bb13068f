"""Whisper transcription (faster-whisper / CTranslate2), batched across concurrent calls.

One model per process is shared by every call. Requests from different calls are decoded together
through faster-whisper's batched pipeline: on a GPU that is where the throughput comes from; on a
CPU the same path runs with whatever happens to be queued, so both run the same code.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import functools
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .codecs import TARGET_RATE
from .errors import ModelNotAvailableError
from .events import Word
from .settings import SpeechSettings

log = logging.getLogger(__name__)

# Whisper base writes Mandarin in traditional characters about as often as in simplified; a
# simplified prompt nudges it and OpenCC makes the output reliably simplified.
ZH_PROMPT = "以下是普通话的句子，使用简体中文。"
MIN_SAMPLES = TARGET_RATE // 10  # shorter than 100 ms carries no word


@functools.cache
def _t2s():  # type: ignore[no-untyped-def]
    import opencc

    return opencc.OpenCC("t2s.json")


def to_simplified(text: str) -> str:
    return _t2s().convert(text)


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


@functools.cache
def whisper_languages() -> tuple[str, ...]:
    """Every language code Whisper knows (a given model may know fewer)."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return tuple(_LANGUAGE_CODES)


AUTO_LANGUAGE = ("", "auto")
# Names people type instead of codes; only for the hint in the error (Whisper wants codes).
_NAMED = {"english": "en", "chinese": "zh", "mandarin": "zh", "cantonese": "yue",
          "spanish": "es", "french": "fr", "german": "de", "japanese": "ja", "korean": "ko",
          "portuguese": "pt", "russian": "ru", "arabic": "ar", "hindi": "hi", "italian": "it",
          "dutch": "nl", "turkish": "tr", "vietnamese": "vi", "thai": "th", "polish": "pl",
          "indonesian": "id"}


def check_language(code: str | None, supported: Sequence[str] | None = None) -> str | None:
    """The language setting of a call, normalised: None to detect it, else a Whisper code.

    Raises ValueError naming what is accepted. Whisper itself rejects an unknown code only
    once it decodes, and by then the request shares a batch with other calls.
    """
    if code is None:
        return None
    if not isinstance(code, str):
        raise ValueError(f"language must be a string, got {type(code).__name__}")
    norm = code.strip().lower()
    if norm in AUTO_LANGUAGE:
        return None
    known = tuple(supported) if supported is not None else whisper_languages()
    if norm in known:
        return norm
    hint = f" (did you mean {_NAMED[norm]!r}?)" if _NAMED.get(norm) in known else ""
    shown = code if len(code) <= 20 else code[:17] + "..."
    raise ValueError(f"unknown language {shown!r}{hint}: use 'auto' (or none) to detect it, or "
                     f"one of Whisper's language codes: {', '.join(known)}")


class _ShortContextPipeline:
    """faster-whisper's batched pipeline, encoding only as much audio as the batch holds.

    Whisper's encoder takes 30 s of audio whatever the request: for a 2 s window that is 15
    times the work, and the encoder is most of a decode on a CPU. CTranslate2 encodes shorter
    inputs; faster-whisper pads them to 30 s before `forward`, so `forward` trims the padding
    back to the batch's longest clip plus `CONTEXT_PAD_S` of silence, rounded up to a step
    (Whisper needs to hear where the speech ends, or it runs on past it)."""

    def __new__(cls, model):  # type: ignore[no-untyped-def]
        from faster_whisper import BatchedInferencePipeline

        class Pipeline(BatchedInferencePipeline):  # type: ignore[misc]
            context_frames: int | None = None

            def forward(self, features, tokenizer, chunks_metadata, options):  # type: ignore[no-untyped-def]
                if self.context_frames is not None:
                    features = features[..., : self.context_frames]
                return super().forward(features, tokenizer, chunks_metadata, options)

        return Pipeline(model)


CONTEXT_PAD_S = 1.0
CONTEXT_STEP_S = 2.0
FULL_CONTEXT_FRAMES = 3000  # 30 s of 10 ms mel frames


CONTEXT_MIN_S = 10.0  # windows encoded in less context lost words in our benches


def context_frames(seconds: float) -> int:
    """Encoder frames for a batch whose longest clip lasts `seconds`."""
    steps = -(-(seconds + CONTEXT_PAD_S) // CONTEXT_STEP_S)
    return int(min(FULL_CONTEXT_FRAMES, max(CONTEXT_MIN_S, steps * CONTEXT_STEP_S) * 100))


@dataclass
class DecodeRequest:
    audio: np.ndarray  # 16 kHz float32 mono, at most 30 s
    language: str | None
    offset: float = 0.0  # seconds: where `audio` starts in the call, added to word times
    beam_size: int = 5
    initial_prompt: str | None = None
    short_context: bool = False  # encode only this audio plus a little silence, not 30 s


class WhisperEngine:
    """Synchronous decoding of a batch of utterances; thread-safe for one caller at a time."""

    def __init__(self, model: str, device: str = "auto", compute_type: str | None = None,
                 cpu_threads: int = 0, batch_size: int = 8) -> None:
        from faster_whisper import WhisperModel

        self.device = resolve_device(device)
        self.compute_type = compute_type or ("float16" if self.device == "cuda" else "int8")
        threads = cpu_threads or os.cpu_count() or 1
        try:
            self.model = WhisperModel(model, device=self.device, compute_type=self.compute_type,
                                      cpu_threads=threads, local_files_only=os.path.isdir(model))
        except Exception as exc:  # hub names offline, broken folders, missing CUDA: one message
            raise ModelNotAvailableError(f"cannot load Whisper model {model!r}: {exc}") from exc
        self.pipeline = _ShortContextPipeline(self.model)
        self.batch_size = batch_size
        self.model_name = model

    @classmethod
    def from_settings(cls, settings: SpeechSettings | None = None) -> WhisperEngine:
        from .models import ModelRegistry

        settings = settings or SpeechSettings()
        return cls(ModelRegistry(settings).whisper(), settings.device, settings.compute_type,
                   settings.cpu_threads, settings.asr_batch_size)

    def transcribe_batch(self, requests: Sequence[DecodeRequest]) -> list[list[Word]]:
        """Words for each request, in order; requests that share language, beam and prompt are
        decoded in one batch. Raises the first request's error if any request failed."""
        results = self.transcribe_each(requests)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results  # type: ignore[return-value]

    def transcribe_each(self, requests: Sequence[DecodeRequest]) -> list[list[Word] | Exception]:
        """Like transcribe_batch, but a request that fails gets its own error in its place and
        the others their words: requests of different calls share a batch, and one call's bad
        setting must not cost another call its transcript."""
        results: list[list[Word] | Exception] = [[] for _ in requests]
        groups: dict[tuple[str | None, int, str | None, bool], list[int]] = {}
        for i, req in enumerate(requests):
            try:
                language = check_language(req.language, self.languages)
            except ValueError as exc:
                results[i] = exc
                continue
            if len(req.audio) >= MIN_SAMPLES:
                groups.setdefault((language, req.beam_size, req.initial_prompt,
                                   req.short_context), []).append(i)
        for (language, beam, prompt, _), idx in groups.items():
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start : start + self.batch_size]
                for i, words in zip(chunk, self._decode_isolated(
                        [requests[i] for i in chunk], language, beam, prompt), strict=True):
                    results[i] = words
        return results

    @functools.cached_property
    def languages(self) -> tuple[str, ...]:
        # An English-only model knows "en" alone; a multilingual one 99 or 100 codes.
        try:
            return tuple(self.model.supported_languages)
        except AttributeError:
            return whisper_languages()

    def _decode_isolated(self, reqs: list[DecodeRequest], language: str | None, beam: int,
                         prompt: str | None) -> list[list[Word] | Exception]:
        try:
            return list(self._decode(reqs, language, beam, prompt))
        except Exception as exc:
            if len(reqs) == 1:
                log.warning("decode of one request failed: %s", exc)
                return [exc]
            # Which request broke the batch is unknown: decode each alone, so only it fails.
            log.warning("a batch of %d failed (%s); decoding each request alone", len(reqs), exc)
            return [self._decode_isolated([r], language, beam, prompt)[0] for r in reqs]

    def _decode(self, reqs: list[DecodeRequest], language: str | None, beam: int,
                prompt: str | None) -> list[list[Word]]:
        audios = [r.audio[: 30 * TARGET_RATE].astype(np.float32) for r in reqs]
        bounds, pos = [], 0
        for a in audios:
            bounds.append((pos, pos + len(a)))
            pos += len(a)
        if prompt is None and language == "zh":
            prompt = ZH_PROMPT
        longest = max(len(a) for a in audios) / TARGET_RATE
        self.pipeline.context_frames = (context_frames(longest) if reqs[0].short_context
                                        else None)
        segments, _ = self.pipeline.transcribe(
            np.concatenate(audios), language=language, beam_size=beam, word_timestamps=True,
            vad_filter=False, batch_size=len(reqs), initial_prompt=prompt,
            clip_timestamps=[{"start": s / TARGET_RATE, "end": e / TARGET_RATE} for s, e in bounds],
            # Without a language, each utterance (possibly of another call) gets its own
            # detection instead of the batch's majority.
            multilingual=language is None,
        )
        fps = self.model.frames_per_second
        seek_to_req = {int(s / TARGET_RATE * fps): k for k, (s, _) in enumerate(bounds)}
        out: list[list[Word]] = [[] for _ in reqs]
        # Auto mode cannot tell which utterance was Mandarin; t2s leaves non-Han text as it is.
        simplify = language in (None, "zh")
        for seg in segments:
            k = seek_to_req.get(seg.seek)
            if k is None:
                log.warning("dropping a segment we cannot attribute (seek %s)", seg.seek)
                continue
            base = bounds[k][0] / TARGET_RATE
            for w in seg.words or []:
                text = to_simplified(w.word) if simplify else w.word
                out[k].append(Word(start=round(reqs[k].offset + w.start - base, 3),
                                   end=round(reqs[k].offset + w.end - base, 3),
                                   text=text, probability=round(w.probability, 3)))
        return out


# A partial this old is no preview any more: past it, the agent sees a long turn's words late
# enough that one decode's delay to the finals queued behind costs them less.
PARTIAL_STARVED_S = 1.5


class AsrService:
    """Asyncio front of a WhisperEngine: one worker thread, finals before partials.

    Calls submit decode requests and await them. Whatever is queued when the worker frees up is
    decoded as one batch (finals first); a partial that waited behind newer audio of the same
    stream is superseded, because only the latest partial of a stream is worth decoding.
    """

    def __init__(self, engine: WhisperEngine) -> None:
        self.engine = engine
        self._lock = threading.Condition()
        self._finals: list[tuple[DecodeRequest, cf.Future[list[Word]]]] = []
        # stream -> (request, future, when queued)
        self._partials: dict[str, tuple[DecodeRequest, cf.Future[list[Word]], float]] = {}
        self._closed = False
        self.busy_seconds = 0.0
        self._thread = threading.Thread(target=self._run, name="asr-worker", daemon=True)
        self._thread.start()

    async def final(self, req: DecodeRequest) -> list[Word]:
        fut: cf.Future[list[Word]] = cf.Future()
        with self._lock:
            self._finals.append((req, fut))
            self._lock.notify()
        return await asyncio.wrap_future(fut)

    async def partial(self, stream_key: str, req: DecodeRequest) -> list[Word] | None:
        """None when a newer partial of the same stream replaced this one before decoding."""
        fut: cf.Future[list[Word]] = cf.Future()
        with self._lock:
            old = self._partials.pop(stream_key, None)
            if old is not None:
                old[1].cancel()
            # A newer partial takes the old one's place in the queue, and its waiting time.
            queued = old[2] if old is not None else time.monotonic()
            self._partials[stream_key] = (req, fut, queued)
            self._lock.notify()
        try:
            return await asyncio.wrap_future(fut)
        except (cf.CancelledError, asyncio.CancelledError):
            return None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join(timeout=30)

    def _take(self) -> list[tuple[DecodeRequest, cf.Future[list[Word]]]]:
        size = self.engine.batch_size
        if self._finals:
            batch, self._finals = self._finals[:size], self._finals[size:]
            # Under a steady stream of finals a partial would never run, and a long turn would
            # show nothing until its end: one that has waited this long rides along.
            now = time.monotonic()
            starved = [k for k, (_, _, t) in self._partials.items()
                       if now - t >= PARTIAL_STARVED_S][: max(0, size - len(batch))]
            return batch + [self._partials.pop(k)[:2] for k in starved]
        keys = list(self._partials)[:size]
        return [self._partials.pop(k)[:2] for k in keys]

    def _run(self) -> None:
        while True:
            with self._lock:
                while not (self._finals or self._partials or self._closed):
                    self._lock.wait()
                if self._closed and not (self._finals or self._partials):
                    return
                batch = [(r, f) for r, f in self._take() if f.set_running_or_notify_cancel()]
            if not batch:
                continue
            t0 = time.monotonic()
            try:
                results = self.engine.transcribe_each([r for r, _ in batch])
            except Exception as exc:  # a decode failure must fail its callers, not the worker
                log.exception("ASR batch of %d failed", len(batch))
                for _, fut in batch:
                    fut.set_exception(exc)
                continue
            finally:
                self.busy_seconds += time.monotonic() - t0
            for (_, fut), result in zip(batch, results, strict=True):
                if isinstance(result, Exception):
                    fut.set_exception(result)  # this caller's own error, the others unharmed
                else:
                    fut.set_result(result)
