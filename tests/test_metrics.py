"""Tests for mucode_jax.metrics: closed forms on hand-made cases, Monte Carlo, CI coverage."""

import math
from fractions import Fraction

import numpy as np
import pytest

from mucode_jax import metrics

# --- pass@k ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5, 10, 20])
def test_pass_at_k_matches_binomial_closed_form(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
            assert metrics.pass_at_k(n, c, k) == pytest.approx(float(exact), abs=1e-12)


def test_pass_at_k_hand_cases():
    assert metrics.pass_at_k(10, 0, 5) == 0.0
    assert metrics.pass_at_k(10, 10, 1) == 1.0
    assert metrics.pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert metrics.pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert metrics.pass_at_k(5, 1, 5) == 1.0


def test_pass_at_k_is_stable_for_large_n():
    n, c, k = 2000, 7, 500
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert metrics.pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-10)


def test_mean_pass_at_k_averages_over_problems():
    got = metrics.mean_pass_at_k(4, [0, 1, 4], 2)
    assert got == pytest.approx((0.0 + 0.5 + 1.0) / 3)
    per = metrics.pass_at_k_per_problem([4, 6], [1, 2], 1)
    np.testing.assert_allclose(per, [0.25, 1 / 3])


def test_pass_at_k_bad_input_says_what_to_do():
    with pytest.raises(ValueError, match="k=5, n=3"):
        metrics.pass_at_k(3, 1, 5)
    with pytest.raises(ValueError, match="k >= 1"):
        metrics.pass_at_k(3, 1, 0)
    with pytest.raises(ValueError, match="correct samples"):
        metrics.pass_at_k(3, 4, 1)
    with pytest.raises(ValueError, match="no problems"):
        metrics.mean_pass_at_k(3, [], 1)


# --- pass n@k --------------------------------------------------------------------------------


def test_pass_n_at_k_with_n_ge_k_is_pass_at_k():
    for big_n, pub, cor, k in [(10, 5, 3, 5), (8, 8, 1, 3), (6, 2, 0, 6), (20, 7, 7, 4)]:
        for n in (k, k + 3):
            assert metrics.pass_n_at_k(big_n, pub, cor, n, k) == pytest.approx(
                metrics.pass_at_k(big_n, cor, k), abs=1e-12
            )


def test_pass_n_at_k_hand_cases():
    # k = N: the draw is everything; 3 programs pass the public tests, 1 of them is correct.
    assert metrics.pass_n_at_k(5, 3, 1, 1, 5) == pytest.approx(1 / 3)
    assert metrics.pass_n_at_k(5, 3, 1, 2, 5) == pytest.approx(2 / 3)
    assert metrics.pass_n_at_k(5, 3, 1, 3, 5) == pytest.approx(1.0)
    # Only correct programs pass the public tests: one submission suffices when any is drawn.
    assert metrics.pass_n_at_k(10, 2, 2, 1, 3) == pytest.approx(metrics.pass_at_k(10, 2, 3))
    assert metrics.pass_n_at_k(10, 4, 0, 1, 3) == 0.0


def test_pass_n_at_k_matches_monte_carlo():
    rng = np.random.default_rng(0)
    big_n, pub, cor, n, k = 12, 6, 2, 2, 5
    kinds = np.array([2] * cor + [1] * (pub - cor) + [0] * (big_n - pub))  # 2 correct, 1 wrong
    trials = 40_000
    keys = rng.random((trials, big_n)).argsort(axis=1)[:, :k]  # k of N without replacement
    drawn = kinds[keys]
    # Public-passing first, random among them: random priority + big bonus for passing.
    priority = rng.random(drawn.shape) + 2.0 * (drawn > 0)
    submitted = np.take_along_axis(drawn, np.argsort(-priority, axis=1)[:, :n], axis=1)
    mc = (submitted == 2).any(axis=1).mean()
    exact = metrics.pass_n_at_k(big_n, pub, cor, n, k)
    assert abs(mc - exact) < 4 * math.sqrt(exact * (1 - exact) / trials)


def test_pass_n_at_k_from_labels_and_errors():
    got = metrics.pass_n_at_k_from_labels([1, 1, 1, 0, 0], [1, 0, 0, 0, 0], n=1, k=5)
    assert got == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="public AND private"):
        metrics.pass_n_at_k_from_labels([0, 1], [1, 0], n=1, k=1)
    with pytest.raises(ValueError, match="num_correct <= num_public"):
        metrics.pass_n_at_k(5, 1, 2, 1, 2)
    with pytest.raises(ValueError, match="n >= 1"):
        metrics.pass_n_at_k(5, 1, 1, 0, 2)
    with pytest.raises(ValueError, match="k=6, n=5"):
        metrics.pass_n_at_k(5, 1, 1, 1, 6)


# --- BoN@t and per-turn curves ------------------------------------------------------------------


