"""bench/scoring.py on hand-made transcripts: WER ignores who spoke, cpWER does not, DER's
collar only forgives boundaries."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("meeteval", reason="meeteval is missing: it comes with the dev extra "
                    "(pip install -e '.[dev]', which scripts/install runs)")

from bench.scoring import NIST_COLLAR, Seg, cpwer, der, load_rttm, load_stm, tokens, wer

REF = [
    Seg(0.0, 2.0, "Diane", "Hello, this is Diane."),
    Seg(2.5, 4.0, "Sheila", "Hi Diane! I'm Sheila."),
    Seg(4.5, 7.0, "Diane", "Nice to meet you."),
    Seg(7.5, 9.0, "Sheila", "Likewise."),
]


def _relabel(segs: list[Seg], names: dict[str, str]) -> list[Seg]:
    return [Seg(s.start, s.end, names[s.speaker], s.text) for s in segs]


def test_perfect_transcript_scores_zero_under_any_speaker_names() -> None:
    hyp = _relabel(REF, {"Diane": "S2", "Sheila": "S1"})
    assert wer(REF, hyp).errors == 0
    assert cpwer(REF, hyp).errors == 0
    assert der(REF, hyp, 9.0)["diarization error rate"] == 0.0
    assert der(REF, hyp, 9.0, NIST_COLLAR)["diarization error rate"] == 0.0


def test_lines_given_to_the_wrong_speaker_cost_cpwer_not_wer() -> None:
    hyp = _relabel(REF, {"Diane": "S1", "Sheila": "S2"})
    hyp[3] = Seg(7.5, 9.0, "S1", "Likewise.")  # Sheila's last line shown as Diane's
    assert wer(REF, hyp).errors == 0
    moved = cpwer(REF, hyp)
    assert moved.errors == 2  # one word missing from Sheila, one too many for Diane
    assert moved.error_rate > 0
    everything_one_speaker = [Seg(s.start, s.end, "S1", s.text) for s in REF]
    assert wer(REF, everything_one_speaker).errors == 0
    one = cpwer(REF, everything_one_speaker)
    assert one.errors == 2 * len(tokens("Hi Diane! I'm Sheila. Likewise."))
    assert one.missed_speaker == 1


def test_collar_forgives_boundaries_only() -> None:
    shifted = [Seg(s.start + 0.2, s.end + 0.2, s.speaker, s.text) for s in REF]
    loose = der(REF, shifted, 9.5)["diarization error rate"]
    assert loose > 0
    assert der(REF, shifted, 9.5, NIST_COLLAR)["diarization error rate"] == 0.0  # 0.2 < 0.25
    further = [Seg(s.start + 0.4, s.end + 0.4, s.speaker, s.text) for s in REF]
    assert 0 < der(REF, further, 9.5, NIST_COLLAR)["diarization error rate"] <= der(
        REF, further, 9.5)["diarization error rate"]
    swapped = _relabel(REF, {"Diane": "S1", "Sheila": "S1"})
    assert der(REF, swapped, 9.0, NIST_COLLAR)["confusion"] > 0  # speakers are not boundaries


def test_one_normalisation_both_sides() -> None:
    assert tokens("Hello, WORLD! didn't-stop") == ["hello", "world", "didn't", "stop"]
    assert tokens("廣州市，房地產。") == list("广州市房地产")  # simplified characters
    assert tokens("我用iPhone 12") == ["我", "用", "iphone", "12"]
    ref = [Seg(0.0, 1.0, "A", "广州市房地产中介协会分析")]
    hyp = [Seg(0.0, 1.0, "S1", "廣州市房地產中介協會分析。")]
    assert wer(ref, hyp).errors == cpwer(ref, hyp).errors == 0
    assert wer(ref, [Seg(0.0, 1.0, "S1", "广州市房地产中介协会")]).length == 12


def test_reference_files(tmp_path: Path) -> None:
    stm = tmp_path / "x.stm"
    stm.write_text(";; comment\nx 1 A 0.5 1.0 Hello?\nx 1 B 1.2 2.0 Hi there.\n")
    rttm = tmp_path / "x.rttm"
    rttm.write_text("SPEAKER x 1 0.500 0.500 <NA> <NA> A <NA> <NA>\n"
                    "SPEAKER y 1 0.000 9.000 <NA> <NA> C <NA> <NA>\n")
    assert load_stm(stm) == [Seg(0.5, 1.0, "A", "Hello?"), Seg(1.2, 2.0, "B", "Hi there.")]
    assert load_rttm(rttm, "x") == [Seg(0.5, 1.0, "A")]
