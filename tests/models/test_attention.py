"""Attention kernels and the KV-cache layout.

* `attention` (jax.nn.dot_product_attention) equals the einsum reference to 1e-6 in float32,
  on packed segments with padding, for GQA, MQA and MHA;
* `cached_attention` on the cache layout (keys [B, K, H, S], values [B, K, S, H]) equals the
  reference on the same keys;
* the compiled decode step never transposes or copies a cache-sized array.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mucode_jax.models.llama import (
    Llama,
    LlamaConfig,
    attention,
    attention_reference,
    cached_attention,
)
from mucode_jax.sampling import Sampler


def _packed_mask(rng: np.random.Generator, b: int, t: int) -> np.ndarray:
    """Causal, segment-aware [B, T, T] masks of packed rows with right padding."""
    seg = np.zeros((b, t), np.int32)
    for i in range(b):
        pos, sid = 0, 1
        end = t - 1 - rng.integers(0, t // 3)  # some padding at the end
        while pos < end:
            n = int(rng.integers(1, max(2, t // 2)))
            seg[i, pos : min(end, pos + n)] = sid
            pos, sid = pos + n, sid + 1
    causal = np.tril(np.ones((t, t), bool))
    same = (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] != 0)
    return same & causal[None]


@pytest.mark.parametrize("n,k", [(8, 2), (4, 1), (4, 4)])
def test_fused_attention_equals_the_einsum_reference(n, k):
    rng = np.random.default_rng(n * 10 + k)
    b, t, h = 3, 37, 16
    q = jnp.asarray(rng.normal(size=(b, t, n, h)), jnp.float32)
    kk = jnp.asarray(rng.normal(size=(b, t, k, h)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(b, t, k, h)), jnp.float32)
    mask = jnp.asarray(_packed_mask(rng, b, t))
    got = jax.jit(attention)(q, kk, v, mask)
    want = jax.jit(attention_reference)(q, kk, v, mask)
    real = np.asarray(mask.any(-1))  # rows with something to attend to
    assert real.sum() > b * t // 2 and not real.all()
    np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], atol=1e-6, rtol=0)
    # Rows with nothing to attend to (padding) average the values in both.
    np.testing.assert_allclose(np.asarray(got)[~real], np.asarray(want)[~real], atol=1e-5)


def test_cached_attention_reads_the_heads_first_layout():
    rng = np.random.default_rng(0)
    b, t, s, n, k, h = 2, 3, 11, 4, 2, 8
    q = jnp.asarray(rng.normal(size=(b, t, n, h)), jnp.float32)
    keys = jnp.asarray(rng.normal(size=(b, s, k, h)), jnp.float32)
    vals = jnp.asarray(rng.normal(size=(b, s, k, h)), jnp.float32)
    mask = jnp.asarray(rng.random((b, t, s)) < 0.7).at[:, :, 0].set(True)
    got = cached_attention(q, keys.transpose(0, 2, 3, 1), vals.swapaxes(1, 2), mask)
    want = attention_reference(q, keys, vals, mask)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6, rtol=0)


@pytest.mark.parametrize("window", [None, 48])
def test_decode_step_moves_no_cache_sized_array(window):
    config = LlamaConfig.tiny(
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_size=64,
        head_dim=16,
        vocab_size=256,
    )
    sampler = Sampler(
        Llama(config, rngs=nnx.Rngs(0)),
        max_new_tokens=64,
        max_prompt_length=32,
        max_batch_size=8,
        eos_ids=(),
    )
    arrays = sampler._prepare([[1, 2, 3]] * 8, np.full(8, 64, np.int32), np.arange(8))
    state = sampler._prefill(sampler.method, sampler._params, *arrays, np.uint32(0))
    cache_shape = state.cache.layers[0].v.shape
    assert cache_shape == (8, 2, 32 + 64, 16)  # [B, K, S, H]
    assert state.cache.layers[0].k.shape == (8, 2, 16, 32 + 64)  # [B, K, H, S]
    decode = sampler._decode.lower(sampler.method, window, sampler._params, state, np.int32(64))
    hlo = decode.compile().as_text()
    moved = []
    for line in hlo.splitlines():
        m = re.search(r"= \w+\[([\d,]+)\]\S* (transpose|copy)\(", line)
        if m and np.prod([int(x) for x in m.group(1).split(",")]) >= np.prod(cache_shape):
            moved.append(line.strip()[:160])
    assert moved == [], "\n".join(moved)


def _spy(monkeypatch, backend: str) -> list:
    """Pretends the default backend is ``backend`` and records each implementation that
    `attention` asks `jax.nn.dot_product_attention` for (the real one still runs)."""
    import mucode_jax.models.llama as llama

    calls, real = [], jax.nn.dot_product_attention

    def recording(*args, implementation=None, **kw):
        calls.append(implementation)
        return real(*args, implementation=implementation, **kw)

    monkeypatch.setattr(llama.jax, "default_backend", lambda: backend)
    monkeypatch.setattr(llama.jax.nn, "dot_product_attention", recording)
    # The probe's answers hold per process; a fresh cache for the faked backend.
    monkeypatch.setattr(
        llama, "cudnn_compiles", functools.lru_cache(llama.cudnn_compiles.__wrapped__)
    )
    return calls


def _inputs(dtype, t=32):
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(2, t, 4, 16)), dtype)
    kv = jnp.asarray(rng.normal(size=(2, t, 2, 16)), dtype)
    return q, kv, kv, jnp.asarray(_packed_mask(rng, 2, t))


def test_auto_attention_tries_cudnn_on_a_gpu_for_16_bit_inputs(monkeypatch):
    """ "auto" asks for cuDNN's kernel only where it can apply (a GPU, bf16/fp16): it first
    compiles a tiny cuDNN program (forward and gradient) and takes XLA's when that fails;
    here there is no cuDNN, so the result is XLA's, and the probe is not repeated."""
    import mucode_jax.models.llama as llama

    q, k, v, mask = _inputs(jnp.bfloat16)
    want = attention(q, k, v, mask, "xla")
    calls = _spy(monkeypatch, "gpu")
    got = attention(q, k, v, mask, "auto")
    assert calls == ["cudnn", "xla"]  # the probe's attempt, then XLA's
    assert llama.cudnn_compiles.cache_info().misses == 1
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
    calls.clear()
    attention(q, k, v, mask, "auto")
    assert calls == ["xla"] and llama.cudnn_compiles.cache_info().hits == 1
    calls.clear()
    attention(*(x.astype(jnp.float32) for x in (q, k, v)), mask, "auto")
    assert calls == ["xla"]  # cuDNN's flash kernel takes no float32
    calls.clear()
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    attention(q, k, v, mask, "auto")
    assert calls == ["xla"]


def test_cudnn_attention_where_it_cannot_run_names_the_fix():
    q, k, v, mask = _inputs(jnp.bfloat16)
    with pytest.raises(ValueError, match="attention='cudnn' does not apply.*'auto' or 'xla'"):
        attention(q, k, v, mask, "cudnn")


def test_llama_config_refuses_an_unknown_attention():
    with pytest.raises(ValueError, match="attention='flash' is unknown.*'auto', 'xla', 'cudnn'"):
        LlamaConfig.tiny(attention="flash")


def test_auto_attention_keeps_xla_for_shapes_cudnn_would_refuse_in_training(monkeypatch):
    """Odd lengths or a head dim that is not a multiple of 8: XLA's, without asking cuDNN
    (whose training kernel would refuse them only when the backward pass is traced)."""
    calls = _spy(monkeypatch, "gpu")
    q, k, v, mask = _inputs(jnp.bfloat16, t=31)
    attention(q, k, v, mask, "auto")
    assert calls == ["xla"]
    calls.clear()
    q, k, v = (x[..., :12] for x in _inputs(jnp.bfloat16)[:3])
    attention(q, k, v, _inputs(jnp.bfloat16)[3], "auto")
    assert calls == ["xla"]
