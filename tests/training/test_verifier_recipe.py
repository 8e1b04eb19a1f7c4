"""The official verifier recipe: AdamW weight decay 0.01, no clipping, the doubled schedule
horizon (linear decay ends at 0.5x peak after 2 epochs), score head N(0, 1/sqrt(H+1))."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mucode_jax.models.llama import Llama, LlamaConfig
from mucode_jax.training import optim
from mucode_jax.training.config import verifier_defaults
from mucode_jax.training.sft import verifier_from_base


def test_official_verifier_optimizer():
    c = verifier_defaults()
    assert (c.optim.weight_decay, c.optim.clip_norm, c.optim.horizon) == (
        0.01,
        0.0,
        "steps_x_epochs",
    )
    assert c.data.eval_fraction == 0.0 and c.score_init == "official"
    opt, schedule = optim.make_optimizer(c.optim, 100, num_epochs=2)
    # The run's last step is half-way through the official horizon: lr ends near 0.5x peak.
    np.testing.assert_allclose(schedule(0), 1e-6)
    np.testing.assert_allclose(schedule(99), 1e-6 * (1 - 99 / 200), rtol=1e-5)
    params = {"w": jnp.ones((4, 4)), "scale": jnp.ones((4,))}
    state = opt.init(params)
    # No clipping: a huge gradient's Adam step is still lr-sized (sign), and decoupled decay
    # shrinks matrices (not the 1-D scale) by lr * 0.01 * p.
    grads = {"w": jnp.full((4, 4), 1e6), "scale": jnp.zeros((4,))}
    updates, _ = opt.update(grads, state, params)
    np.testing.assert_allclose(updates["w"], -1e-6 * (1.0 + 0.01), rtol=1e-4)
    np.testing.assert_allclose(updates["scale"], 0.0, atol=1e-12)
    # The earlier recipe: decay to 0 at the last step, clipping on.
    c.optim.horizon, c.optim.clip_norm = "steps", 1.0
    opt, schedule = optim.make_optimizer(c.optim, 100, num_epochs=2)
    assert float(schedule(100)) == 0.0 and len(opt) == 2  # clip + adamw
    c.optim.horizon = "epochs"
    with pytest.raises(ValueError, match="optim.horizon must be one of"):
        optim.make_optimizer(c.optim, 100)


def test_score_head_starts_from_n0_one_over_sqrt_h_plus_1():
    cfg = LlamaConfig.preset("tiny", hidden_size=1024, intermediate_size=64, num_hidden_layers=1,
                             vocab_size=32, head_dim=32)  # fmt: skip
    base = Llama(cfg, rngs=nnx.Rngs(0))
    official = np.asarray(verifier_from_base(base, seed=1).score[...])
    np.testing.assert_allclose(official.std(), 1 / np.sqrt(1025), rtol=0.1)
    old = np.asarray(verifier_from_base(base, seed=1, score_init="initializer_range").score[...])
    np.testing.assert_allclose(old.std(), cfg.initializer_range, rtol=0.1)
    with pytest.raises(ValueError, match="score_init must be one of"):
        verifier_from_base(base, score_init="zeros")
