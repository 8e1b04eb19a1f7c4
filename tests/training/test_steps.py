"""Train-step options: bf16 compute over float32 master weights, rematerialisation, accumulation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
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
