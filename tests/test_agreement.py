"""LocalAgreement on hand-made words: what becomes final, and what is heard twice."""

from speech.agreement import LocalAgreement
from speech.events import Word


def _words(text: str, start: float = 0.0, step: float = 0.4) -> list[Word]:
    return [Word(start=round(start + i * step, 3), end=round(start + (i + 1) * step - 0.05, 3),
                 text=" " + t) for i, t in enumerate(text.split())]


def test_a_word_is_final_once_two_hypotheses_in_a_row_agree_on_it():
    agreement = LocalAgreement()
    fresh, tentative = agreement.update(_words("I want to"))
    assert fresh == [] and [w.text for w in tentative] == [" I", " want", " to"]
    fresh, _ = agreement.update(_words("I want two pay"))
    assert [w.text.strip() for w in fresh] == ["I", "want"]
    # The next hypothesis covers the audio past the final words only.
    fresh, tentative = agreement.update(_words("to pay my bill", start=0.8))
    assert [w.text.strip() for w in fresh] == []  # "two" then "to": no agreement yet
    fresh, _ = agreement.update(_words("to pay my bill today", start=0.8))
    assert [w.text.strip() for w in agreement.committed] == ["I", "want", "to", "pay", "my", "bill"]


def test_punctuation_and_case_do_not_count_as_disagreement():
    agreement = LocalAgreement()
    agreement.update(_words("hello there"))
    fresh, _ = agreement.update(_words("Hello, there."))
    assert [w.text.strip() for w in fresh] == ["Hello,", "there."]


def test_committed_words_are_never_rewritten():
    agreement = LocalAgreement()
    agreement.update(_words("the fee is"))
    agreement.update(_words("the fee is"))
    before = [w.text for w in agreement.committed]
    agreement.update(_words("a fee was", start=0.0))
    agreement.update(_words("a fee was", start=0.0))
    assert [w.text for w in agreement.committed][:3] == before


def test_force_commits_the_whole_hypothesis():
    agreement = LocalAgreement()
    agreement.update(_words("one two"))
    fresh, tentative = agreement.update(_words("three four"), force=True)
    assert [w.text.strip() for w in fresh] == ["three", "four"] and tentative == []


def test_a_repeat_of_the_final_tail_is_dropped_but_not_a_later_one():
    agreement = LocalAgreement()
    agreement.update(_words("pay the bill"))
    agreement.update(_words("pay the bill"))
    # A window cut inside "bill" hears it again just after the final words end.
    again = _words("the bill today", start=0.45)
    assert [w.text.strip() for w in agreement.drop_repeated_tail(again)] == ["today"]
    # The same words seconds later are new speech ("the bill ... the bill").
    later = _words("the bill", start=4.0)
    assert agreement.drop_repeated_tail(later) == later


def test_the_next_window_never_starts_past_an_open_word():
    agreement = LocalAgreement()
    assert agreement.boundary(1.5) == 1.5
    agreement.update(_words("yes please"))
    agreement.update(_words("yes please go"))
    committed_end = agreement.committed[-1].end
    assert agreement.boundary(0.0) == committed_end
    # An open word that starts before the final words end keeps its beginning in the audio.
    agreement.update([Word(start=committed_end - 0.1, end=committed_end + 0.3, text=" on")])
    assert agreement.boundary(0.0) == committed_end - 0.1


def test_a_split_turn_goes_on_from_the_previous_state():
    first = LocalAgreement()
    first.update(_words("thank you for"))
    first.update(_words("thank you for calling"))
    second = LocalAgreement()
    second.carry_over(first)
    fresh, _ = second.update(_words("calling us", start=1.2))
    assert [w.text.strip() for w in fresh] == ["calling"]
