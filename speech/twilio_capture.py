"""Recorded Twilio media streams (one JSON message per line) as an AudioClip, for replays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .audio_file import AudioClip
from .errors import AudioFormatError
from .twilio import TwilioMediaStream


def load_twilio_capture(path: str | Path) -> tuple[AudioClip, TwilioMediaStream]:
    stream = TwilioMediaStream()
    channels: dict[int, list[np.ndarray]] = {}
    rate = 8000
    with Path(path).open("rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            for piece in stream.handle(line):
                channels.setdefault(piece.channel, []).append(piece.samples)
                rate = piece.sample_rate
    if stream.start is None:
        raise AudioFormatError(f"{path}: no Twilio 'start' message")
    if not channels:
        raise AudioFormatError(f"{path}: no decodable media frames")
    tracks = [np.concatenate(channels.get(c, [np.zeros(0, np.float32)]))
              for c in range(len(stream.tracks))]
    length = max(len(t) for t in tracks)
    samples = np.stack([np.pad(t, (0, length - len(t))) for t in tracks]).astype(np.float32)
    return AudioClip(samples, rate), stream
