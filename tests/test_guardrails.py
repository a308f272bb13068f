"""Guardrails: overrides, forbidden claims and disclosures, each from a rules file."""

from dialogue.guardrail_eval import score
from dialogue.guardrails import DisclosureTracker, check, load_rules

from .conftest import FIXTURES


def test_labelled_utterances_fire_exactly_the_expected_rules():
    result = score(FIXTURES / "guardrails" / "labelled.jsonl")
    assert result.positives >= 20
    assert result.missed == [] and result.false_alarms == []


def test_an_override_comes_first_and_carries_its_action():
    checked = check("My card 4111 1111 1111 1111 was charged twice, stop calling me!", "customer")
    assert checked.override is not None and checked.override.rule == "opt_out"
    assert checked.override.action == "stop_and_add_to_do_not_call"
    assert "[CARD]" in checked.text and "4111" not in checked.text
    assert checked.findings[0].kind == "override" and not checked.blocked


def test_a_forbidden_claim_blocks_the_text_and_says_why():
    checked = check("Honestly, this fund is risk-free.", "bot")
    assert checked.blocked
    (finding,) = checked.findings
    assert finding.rule == "guaranteed_returns" and "misleading" in finding.why
    assert finding.evidence == "risk-free"
    # The customer saying the same words is not a claim we made.
    assert not check("Is this fund risk-free?", "customer").blocked


def test_disclosures_are_tracked_and_overdue_ones_alert_once():
    tracker = DisclosureTracker(automated=False)
    assert tracker.hear("Thank you for calling Harbor Bank, this is Alex calling from Harbor.",
                        "agent", 2.0) == ["identity_and_company"]
    assert tracker.hear("this call may be recorded", "customer", 3.0) == []
    assert [f.rule for f in tracker.overdue(61.0)] == ["recording_notice"]
    assert tracker.overdue(90.0) == []
    bot = DisclosureTracker(automated=True)
    bot.hear("您好，我是海港银行的智能客服，本次通话将被录音。", "bot", 1.0)
    assert set(bot.made) == {"identity_and_company", "ai_disclosure", "recording_notice"}


def test_rules_come_from_a_file(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text('[[forbidden]]\nname = "no_crypto"\nwhy = "not our product"\n'
                    'patterns = ["bitcoin"]\n')
    rules = load_rules(path)
    assert check("Buy Bitcoin now", "agent", rules).findings[0].rule == "no_crypto"
    assert check("Guaranteed returns!", "agent", rules).findings == []
