"""File replay: a recording played into the live runtime as a call's media would arrive.

The third transport beside Twilio Media Streams and raw PCM (assist/app.py): the same
`CallSession`, the same events, the same record; only the audio comes from a file, in 20 ms
frames at `speed` times real time.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from speech.audio_file import AudioClip, load_audio
from speech.replay import FRAME_SECONDS, channel_layout

from .runtime import CallInfo, CallSession, Runtime


async def replay_file(runtime: Runtime, path: Path | str, info: CallInfo,
                      speed: float = 1.0, layout: str | None = None) -> CallSession:
    """Play `path` as the call `info`; returns the ended session. `layout` None: the file's
    (two channels that differ are two parties), "mono": mixed to one channel."""
    if speed <= 0:
        raise ValueError("speed must be positive")
    clip = await asyncio.to_thread(load_audio, path)
    layout = layout or channel_layout(clip)
    if layout == "mono" and clip.channels > 1:
        clip = AudioClip(clip.samples.mean(axis=0, keepdims=True), clip.sample_rate)
    info = info.model_copy(update={"layout": layout, "channel_roles": info.channel_roles
                                   if layout == "stereo" else None})
    session = await runtime.open_call(info)
    step = int(clip.sample_rate * FRAME_SECONDS)
    t0 = time.monotonic()
    try:
        for i in range(0, clip.samples.shape[1], step):
            delay = t0 + i / clip.sample_rate / speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            for channel in range(clip.channels):
                session.accept(channel, clip.samples[channel, i : i + step], clip.sample_rate)
    finally:
        await runtime.end_call(session, None)
    return session
