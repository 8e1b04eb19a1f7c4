"""Sampling methods draw only from their allowed set, with the right frequencies."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mucode_jax.sampling import Greedy, Temperature, TopK, TopP, make_method
from mucode_jax.sampling.methods import _categorical, _top_p_threshold, argmax, nucleus_threshold

N = 20_000
LOGITS = np.log(np.array([0.30, 0.25, 0.15, 0.10, 0.08, 0.05, 0.04, 0.02, 0.01], np.float32))


def _draw(method, logits=LOGITS, n=N, seed=0):
    """n draws for one row, one key per draw (as the sampler gives one key per row)."""
    keys = jax.random.split(jax.random.key(seed), n)
    batch = jnp.broadcast_to(jnp.asarray(logits), (n, len(logits)))
    return np.asarray(jax.jit(method.get_next_tokens)(batch, keys))


def _expected(allowed, temperature=1.0):
    p = np.exp(LOGITS / temperature)
    p = np.where(np.isin(np.arange(len(p)), allowed), p, 0.0)
    return p / p.sum()


def _assert_frequencies(draws, expected):
    counts = np.bincount(draws, minlength=len(expected))
    assert counts[expected == 0].sum() == 0, f"drew a token outside the allowed set: {counts}"
    # 5 standard deviations of a binomial count: flaky with probability ~1e-6 per token.
    sd = np.sqrt(N * expected * (1 - expected))
    np.testing.assert_array_less(np.abs(counts - N * expected), 5 * sd + 1)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_top_k_draws_only_the_k_most_likely(k):
    _assert_frequencies(_draw(TopK(k=k)), _expected(np.arange(k)))


@pytest.mark.parametrize(
    "p, allowed",
    [
        (0.5, [0, 1]),  # 0.30 < 0.5 <= 0.55
        (0.54, [0, 1]),  # the mass before token 2 (0.55) is not < 0.54
        (0.56, [0, 1, 2]),
        (0.01, [0]),  # always keeps the most likely token
        (1.0, list(range(9))),
    ],
)
def test_top_p_draws_only_the_nucleus(p, allowed):
    _assert_frequencies(_draw(TopP(p=p)), _expected(allowed))


def test_top_p_within_top_k_and_temperature():
    # T = 0.5 sharpens: probabilities ~ p^2; the nucleus of 0.6 within the top 4.
    method = TopP(p=0.6, top_k=4, temperature=0.5)
    p2 = _expected(np.arange(4), temperature=0.5)
    allowed = np.arange(int(np.searchsorted(np.cumsum(p2), 0.6, side="right")) + 1)
    assert list(allowed) == [0, 1]
    _assert_frequencies(_draw(method), _expected(allowed, temperature=0.5))


def test_temperature_frequencies():
    _assert_frequencies(_draw(Temperature(0.7)), _expected(np.arange(9), temperature=0.7))


def test_greedy_and_tiny_temperature_pick_the_argmax():
    logits = np.random.RandomState(0).randn(64, 1000).astype(np.float32)
    keys = jax.random.split(jax.random.key(1), 64)
    best = logits.argmax(-1)
    np.testing.assert_array_equal(Greedy().get_next_tokens(jnp.asarray(logits), keys), best)
    tiny = Temperature(1e-6).get_next_tokens(jnp.asarray(logits), keys)
    np.testing.assert_array_equal(tiny, best)
    assert make_method(temperature=0.0, top_p=0.3, top_k=7) == Greedy()


def test_argmax_equals_jnp_argmax_on_ties_infinities_and_nans():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 1000)).astype(np.float32)
    x[0, [5, 9, 700]] = x[0].max() + 1.0  # ties: the first index wins
    x[1] = -np.inf
    x[2, 3] = np.inf
    x[3, [10, 20]] = np.nan  # a NaN is the max, as in jnp.argmax
    x[4] = np.round(x[4])  # many ties
    for a in (x, x[:, :1], x[:1]):
        got = jax.jit(argmax)(jnp.asarray(a))
        np.testing.assert_array_equal(np.asarray(got), np.asarray(jnp.argmax(a, axis=-1)))
        assert got.dtype == jnp.int32


def test_categorical_draws_what_jax_random_categorical_draws():
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(4, 3000)), jnp.float32)
    key = jax.random.key(5)
    want = jax.random.categorical(key, logits, axis=-1)
    np.testing.assert_array_equal(np.asarray(jax.jit(_categorical)(key, logits)), np.asarray(want))
    keys = jax.random.split(key, 4)
    want = jax.vmap(jax.random.categorical)(keys, logits)
    np.testing.assert_array_equal(np.asarray(jax.jit(_categorical)(keys, logits)), np.asarray(want))


@pytest.mark.parametrize("scale", [8.0, 0.1])  # a nucleus inside the candidates, or not
def test_nucleus_threshold_without_sorting_equals_the_sorted_one(scale):
    rng = np.random.default_rng(2)
    logits = jnp.asarray(rng.normal(size=(6, 5000)) * scale, jnp.float32)
    for p in (0.5, 0.9, 0.95, 1.0):
        want = _top_p_threshold(-jnp.sort(-logits, axis=-1), p)
        got = jax.jit(nucleus_threshold, static_argnums=(1, 2))(logits, p, 64)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    kept = np.asarray((logits >= nucleus_threshold(logits, 0.9, 64)).sum(-1))
    assert (kept < 64).all() if scale > 1 else (kept > 64).all()


def test_make_method_picks_the_cheapest():
    assert make_method(0.7) == Temperature(0.7)
    assert make_method(0.7, top_k=5) == TopK(k=5, temperature=0.7)
    assert make_method(0.7, top_p=0.9, top_k=5) == TopP(p=0.9, temperature=0.7, top_k=5)
    assert make_method(1.0, top_k=1) == Greedy()


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(temperature=-1.0), "temperature"),
        (dict(temperature=1.0, top_p=0.0), "top_p"),
        (dict(temperature=1.0, top_p=1.5), "top_p"),
        (dict(temperature=1.0, top_k=-2), "top_k"),
    ],
)
def test_bad_settings_name_the_setting(kwargs, words):
    with pytest.raises(ValueError, match=words):
        make_method(**kwargs)
