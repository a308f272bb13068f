"""Transcribing a recording through the streaming path: as fast as possible, or at real-time
speed (a live call's timing), which also yields end-of-utterance -> final-text latencies."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np

from .audio_file import AudioClip, load_audio
from .call import (
    CallConfig,
    CallTranscriber,
    SpeechModels,
    UtteranceSink,
    _ignore,
    build_transcript,
)
from .events import Transcript, Utterance

FRAME_SECONDS = 0.02  # telephony media arrives in 20 ms frames


def channel_layout(clip: AudioClip) -> str:
    """Two channels are two parties unless they carry the same signal (a mono file saved as
    stereo), which would otherwise be transcribed twice."""
    if clip.channels == 1:
        return "mono"
    a, b = clip.samples[0], clip.samples[1]
    if np.allclose(a, b, atol=1e-3):
        return "mono"
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    if denom > 0 and float(a @ b) / denom > 0.98:
        return "mono"
    return "stereo"


async def replay(clip: AudioClip, models: SpeechModels, config: CallConfig, realtime: bool = False,
                 sink: UtteranceSink = _ignore) -> Transcript:
    if config.layout == "mono" and clip.channels > 1:
        clip = AudioClip(clip.samples.mean(axis=0, keepdims=True), clip.sample_rate)
    if not realtime:
        # Audio comes faster than any ASR: decode every committing window, or the result would
        # depend on this machine's speed; partials only matter to someone watching.
        config = config.model_copy(deep=True)
        config.streaming.catch_up_after_s = 0.0
        if not config.streaming.commit_words:
            config.streaming.partial_interval = 0.0
    call = CallTranscriber(models, config, sink)
    step = int(clip.sample_rate * FRAME_SECONDS)
    frames = clip.samples.shape[1]
    t0 = time.monotonic()
    for n, i in enumerate(range(0, frames, step)):
        if realtime:
            due = t0 + i / clip.sample_rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        for channel in range(clip.channels):
            call.accept(channel, clip.samples[channel, i : i + step], clip.sample_rate)
        if not realtime and n % 50 == 0:
            await asyncio.sleep(0)  # let decode tasks start while we keep feeding
    finals = await call.finish()
    elapsed = time.monotonic() - t0
    latencies = word_latencies = None
    if realtime:
        latencies = [round(u.emitted_wallclock - u.audio_end_wallclock, 3) for u in finals
                     if u.emitted_wallclock and u.audio_end_wallclock]
        word_latencies = word_latency(finals, t0)
    return build_transcript(finals, clip.duration, elapsed, config.streaming.language,
                            latencies=latencies, word_latencies=word_latencies)


def word_latency(finals: list[Utterance], t0: float) -> list[float]:
    """Per final word: when it was first shown as final text minus when its last audio was
    handed over (t0 + its end in the recording, for a replay at real-time speed)."""
    return [round(w.final_at - (t0 + w.end), 3) for u in finals for w in u.words
            if w.final_at is not None]


async def transcribe_file(path: str | Path, models: SpeechModels, config: CallConfig | None = None,
                          realtime: bool = False, sink: UtteranceSink = _ignore) -> Transcript:
    clip = load_audio(path)
    config = (config or CallConfig()).model_copy(deep=True)
    config.layout = channel_layout(clip)  # type: ignore[assignment]
    return await replay(clip, models, config, realtime, sink)
