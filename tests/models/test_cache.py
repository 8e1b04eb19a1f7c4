"""Cached prefill + one-token decode equals the uncached forward."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mucode_jax.models.llama import Llama, LlamaConfig, default_positions


def test_prefill_then_decode_equals_full_forward_left_padded():
    cfg = LlamaConfig.tiny(vocab_size=101)
    model = Llama(cfg, rngs=nnx.Rngs(3))
    rng = np.random.RandomState(0)
    b, prompt, new = 3, 11, 6
    tokens = rng.randint(1, 101, (b, prompt + new))
    mask = np.ones_like(tokens)
    mask[1, :4] = 0  # left padding of unequal prompt lengths
    mask[2, :7] = 0
    full = np.asarray(model(tokens, attention_mask=mask))
    positions = np.asarray(default_positions(jnp.asarray(mask)))

    graphdef, state = nnx.split(model)

    @jax.jit
    def step(state, cache, tok, seg, pos):
        m = nnx.merge(graphdef, state)
        return m(tok, segment_ids=seg, positions=pos, cache=cache)

    cache = model.init_cache(b, prompt + new + 3)
    logits, cache = step(state, cache, tokens[:, :prompt], mask[:, :prompt], positions[:, :prompt])
    outs = [np.asarray(logits)]
    for t in range(prompt, prompt + new):
        logits, cache = step(
            state, cache, tokens[:, t : t + 1], mask[:, t : t + 1], positions[:, t : t + 1]
        )
        outs.append(np.asarray(logits))
    cached = np.concatenate(outs, axis=1)
    valid = mask.astype(bool)
    np.testing.assert_allclose(cached[valid], full[valid], atol=1e-5, rtol=0)
    assert int(cache.end) == prompt + new


def test_decoding_with_cache_requires_positions():
    cfg = LlamaConfig.tiny()
    model = Llama(cfg, rngs=nnx.Rngs(0))
    cache = model.init_cache(1, 8)
    try:
        model(np.ones((1, 2), np.int32), cache=cache)
    except ValueError as e:
        assert "positions" in str(e)
    else:
        raise AssertionError("expected a ValueError")


def test_last_only_prefill_gives_the_last_position_and_the_same_cache():
    cfg = LlamaConfig.tiny(vocab_size=101)
    model = Llama(cfg, rngs=nnx.Rngs(1))
    rng = np.random.RandomState(1)
    b, t = 3, 9
    tokens = rng.randint(1, 101, (b, t))
    mask = np.ones_like(tokens)
    mask[1, :3] = 0
    positions = default_positions(jnp.asarray(mask))
    graphdef, state = nnx.split(model)

    def prefill(state, last_only):
        m = nnx.merge(graphdef, state)
        kw = dict(segment_ids=mask, positions=positions, cache=m.init_cache(b, t + 2))
        return m.hidden(tokens, last_only=last_only, **kw)[:2]

    prefill = jax.jit(prefill, static_argnums=1)
    (x, cache), (last, last_cache) = prefill(state, False), prefill(state, True)
    assert last.shape == (b, 1, cfg.hidden_size)
    np.testing.assert_allclose(np.asarray(last[:, 0]), np.asarray(x[:, -1]), atol=1e-5, rtol=0)
    for a, c in zip(jax.tree.leaves(cache), jax.tree.leaves(last_cache)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
