"""PPO / GRPO losses on token rows, as the sums and counts `training.steps` accumulates.

A policy row is one turn of one episode: the exact prompt ids the sampler was given followed
by the exact ids it sampled (`episodes.build_rows`). Only the sampled ids carry weight 1;
prompt, earlier turns and feedback tokens carry weight 0, so their log-probabilities never
enter the loss and get exactly zero gradient. Every sampled token of turn k shares that
turn's advantage.

Per token t of the batch (weights w_t):

  ratio_t = exp(logπ_θ(t) − logπ_old(t))
  pg_t    = −min(ratio_t·A_t, clip(ratio_t, 1−ε, 1+ε)·A_t)
  k1_t    = logπ_θ(t) − logπ_ref(t)                          (KL estimator k1)
  k3_t    = exp(logπ_ref − logπ_θ) − (logπ_ref − logπ_θ) − 1  (KL estimator k3, ≥ 0)
  loss    = Σ_t w_t·(pg_t + β·k3_t) / Σ_t w_t   with kl="k3" (β·k1 goes into the turn
            rewards instead with kl="k1": `episodes.apply_kl_to_rewards`).

The value loss (turn level, one term per turn): ``½·max((V−R)², (V_clip−R)²)`` with
``V_clip = V_old + clip(V − V_old, −c, c)`` (``c = 0``: unclipped ``½(V−R)²``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mucode_jax.training.losses import token_cross_entropy

KL_MODES = ("k1", "k3", "none")


def kl_k1(logp, ref_logp):
    """k1 = log π − log π_ref per token (unbiased, can be negative)."""
    return logp - ref_logp


def kl_k3(logp, ref_logp):
    """k3 = r − log r − 1 with r = π_ref / π per token (unbiased, non-negative)."""
    d = ref_logp - logp
    return jnp.exp(d) - d - 1.0


def token_logprobs_and_entropy(logits, targets):
    """log π(target) and the entropy of π at every position: logits [B, T, V] -> 2 x [B, T]."""
    logits = logits.astype(jnp.float32)
    logp = -token_cross_entropy(logits, targets)
    logz = jax.nn.logsumexp(logits, axis=-1)
    probs = jax.nn.softmax(logits, axis=-1)
    entropy = logz - jnp.sum(probs * logits, axis=-1)
    return logp, entropy


def policy_loss_sums(
    logp,
    entropy,
    old_logp,
    ref_logp,
    sampler_logp,
    advantages,
    weights,
    *,
    clip_eps: float,
    kl_coef: float,
    kl: str,
):
    """The clipped PPO loss (+ β·k3 when ``kl == "k3"``) as ``(sum, count, aux sums)``.

    All arrays [B, T]. Aux sums (divide by ``count`` for means): ``pg``, ``kl_k1``, ``kl_k3``,
    ``entropy``, ``clipfrac``, ``ratio``, ``gap_sampler`` (|log π_θ − log π_sampler|, the
    trainer-versus-sampler gap) and ``gap_old`` (|log π_old − log π_sampler|).
    """
    if kl not in KL_MODES:
        raise ValueError(f"Unknown KL mode {kl!r}; use one of {KL_MODES}.")
    w = weights.astype(jnp.float32)
    adv = advantages.astype(jnp.float32)
    ratio = jnp.exp(logp - old_logp)
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    pg = -jnp.minimum(ratio * adv, clipped * adv)
    k1 = kl_k1(logp, ref_logp)
    k3 = kl_k3(logp, ref_logp)
    per = pg + kl_coef * k3 if kl == "k3" else pg
    s = lambda x: jnp.sum(w * x)
    aux = {
        "pg": s(pg),
        "kl_k1": s(k1),
        "kl_k3": s(k3),
        "entropy": s(entropy),
        "clipfrac": s((jnp.abs(ratio - 1.0) > clip_eps).astype(jnp.float32)),
        "ratio": s(ratio),
        "gap_sampler": s(jnp.abs(logp - sampler_logp)),
        "gap_old": s(jnp.abs(old_logp - sampler_logp)),
    }
    return s(per), jnp.sum(w), aux


def value_loss_sums(values, old_values, returns, weights, *, clip: float = 0.0):
    """``½·max((V−R)², (V_clip−R)²)`` per turn (``clip = 0``: ``½(V−R)²``), summed.

    All arrays [B] (one entry per turn row); returns ``(sum, count, aux)``.
    """
    w = weights.astype(jnp.float32)
    v = values.astype(jnp.float32)
    err = jnp.square(v - returns)
    if clip:
        v_clip = old_values + jnp.clip(v - old_values, -clip, clip)
        err = jnp.maximum(err, jnp.square(v_clip - returns))
    aux = {"value": jnp.sum(w * v), "value_abs_err": jnp.sum(w * jnp.abs(v - returns))}
    return jnp.sum(w * 0.5 * err), jnp.sum(w), aux


# -----------------------------------------------------------------------------------------
# Loss functions for `training.steps.make_train_step` (params, micro-batch) -> sums.


def policy_forward(model, mb):
    """Per-token log π(target) and entropy of a policy micro-batch ([B, T] each)."""
    logits = model(mb["inputs"], segment_ids=mb["segment_ids"], positions=mb["positions"])
    return token_logprobs_and_entropy(logits, mb["targets"])


def policy_loss_fn(graphdef: nnx.GraphDef, *, clip_eps: float, kl_coef: float, kl: str):
    """The PPO / GRPO policy loss on micro-batches of `episodes.build_rows` rows."""

    def fn(params, mb):
        logp, ent = policy_forward(nnx.merge(graphdef, params), mb)
        total, count, aux = policy_loss_sums(
            logp,
            ent,
            mb["old_logp"],
            mb["ref_logp"],
            mb["sampler_logp"],
            mb["advantages"],
            mb["weights"],
            clip_eps=clip_eps,
            kl_coef=kl_coef,
            kl=kl,
        )
        aux["tokens"] = jnp.sum(mb["segment_ids"] != 0).astype(jnp.float32)
        return total, count, aux

    return fn


def value_forward(model, mb):
    """V at each row's last prompt token (the `Verifier` head read at the last non-zero entry
    of ``value_mask``, which covers the prompt only): [B]."""
    return model(mb["inputs"], attention_mask=mb["value_mask"])


def value_loss_fn(graphdef: nnx.GraphDef, *, clip: float):
    """The turn-level value loss on micro-batches of `episodes.build_rows` rows."""

    def fn(params, mb):
        v = value_forward(nnx.merge(graphdef, params), mb)
        return value_loss_sums(v, mb["old_values"], mb["returns"], mb["turn_weight"], clip=clip)

    return fn
