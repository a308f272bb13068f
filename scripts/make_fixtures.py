"""Synthesizes the sample calls in fixtures/ with espeak-ng (our own recordings, no third party's).

    .venv/bin/python scripts/make_fixtures.py [demo_call] [offer_call]

Writes, for each call, fixtures/calls/<name>_stereo.flac (agent left, customer right),
<name>_mono.flac (the same call mixed down), and <name>.json (the script with turn times, the
reference the tests score against). Telephone-like: 8 kHz, 16-bit. `demo_call` is the demo's
balance enquiry; `offer_call` is an installment offer in which the agent makes a forbidden
promise and the customer reads out a card number (the sidebar's browser tests).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

RATE = 8000
OUT = Path(__file__).resolve().parents[1] / "fixtures" / "calls"
# Far-apart pitches: pyannote's segmentation, trained on people, hears two espeak voices of
# similar pitch as one speaker.
VOICES = {"agent": ("en-us+m3", "20"), "customer": ("en-gb+f4", "90")}
CALLS = {"demo_call": [
    ("agent", "Thank you for calling Harbor Bank, this is Alex. How can I help you today?"),
    ("customer", "Hi, I would like to check the balance on my credit card."),
    ("agent", "Sure. This call may be recorded for quality purposes. "
              "Can you confirm your date of birth?"),
    ("customer", "Yes, it is March third, nineteen eighty five."),
    ("agent", "Thank you. Your current balance is four hundred and twenty dollars."),
    ("customer", "Great, thanks for your help. Goodbye."),
], "offer_call": [
    ("agent", "Hello, this is Alex from Harbor Bank. This call may be recorded."),
    ("customer", "Hi. What is the monthly fee if I pay over six months?"),
    ("agent", "There is no risk at all. I guarantee your approval."),
    ("customer", "Okay. My card number is 4111 1111 1111 1111."),
    ("agent", "Thank you. I will send the terms by text message today."),
    ("customer", "Yes, please go ahead and set it up."),
]}
GAP = 0.7  # seconds of silence between turns


def speak(text: str, voice: tuple[str, str]) -> np.ndarray:
    name, pitch = voice
    wav = subprocess.run(["espeak-ng", "-v", name, "-p", pitch, "-s", "160", "--stdout", text],
                         check=True, capture_output=True).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return resample_poly(audio, RATE, rate).astype(np.float32) * 0.8


def write_call(name: str, turns: list[tuple[str, str]]) -> None:
    channels: dict[str, np.ndarray] = {}
    cursor, script = int(0.5 * RATE), []
    pieces = []
    for role, text in turns:
        audio = speak(text, VOICES[role])
        pieces.append((role, cursor, audio))
        script.append({"role": role, "start": round(cursor / RATE, 3),
                       "end": round((cursor + len(audio)) / RATE, 3), "text": text})
        cursor += len(audio) + int(GAP * RATE)
    total = cursor + int(0.5 * RATE)
    for role in ("agent", "customer"):
        channels[role] = np.zeros(total, dtype=np.float32)
    for role, start, audio in pieces:
        channels[role][start : start + len(audio)] += audio
    stereo = np.stack([channels["agent"], channels["customer"]], axis=1)
    sf.write(OUT / f"{name}_stereo.flac", stereo, RATE, subtype="PCM_16")
    sf.write(OUT / f"{name}_mono.flac", stereo.sum(axis=1) * 0.9, RATE, subtype="PCM_16")
    (OUT / f"{name}.json").write_text(json.dumps(
        {"sample_rate": RATE, "channels": ["agent", "customer"], "turns": script}, indent=1) + "\n")
    print(f"wrote {OUT / name}_*.flac ({total / RATE:.1f} s)")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    names = sys.argv[1:] or list(CALLS)
    unknown = sorted(set(names) - set(CALLS))
    if unknown:
        raise SystemExit(f"unknown call(s) {', '.join(unknown)}; known: {', '.join(CALLS)}")
    for name in names:
        write_call(name, CALLS[name])


if __name__ == "__main__":
    main()
