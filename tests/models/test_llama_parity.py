"""Our Flax Llama and verifier equal HF transformers in float32 (logits and every layer)."""

from __future__ import annotations

import numpy as np
import pytest

from mucode_jax.models.hf import from_state_dict
from mucode_jax.models.llama import LlamaConfig
from tests.models import hf_utils

TOL = 1e-4


@pytest.mark.parametrize("name", sorted(hf_utils.SHAPES))
@pytest.mark.parametrize("pad", ["left", "right"])
def test_logits_and_hidden_states_match_transformers(name, pad):
    hf = hf_utils.hf_model(name)
    ours = from_state_dict(hf.state_dict(), LlamaConfig.from_hf(hf.config))
    tokens, mask, positions = hf_utils.batch(hf.config.vocab_size, pad=pad)
    ref = hf_utils.torch_forward(hf, tokens, mask, positions, output_hidden_states=True)
    logits, hidden = ours(tokens, attention_mask=mask, return_hidden=True)
    valid = mask.astype(bool)
    assert logits.shape == ref.logits.shape
    assert logits.dtype == np.float32
    np.testing.assert_array_less(np.abs(np.asarray(logits) - ref.logits.numpy())[valid].max(), TOL)
    assert len(hidden) == len(ref.hidden_states) == hf.config.num_hidden_layers + 1
    for i, (h_ours, h_ref) in enumerate(zip(hidden, ref.hidden_states)):
        diff = np.abs(np.asarray(h_ours) - h_ref.numpy())[valid].max()
        assert diff < TOL, f"hidden state {i} differs by {diff}"


@pytest.mark.parametrize("name", ["gqa2_untied_llama3", "mqa_odd_sizes"])
@pytest.mark.parametrize("pad", ["left", "right"])
def test_verifier_scores_match_sequence_classification(name, pad):
    hf = hf_utils.hf_model(name, seqcls=True)
    ours = from_state_dict(hf.state_dict(), LlamaConfig.from_hf(hf.config), verifier=True)
    tokens, mask, positions = hf_utils.batch(hf.config.vocab_size, b=4, pad=pad)
    ref = hf_utils.torch_forward(hf, tokens, mask, positions).logits.numpy()[:, 0]
    scores = np.asarray(ours(tokens, attention_mask=mask))
    assert scores.shape == (4,)
    np.testing.assert_allclose(scores, ref, atol=TOL, rtol=0)


@pytest.mark.parametrize("name", ["gqa2_untied_llama3", "mqa_odd_sizes"])
def test_grouped_attention_matches_transformers_and_xla_gradients(name):
    """`LlamaConfig.attention="grouped"` (the CPU path): same logits and verifier scores as
    transformers, same gradients as the default path to float32 rounding, packed rows too."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    hf = hf_utils.hf_model(name)
    cfg = LlamaConfig.from_hf(hf.config)
    ours = from_state_dict(hf.state_dict(), cfg.replace(attention="grouped"))
    tokens, mask, positions = hf_utils.batch(hf.config.vocab_size, pad="right")
    ref = hf_utils.torch_forward(hf, tokens, mask, positions).logits.numpy()
    valid = mask.astype(bool)
    got = np.asarray(ours(tokens, attention_mask=mask))
    np.testing.assert_array_less(np.abs(got - ref)[valid].max(), TOL)

    default = from_state_dict(hf.state_dict(), cfg)
    segments = np.where(valid, 1 + (np.arange(mask.shape[1]) >= 5), 0).astype(np.int32)

    def loss(model):
        out = model(tokens, segment_ids=segments)
        return jnp.mean(jnp.where(segments[..., None] > 0, out, 0.0) ** 2)

    grads = [nnx.grad(loss)(m) for m in (default, ours)]
    flat = [jax.tree.leaves(nnx.state(g)) for g in grads]
    assert len(flat[0]) == len(flat[1]) > 0
    for a, b in zip(*flat):
        scale = float(np.abs(np.asarray(a)).max()) + 1e-12
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=2e-5 * scale, rtol=0)


def test_unknown_attention_is_named():
    with pytest.raises(ValueError, match="attention='flash' is unknown"):
        LlamaConfig.tiny(attention="flash")


def test_packed_sequences_equal_separate_forwards():
    hf = hf_utils.hf_model("gqa2_untied_llama3")
    ours = from_state_dict(hf.state_dict(), LlamaConfig.from_hf(hf.config))
    rng = np.random.RandomState(1)
    a, b = rng.randint(1, 128, 9), rng.randint(1, 128, 13)
    packed = np.concatenate([a, b, [0, 0]])[None]
    segments = np.array([[1] * 9 + [2] * 13 + [0, 0]])
    out = np.asarray(ours(packed, segment_ids=segments))[0]
    alone_a = np.asarray(ours(a[None]))[0]
    alone_b = np.asarray(ours(b[None]))[0]
    np.testing.assert_allclose(out[:9], alone_a, atol=TOL, rtol=0)
    np.testing.assert_allclose(out[9:22], alone_b, atol=TOL, rtol=0)


def test_bf16_compute_with_fp32_params_is_close_to_fp32():
    import jax.numpy as jnp

    hf = hf_utils.hf_model("gqa2_untied_llama3")
    cfg = LlamaConfig.from_hf(hf.config)
    f32 = from_state_dict(hf.state_dict(), cfg)
    bf16 = from_state_dict(hf.state_dict(), cfg.replace(dtype=jnp.bfloat16))
    assert bf16.layers[0].attn.q[...].dtype == jnp.float32  # master weights stay fp32
    tokens, mask, _ = hf_utils.batch(128)
    a = np.asarray(f32(tokens, attention_mask=mask))
    b = np.asarray(bf16(tokens, attention_mask=mask))
    assert b.dtype == np.float32
    valid = mask.astype(bool)
    rel = np.abs(a - b)[valid].max() / np.abs(a)[valid].max()
    assert 0 < rel < 0.05