def test_bon_at_t_submits_last_program_so_far():
    # Problem A: fixed at turn 2 and stopped. B: right at turn 1. C: wrong for all 3 turns.
    labels = [[0, 1], [1], [0, 0, 0]]
    np.testing.assert_allclose(metrics.bon_at_t(labels), [1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(metrics.submitted_labels(labels), [[0, 1, 1], [1, 1, 1], [0, 0, 0]])


def test_bon_at_t_is_not_a_max_over_turns():
    # A search run without early stopping that breaks a correct program submits the last one.
    np.testing.assert_allclose(metrics.bon_at_t([[1, 0]]), [1.0, 0.0])


def test_bon_at_t_array_input_searches_axis_and_padding():
    arr = np.array([[[0, 1, np.nan], [1, np.nan, np.nan]], [[0, 0, 0], [0, 1, np.nan]]])
    np.testing.assert_allclose(metrics.bon_at_t(arr), [[0.5, 1.0, 1.0], [0.0, 0.5, 0.5]])
    nested = [[[0, 1], [1]], [[0, 0, 0], [0, 1]]]
    np.testing.assert_allclose(metrics.bon_at_t(nested), metrics.bon_at_t(arr))
    # Every search stopped after turn 1 but the protocol has 3 turns.
    np.testing.assert_allclose(metrics.bon_at_t([[1], [0]], num_turns=3), [0.5, 0.5, 0.5])


def test_bon_at_t_errors():
    with pytest.raises(ValueError, match="at least one program"):
        metrics.bon_at_t([[0, 1], []])
    with pytest.raises(ValueError, match="gap"):
        metrics.bon_at_t(np.array([[0, np.nan, 1]]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.bon_at_t([[2]])
    with pytest.raises(ValueError, match="num_turns"):
        metrics.bon_at_t([[0, 0, 1]], num_turns=2)
    with pytest.raises(ValueError, match="per-turn labels per problem"):
        metrics.bon_at_t([1, 0])


def test_per_turn_success():
    curves = metrics.per_turn_success([[0, 1], [1], [0, 0, 0], [0, 0, 1]])
    np.testing.assert_allclose(curves["cumulative"], [0.25, 0.5, 0.75])
    np.testing.assert_allclose(curves["active"], [1.0, 0.75, 0.5])
    np.testing.assert_allclose(curves["conditional"], [0.25, 1 / 3, 0.5])


# --- bootstrap ---------------------------------------------------------------------------------


def test_bootstrap_ci_basics():
    v = np.array([0, 1, 1, 0, 1, 1, 1, 0, 1, 1], dtype=float)
    mean, lo, hi = metrics.bootstrap_ci(v, n_boot=500, seed=3)
    assert mean == pytest.approx(0.7)
    assert lo <= mean <= hi and lo >= 0 and hi <= 1
    assert metrics.bootstrap_ci(v, n_boot=500, seed=3) == (mean, lo, hi)  # reproducible
    assert metrics.bootstrap_ci(np.full(7, 0.25)) == (0.25, 0.25, 0.25)
    d = metrics.mean_and_ci(v, n_boot=100)
    assert set(d) == {"mean", "lo", "hi"}


def test_bootstrap_ci_errors():
    with pytest.raises(ValueError, match="per-problem scores"):
        metrics.bootstrap_ci([])
    with pytest.raises(ValueError, match="NaN"):
        metrics.bootstrap_ci([0.0, np.nan])
    with pytest.raises(ValueError, match="alpha"):
        metrics.bootstrap_ci([0.0, 1.0], alpha=1.5)
    with pytest.raises(ValueError, match="per-problem scores"):
        metrics.bootstrap_ci(np.zeros((2, 2, 2)))


def _coverage(draws, simulate, **kwargs):
    hits = 0
    for d in range(draws):
        values, truth = simulate(d)
        _, lo, hi = metrics.bootstrap_ci(values, n_boot=400, seed=d, **kwargs)
        hits += lo <= truth <= hi
    return hits / draws


def test_bootstrap_ci_covers_the_truth_95_percent_of_the_time():
    # Problems of random difficulty p ~ Beta(2, 3) (mean 0.4), one 0/1 outcome each. The CI is
    # for the mean over the population of problems. 600 draws: sd of the coverage ~0.009.
    rng = np.random.default_rng(1234)

    def simulate(_):
        p = rng.beta(2, 3, size=80)
        return (rng.random(80) < p).astype(float), 0.4

    assert 0.925 <= _coverage(600, simulate) <= 0.97


def test_bootstrap_ci_with_repeated_searches_covers_95_percent():
    # S = 10 i.i.d. searches per problem, difficulties spread out (Beta(0.8, 1.2), mean 0.4).
    # Treating the S * P outcomes as independent (flattening) covers only ~70 % here: the test
    # catches resampling the wrong unit.
    rng = np.random.default_rng(99)

    def simulate(_):
        p = rng.beta(0.8, 1.2, size=60)
        return (rng.random((10, 60)) < p).astype(float), 0.4

    assert 0.925 <= _coverage(500, simulate) <= 0.97

    def simulate_flat(d):
        values, truth = simulate(d)
        return values.reshape(-1), truth

    assert _coverage(200, simulate_flat) < 0.85
