"""Train-step options: bf16 compute over float32 master weights, rematerialisation, accumulation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from mucode_jax import sharding as sh
from mucode_jax.data import pipeline
from mucode_jax.models.llama import Llama, LlamaConfig
from mucode_jax.training import steps
from mucode_jax.training.state import create_train_state


def _batch(accum=1):
    rng = np.random.default_rng(0)
    ex = []
    for _ in range(4):
        n = int(rng.integers(8, 30))
        ids = rng.integers(6, 200, n + 1).astype(np.int32)
        ex.append(
            {
                "inputs": ids[:-1],
                "targets": ids[1:],
                "weights": (np.arange(n) > n // 2).astype(np.float32),
            }
        )
    rows = next(iter(pipeline.sft_dataset(ex, seq_len=32, rows=4, pack=False, shuffle=False)))
    return {k: jnp.asarray(v.reshape(accum, -1, *v.shape[1:])) for k, v in rows.items()}


def _step(cfg, accum=1, n=2):
    opt = optax.adamw(1e-2)
    graphdef, state, _ = create_train_state(
        lambda: Llama(cfg, rngs=nnx.Rngs(0)), opt, sh.make_mesh()
    )
    step = jax.jit(steps.make_train_step(steps.sft_loss_fn(graphdef), opt), donate_argnums=0)
    out = []
    for _ in range(n):
        state, m = step(state, _batch(accum))
        out.append(float(m["loss"]))
    return state, out


def test_bf16_compute_keeps_float32_master_weights():
    state32, l32 = _step(LlamaConfig.tiny(num_hidden_layers=1, vocab_size=256))
    state16, l16 = _step(LlamaConfig.tiny(num_hidden_layers=1, vocab_size=256, dtype=jnp.bfloat16))
    assert {x.dtype for x in jax.tree.leaves(state16.params)} == {jnp.dtype(jnp.float32)}
    assert {x.dtype for x in jax.tree.leaves(state16.opt_state)} <= {
        jnp.dtype(jnp.float32),
        jnp.dtype(jnp.int32),
    }
    np.testing.assert_allclose(l16, l32, rtol=2e-2)


def test_remat_and_accumulation_do_not_change_the_losses():
    _, base = _step(LlamaConfig.tiny(num_hidden_layers=1, vocab_size=256))
    _, remat = _step(LlamaConfig.tiny(num_hidden_layers=1, vocab_size=256, remat=True))
    _, accum = _step(LlamaConfig.tiny(num_hidden_layers=1, vocab_size=256), accum=2)
    np.testing.assert_allclose(remat, base, rtol=1e-6)
    np.testing.assert_allclose(accum, base, rtol=1e-5)


def test_remat_policies_do_not_change_the_losses():
    _, base = _step(LlamaConfig.tiny(num_hidden_layers=1, vocab_size=256, remat=True))
    for policy in ("dots", "dots_all"):
        cfg = LlamaConfig.tiny(num_hidden_layers=1, vocab_size=256, remat=True, remat_policy=policy)
        _, out = _step(cfg)
        np.testing.assert_allclose(out, base, rtol=1e-6)
    with pytest.raises(ValueError, match="remat_policy='some'"):
        LlamaConfig.tiny(remat_policy="some")


def test_chunked_cross_entropy_equals_the_whole_logits_and_never_builds_them():
    cfg = LlamaConfig.tiny(num_hidden_layers=1, vocab_size=512)
    model = Llama(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    mb = {k: v[0] for k, v in _batch().items()}  # [4, 32]
    results = {}
    for chunk in (None, 7, 32):  # 7 does not divide T = 32: the last chunk is padded
        fn = steps.sft_loss_fn(graphdef, logits_chunk=chunk)
        (total, (count, _)), grads = jax.value_and_grad(
            lambda p, fn=fn: (lambda t, c, a: (t, (c, a)))(*fn(p, mb)), has_aux=True
        )(params)
        results[chunk] = (float(total), float(count), grads)
    base_total, base_count, base_grads = results[None]
    for chunk in (7, 32):
        total, count, grads = results[chunk]
        assert count == base_count
        np.testing.assert_allclose(total, base_total, rtol=1e-6)
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(base_grads)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    # The compiled gradient holds at most one chunk of float32 logits, never all of them.
    fn = steps.sft_loss_fn(graphdef, logits_chunk=8)
    hlo = jax.jit(jax.grad(lambda p: fn(p, mb)[0])).lower(params).compile().as_text()
    assert "f32[4,32,512]" not in hlo and "f32[4,8,512]" in hlo
    whole = steps.sft_loss_fn(graphdef, logits_chunk=None)
    assert (
        "f32[4,32,512]"
        in jax.jit(jax.grad(lambda p: whole(p, mb)[0])).lower(params).compile().as_text()
    )


def _compile_auto(cfg, budget, logs):
    """compile_step of cfg's train step with the "auto" candidates under ``budget`` bytes."""
    from mucode_jax.training.state import abstract_like

    opt = optax.adamw(1e-2)
    mesh = sh.make_mesh()
    graphdef, state, shardings = create_train_state(lambda: Llama(cfg, rngs=nnx.Rngs(0)), opt, mesh)
    batch = _batch()
    spec = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
    exe = steps.compile_step(
        steps.make_train_step(steps.sft_loss_fn(graphdef), opt), shardings,
        abstract_like(state, shardings), spec, mesh, sh.DEFAULT_RULES,
        log=logs.append, remat_policies=("dots", "full"), memory_budget=budget,
    )  # fmt: skip
    _, m = exe(state, steps.put_batch(batch, steps.batch_shardings(spec, mesh, sh.DEFAULT_RULES)))
    # Rematerialising only the layer input ("full") recomputes the forward matmuls that
    # "dots" keeps: the kept program's dot count says which policy it was traced with.
    return steps.planned_bytes(exe), exe.as_text().count(" dot("), float(m["loss"])


