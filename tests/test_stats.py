"""Rates, gaps and verdicts against published values."""

from __future__ import annotations

import pytest

from campaigns.stats import (
    compare,
    format_p,
    newcombe_interval,
    proportion,
    two_proportion_z_test,
    z_for,
)

# Newcombe RG (1998), "Interval estimation for the difference between independent proportions:
# comparison of eleven methods", Statistics in Medicine 17:873-890, Table II, examples (a)-(h),
# method 10 (score interval from Wilson's intervals, no continuity correction), 4 decimals.
# Recomputed here from the method's formula and matching R's DescTools::BinomDiffCI(method =
# "score") and the SAS reference values for "newcombe-score".
# Two values in the brief this module was written from were not method 10 and are corrected:
# (a) 56/70 - 48/80 is 0.8 - 0.6 = 0.2000 (not 0.1833) with upper bound 0.3339 (not 0.3190);
# (c) 6/7 - 2/7 is 0.0582 to 0.8062 (not 0.0574 to 0.8245).
NEWCOMBE_TABLE_II = [
    (56, 70, 48, 80, 0.2000, 0.0524, 0.3339),
    (9, 10, 3, 10, 0.6000, 0.1705, 0.8090),
    (6, 7, 2, 7, 0.5714, 0.0582, 0.8062),
    (5, 56, 0, 29, 0.0893, -0.0381, 0.1926),
    (0, 10, 0, 20, 0.0000, -0.1611, 0.2775),
    (0, 10, 0, 10, 0.0000, -0.2775, 0.2775),
    (10, 10, 0, 20, 1.0000, 0.6791, 1.0000),
    (10, 10, 0, 10, 1.0000, 0.6075, 1.0000),
]


@pytest.mark.parametrize(("k1", "n1", "k2", "n2", "d", "lo", "hi"), NEWCOMBE_TABLE_II)
def test_newcombe_method_10_matches_table_ii(k1, n1, k2, n2, d, lo, hi):
    got = newcombe_interval(k1, n1, k2, n2)
    assert got == pytest.approx((d, lo, hi), abs=5e-5)


def test_newcombe_is_antisymmetric():
    d, lo, hi = newcombe_interval(56, 70, 48, 80)
    assert newcombe_interval(48, 80, 56, 70) == pytest.approx((-d, -hi, -lo))


def test_wilson_is_the_leaderboard_interval():
    # values from the closed form (Wilson 1927), as tests/test_leaderboard.py checks them
    p = proportion(35, 1000, "answered")
    assert (p.rate, p.lower, p.upper) == pytest.approx((0.035, 0.0253, 0.0483), abs=1e-4)
    assert z_for(0.95) == pytest.approx(1.959964, abs=1e-6)


def test_no_observations_give_no_rate_and_the_maths_refuses():
    p = proportion(0, 0, "dialed")
    assert p.rate is None and p.lower is None and p.upper is None
    with pytest.raises(ValueError):
        newcombe_interval(1, 5, 0, 0)
    with pytest.raises(ValueError):
        two_proportion_z_test(0, 0, 1, 5)
    with pytest.raises(ValueError):
        proportion(6, 5, "answered")


def test_z_test_squares_to_pearson_chi_square():
    # z^2 of the pooled test is Pearson's chi-square without Yates' correction; checked against
    # scipy's independent implementation of the 2x2 test
    from scipy.stats import chi2_contingency

    for k1, n1, k2, n2 in [(56, 70, 48, 80), (9, 10, 3, 10), (70, 2000, 88, 2100), (5, 56, 1, 29)]:
        z, p = two_proportion_z_test(k1, n1, k2, n2)
        chi2, p_ref, _, _ = chi2_contingency([[k1, n1 - k1], [k2, n2 - k2]], correction=False)
        assert z * z == pytest.approx(chi2, rel=1e-9)
        assert p == pytest.approx(p_ref, rel=1e-9)
    # the textbook example: 56/70 vs 48/80 gives z = 2.650, p = 0.0080
    assert two_proportion_z_test(56, 70, 48, 80) == pytest.approx((2.6502, 0.00805), abs=1e-4)


def test_z_test_with_no_variance_finds_no_difference():
    assert two_proportion_z_test(0, 40, 0, 60) == (0.0, 1.0)
    assert two_proportion_z_test(7, 7, 3, 3) == (0.0, 1.0)


def test_verdict_reads_like_the_dashboard_line():
    c = compare("conversion", proportion(70, 2000, "answered"), proportion(88, 2100, "answered"))
    assert c.verdict == (
        "AI converts 3.5% (95% CI 2.8–4.4%, n=2,000 answered) vs human 4.2% (3.4–5.1%, "
        "n=2,100); the gap of −0.7 points (−1.9 to +0.5) is not significant (p=0.25)."
    )
    assert c.significant is False and c.difference == pytest.approx(70 / 2000 - 88 / 2100)
    assert (c.lower, c.upper) == pytest.approx(newcombe_interval(70, 2000, 88, 2100)[1:])


def test_significant_gap_says_which_side_is_higher():
    c = compare("conversion", proportion(30, 100, "answered"), proportion(10, 100, "answered"))
    assert c.significant is True and c.p is not None and c.p < 0.001
    assert c.verdict.endswith("is significant (p<0.001): the AI rate is higher.")


def test_small_rates_keep_two_decimals():
    c = compare("opt_out", proportion(1, 10000, "answered"), proportion(9, 10000, "answered"))
    assert "AI gets opt-outs on 0.01% (95% CI 0.00–0.06%" in c.verdict
    assert "the gap of −0.08 points" in c.verdict


def test_zero_counts_and_no_calls_yet():
    both_zero = compare("conversion", proportion(0, 50, "answered"), proportion(0, 80, "answered"))
    assert both_zero.p == 1.0 and both_zero.significant is False
    assert "0.0% (95% CI 0.0–7.1%, n=50 answered)" in both_zero.verdict

    none = compare("conversion", proportion(0, 0, "answered"), proportion(0, 0, "answered"))
    assert none.verdict == "No answered calls yet on either side; nothing to compare."
    assert none.difference is None and none.p is None and none.significant is None

    one_side = compare("answer", proportion(0, 0, "dialed"), proportion(27, 40, "dialed"))
    assert one_side.verdict.startswith("No AI calls yet; human is answered on 67.5% (95% CI")
    assert one_side.verdict.endswith("n=40 dialed); nothing to compare yet.")


def test_borderline_when_interval_and_test_disagree():
    # 0/20 vs 4/20: the pooled test says p = 0.035, Newcombe's interval (-0.416 to +0.001) just
    # includes zero; the verdict must not sound surer than the evidence
    c = compare("conversion", proportion(0, 20, "answered"), proportion(4, 20, "answered"))
    assert c.significant is True and c.upper is not None and 0 < c.upper < 0.002
    assert c.verdict.endswith(
        "is significant (p=0.035): the human rate is higher; borderline: the 95% interval "
        "includes zero."
    )
    for k in range(0, 21):
        c = compare("conversion", proportion(k, 20, "answered"), proportion(4, 20, "answered"))
        assert c.lower is not None and c.upper is not None
        assert ("borderline" in c.verdict) == (c.significant == (c.lower <= 0 <= c.upper))


def test_p_formatting():
    assert [format_p(p) for p in (0.0004, 0.012, 0.24, 1.0)] == [
        "p<0.001",
        "p=0.012",
        "p=0.24",
        "p=1.00",
    ]


def test_rates_per_different_things_are_not_compared():
    with pytest.raises(ValueError):
        compare("conversion", proportion(1, 2, "answered"), proportion(1, 2, "dialed"))
