"""Typed events speech/ emits: the contract with dialogue/, assist/ and campaigns/."""

from __future__ import annotations

from pydantic import BaseModel, Field

from core.events import SpeakerRole as Role


class Word(BaseModel):
    start: float = Field(description="seconds from the start of the call")
    end: float
    text: str
    probability: float = 1.0
    speaker: str | None = None
    final_at: float | None = Field(
        None, description="time.monotonic() when this word was first shown as final text")


class Utterance(BaseModel):
    """One stretch of speech between endpoints on one channel.

    Partial utterances are provisional and superseded by later ones with the same `utterance_id`;
    a final utterance never changes afterwards.
    """

    call_id: str
    utterance_id: str
    channel: int
    final: bool
    start: float
    end: float
    text: str
    stable_text: str = Field("", description="partials: the words two decodes in a row agreed "
                             "on; with commit_words they are final, and the final text starts "
                             "with exactly these")
    words: list[Word] = Field(default_factory=list)
    language: str
    speaker: str | None = None
    role: Role = "unknown"
    # Mono calls: a final sent before the diarizer has settled who spoke (`provisional`), and
    # the settled parts that replace it (`replaces` names the provisional utterance).
    provisional: bool = False
    replaces: str | None = None
    end_of_turn: float | None = Field(
        None, description="finals: the end-of-turn model's probability that the speaker was "
        "done at the pause that ended this utterance (above its threshold: the model ended "
        "it); None where the model was not asked (a long utterance, a quick pause, no model)")
    # Wall-clock bookkeeping for latency figures: when the last audio of the utterance arrived
    # and when this event was produced (time.monotonic seconds).
    audio_end_wallclock: float | None = None
    emitted_wallclock: float | None = None


class TranscriptSegment(BaseModel):
    """A run of words by one speaker: the unit of the JSON transcript."""

    start: float
    end: float
    speaker: str
    role: Role
    text: str


class Transcript(BaseModel):
    segments: list[TranscriptSegment]
    audio_seconds: float
    processing_seconds: float
    language: str | None = None
    skipped_frames: int = 0
    latency_seconds: list[float] | None = Field(
        None, description="end of utterance -> final text, per utterance (--realtime only)"
    )
    word_latency_seconds: list[float] | None = Field(
        None, description="end of a word in the audio -> that word shown as final text, per "
        "final word (--realtime only)")
