"""Episode rows are the exact sampled ids; prompt and feedback tokens get zero gradient;
RLEF's rewards."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mucode_jax.algorithms.rl import episode_turn_rewards
from mucode_jax.algorithms.rl import episodes as E
from mucode_jax.algorithms.rl import losses as L
from mucode_jax.execution.results import ExecResult
from mucode_jax.models.llama import Llama, LlamaConfig
from mucode_jax.training.state import split_model
from mucode_jax.types import Candidate, Trajectory, Turn

PASS, FAIL = ExecResult("passed"), ExecResult("wrong_answer")
NO_CODE, SYNTAX = ExecResult("no_code"), ExecResult("syntax_error")


def cand(tokens, public, private, code="x = 1"):
    rng = np.random.default_rng(len(tokens))
    lp = tuple(float(x) for x in -rng.random(len(tokens)))
    return Candidate(
        completion="c",
        code=code,
        public=public,
        private=private,
        tokens=tuple(tokens),
        logprobs=lp,
        sampling_logprobs=lp,
    )


def episode():
    """3 turns: the second prompt extends the first with *feedback* ids (70..79) that the
    model never sampled; the last turn is correct."""
    p1 = (1, 2, 3, 4, 5)
    c1 = (11, 12, 13, 2)
    p2 = p1 + (20, 21, 22) + (70, 71, 72, 73, 74) + (6,)  # re-rendered turn 1 + feedback
    c2 = (31, 32, 2)
    p3 = p2 + (40, 41) + (75, 76, 77, 78, 79) + (6,)
    c3 = (51, 52, 53, 54, 2)
    turns = (
        Turn("x", (cand(c1, FAIL, FAIL),), 0, p1, "fb1"),
        Turn("fb1", (cand(c2, NO_CODE, NO_CODE, code=None),), 0, p2, "fb2"),
        Turn("fb2", (cand(c3, PASS, PASS),), 0, p3, None),
    )
    return Trajectory("toy/1", "toy", 0, 0, turns), (p1, c1), (p2, c2), (p3, c3)


def test_rows_hold_the_exact_sampled_ids_and_weight_only_them():
    traj, *parts = episode()
    rows = E.build_rows([traj], max_length=48, max_turns=3)
    assert rows.num_rows == 3
    for r, (p, c) in enumerate(parts):
        full = list(p) + list(c)
        n = len(full) - 1
        np.testing.assert_array_equal(rows.rows["inputs"][r, :n], full[:-1])
        np.testing.assert_array_equal(rows.rows["targets"][r, :n], full[1:])
        w = rows.rows["weights"][r]
        # The weighted targets are exactly the sampled tokens, end id included.
        np.testing.assert_array_equal(rows.rows["targets"][r][w == 1], c)
        assert w.sum() == len(c)
        np.testing.assert_allclose(
            rows.rows["sampler_logp"][r][w == 1], traj.turns[r].chosen.logprobs, rtol=1e-6
        )
        # The value head reads the last prompt token.
        vm = rows.rows["value_mask"][r]
        assert vm.sum() == len(p) and rows.rows["inputs"][r][len(p) - 1] == p[-1]
    # Feedback ids (70..79) are never weighted.
    fb = (rows.rows["targets"] >= 70) & (rows.rows["targets"] < 80)
    assert fb.any() and np.all(rows.rows["weights"][fb] == 0)


def test_rewards_follow_rlef():
    traj, *_ = episode()
    # Turn 2 has no valid code (-0.2); the final program is correct (+1).
    assert episode_turn_rewards(traj) == pytest.approx([0.0, -0.2, 1.0])
    bad = Trajectory(
        "toy/2",
        "toy",
        0,
        0,
        (Turn("x", (cand((1, 2), SYNTAX, SYNTAX),), 0, (1,), None),),
    )
    assert episode_turn_rewards(bad) == pytest.approx([-1.2])
    rows = E.build_rows([traj, bad], max_length=48, max_turns=3)
    np.testing.assert_allclose(rows.turn_rewards, [[0, -0.2, 1], [-1.2, 0, 0]], atol=1e-6)
    np.testing.assert_array_equal(rows.turn_mask, [[1, 1, 1], [1, 0, 0]])


def test_rows_reject_best_of_n_records_and_drop_long_turns():
    traj, *_ = episode()
    two = Turn("x", (traj.turns[0].chosen, traj.turns[0].chosen), 0, (1, 2), None)
    with pytest.raises(ValueError, match="num_candidates=1"):
        E.build_rows([Trajectory("p", "toy", 0, 0, (two,))], max_length=48, max_turns=3)
    rows = E.build_rows([traj], max_length=20, max_turns=3)  # the third turn needs 27
    assert rows.stats["dropped_long"] == 1 and rows.num_rows == 2


def test_prompt_and_feedback_tokens_get_exactly_zero_gradient():
    """Through a real Llama: the loss and every parameter gradient are bit-identical when
    every non-sampled target (prompt, earlier turns, feedback) is replaced; and the gradient
    of the loss with respect to those positions' log-probabilities is exactly zero."""
    traj, *_ = episode()
    rows = E.build_rows([traj], max_length=48, max_turns=3).rows
    model = Llama(LlamaConfig.tiny(vocab_size=128), rngs=nnx.Rngs(0))
    graphdef, params = split_model(model)
    n, t = rows["inputs"].shape
    rng = np.random.default_rng(0)
    mb = {k: jnp.asarray(v) for k, v in rows.items()}
    mb["advantages"] = jnp.asarray(rng.normal(size=(n, 1)) * rows["weights"], jnp.float32)
    mb["old_logp"] = jnp.asarray(rng.normal(size=(n, t)) * 0.1 - 4.0, jnp.float32)
    mb["ref_logp"] = jnp.asarray(rng.normal(size=(n, t)) * 0.1 - 4.0, jnp.float32)
    loss_fn = L.policy_loss_fn(graphdef, clip_eps=0.2, kl_coef=0.1, kl="k3")

    def loss(p, batch):
        total, count, _ = loss_fn(p, batch)
        return total / count

    base_loss, base_grad = jax.value_and_grad(loss)(params, mb)
    other = dict(mb)
    masked = rows["weights"] == 0
    other["targets"] = jnp.asarray(np.where(masked, (rows["targets"] + 17) % 128, rows["targets"]))
    other_loss, other_grad = jax.value_and_grad(loss)(params, other)
    assert float(base_loss) == float(other_loss)
    for a, b in zip(jax.tree.leaves(base_grad), jax.tree.leaves(other_grad)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # d loss / d log π at every position: zero wherever the weight is zero.
    logits = nnx.merge(graphdef, params)(mb["inputs"], segment_ids=mb["segment_ids"])
    logp0, ent = L.token_logprobs_and_entropy(logits, mb["targets"])

    def from_logp(logp):
        total, count, _ = L.policy_loss_sums(
            logp,
            ent,
            mb["old_logp"],
            mb["ref_logp"],
            logp,
            mb["advantages"],
            mb["weights"],
            clip_eps=0.2,
            kl_coef=0.1,
            kl="k3",
        )
        return total / count

    g = np.asarray(jax.grad(from_logp)(logp0))
    assert np.all(g[masked] == 0.0) and np.any(g[~masked] != 0.0)
