"""callwise speech: live call audio in, a diarized, role-labelled transcript out.

    models = SpeechModels.load()
    transcript = await transcribe_file("call.wav", models, CallConfig())

For live media, build a `CallTranscriber` and `accept()` audio as it arrives; utterances (partial
and final) reach the sink you pass. Nothing here imports dialogue/, assist/ or campaigns/.
"""

from .call import CallConfig, CallTranscriber, SpeechModels, build_transcript
from .diarization import DiarizationConfig
from .errors import AudioFormatError, FrameError, ModelNotAvailableError, SpeechError
from .events import Transcript, TranscriptSegment, Utterance, Word
from .replay import replay, transcribe_file
from .roles import RoleConfig
from .settings import SpeechSettings
from .streaming import StreamingConfig
from .twilio import TwilioMediaStream

__all__ = [
    "AudioFormatError", "CallConfig", "CallTranscriber", "DiarizationConfig", "FrameError",
    "ModelNotAvailableError", "RoleConfig", "SpeechError", "SpeechModels", "SpeechSettings",
    "StreamingConfig", "Transcript", "TranscriptSegment", "TwilioMediaStream", "Utterance", "Word",
    "build_transcript", "replay", "transcribe_file",
]