def test_auto_remat_keeps_the_dots_only_when_they_fit():
    """remat_policy="auto": the step is compiled with "dots" (the projections and MLP saved)
    and kept if its planned memory fits the budget, else compiled again with "full"."""
    cfg = LlamaConfig.tiny(num_hidden_layers=2, vocab_size=256, remat=True, remat_policy="auto")
    logs = []
    need, dots_dots, loss_dots = _compile_auto(cfg, 2**40, logs)
    assert logs[0].startswith("remat policy 'dots': kept") and len(logs) == 2
    logs.clear()
    _, full_dots, loss_full = _compile_auto(cfg, need - 1, logs)
    assert logs[0].startswith("remat policy 'dots': too big")
    # "full" is kept whether or not it fits: it is the last candidate.
    assert logs[1].startswith("remat policy 'full': kept (planned")
    assert full_dots > dots_dots  # the forward matmuls are recomputed
    np.testing.assert_allclose(loss_full, loss_dots, rtol=1e-6)


def test_remat_policy_choices_are_checked():
    from mucode_jax.models.llama import remat_policy_override
    from mucode_jax.training.config import check_train_config, remat_policies, sft_defaults

    c = sft_defaults()
    assert remat_policies(c) == ()  # no remat: nothing to choose
    c.model.remat = True
    assert remat_policies(c) == ("dots", "full")
    c.model.remat_policy = "full"
    assert remat_policies(c) == ()
    c.model.remat_policy = "most"
    with pytest.raises(
        ValueError, match="config.model.remat_policy must be one of full, dots, dots_all, auto"
    ):
        check_train_config(c)
    c.model.remat_policy, c.model.attention = "auto", "flash"
    with pytest.raises(ValueError, match="config.model.attention must be one of auto, xla"):
        check_train_config(c)
    with pytest.raises(ValueError, match="remat policy 'auto' is unknown"):
        with remat_policy_override("auto"):
            pass
