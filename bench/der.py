"""DER of the streaming diarizer on the pyannote sample call and the AMI dev excerpts.

    python bench/der.py [key=value ...]   # DiarizationConfig overrides, e.g. latency=1.0
"""

from __future__ import annotations

import sys
import time
import warnings

from common import AUDIO, machine, require_shared

warnings.filterwarnings("ignore")


def load_rttm(path, uri):  # type: ignore[no-untyped-def]
    from pyannote.core import Annotation, Segment

    ann = Annotation(uri=uri)
    for line in path.read_text().splitlines():
        f = line.split()
        if f and f[1] == uri:
            ann[Segment(float(f[3]), float(f[3]) + float(f[4]))] = f[7]
    return ann


def main() -> None:
    require_shared()
    from pyannote.metrics.diarization import DiarizationErrorRate

    from speech.audio_file import load_audio
    from speech.diarization import DiarizationConfig, DiarizationModels, StreamingDiarizer
    from speech.models import ModelRegistry

    overrides = {}
    for arg in sys.argv[1:]:
        key, value = arg.split("=")
        overrides[key] = float(value) if "." in value else int(value)
    config = DiarizationConfig(**overrides)
    models = DiarizationModels.from_registry(ModelRegistry())
    cases = [("sample", AUDIO / "pyannote/sample.wav", AUDIO / "pyannote/sample.rttm"),
             ("dev00", AUDIO / "pyannote/dev00.wav", AUDIO / "pyannote/debug.development.rttm"),
             ("dev01", AUDIO / "pyannote/dev01.wav", AUDIO / "pyannote/debug.development.rttm")]
    print(f"machine: {machine()}")
    print("models: pyannote PyanNet segmentation (whisperx 3.8.6 asset) + resemblyzer 0.1.4")
    print(f"config: {config.model_dump()}")
    print(f"{'file':8} {'DER':>6} {'miss':>6} {'FA':>6} {'conf':>6} {'spk':>4} {'RTF':>6}")
    total = DiarizationErrorRate()
    for uri, wav, rttm in cases:
        audio = load_audio(wav).to_16k().samples[0]
        diarizer = StreamingDiarizer(models, config)
        t0 = time.perf_counter()
        for i in range(0, len(audio), 320):  # 20 ms frames, as telephony delivers them
            diarizer.accept(audio[i : i + 320])
        diarizer.flush()
        rtf = (time.perf_counter() - t0) / (len(audio) / 16000)
        ref = load_rttm(rttm, uri)
        d = DiarizationErrorRate()(ref, diarizer.annotation(uri), detailed=True)
        total(ref, diarizer.annotation(uri))
        tot = d["total"]
        print(f"{uri:8} {d['diarization error rate']:6.3f} {d['missed detection'] / tot:6.3f} "
              f"{d['false alarm'] / tot:6.3f} {d['confusion'] / tot:6.3f} "
              f"{len(diarizer.speakers):4d} {rtf:6.3f}")
    print(f"{'overall':8} {abs(total):6.3f}")


if __name__ == "__main__":
    main()
