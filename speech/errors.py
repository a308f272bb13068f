"""Errors that speech/ raises at its boundaries; each says what was wrong with the input."""


class SpeechError(Exception):
    """Base class for every error speech/ raises on purpose."""


class AudioFormatError(SpeechError):
    """The audio is in a codec, rate or layout we cannot decode."""


class FrameError(SpeechError):
    """One media frame could not be decoded; the stream it belongs to goes on."""


class ModelNotAvailableError(SpeechError):
    """A model is neither configured nor installed from its package."""
