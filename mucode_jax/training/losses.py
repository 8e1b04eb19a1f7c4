"""Losses and evaluation metrics of the generator and the verifier.

Every loss here returns *sums* and *counts*, not means: the train step adds them
over the micro-batches of a gradient-accumulation step and divides once, so the
loss of an accumulated batch is exactly the loss of the whole batch computed at
once (the HF / TRL normalisation with ``num_items_in_batch``):

  SFT:  sum of token cross-entropies over every target token of the batch
        / number of target tokens of the batch.
  BT:   sum over pairs of ``-log σ(r⁺ − r⁻)`` / number of pairs, plus
        ``λ · mean(r²)`` over both members of every pair.
  BCE:  sum over samples of the binary cross-entropy of ``σ(r)`` against the oracle
        label / number of samples.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def token_cross_entropy(logits: Array, targets: Array) -> Array:
    """Per-token cross-entropy in float32: logits [B, T, V], targets [B, T] -> [B, T]."""
    logits = logits.astype(jnp.float32)
    logz = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return logz - picked


def sft_loss_sums(logits: Array, targets: Array, weights: Array) -> tuple[Array, Array]:
    """Sum of target-token cross-entropies and the number of target tokens.

    Args:
      logits: [B, T, V] predictions for ``targets``.
      targets: [B, T] the next token at each position.
      weights: [B, T] 1.0 for target (assistant) tokens, 0.0 elsewhere.

    Returns:
      ``(sum_ce, num_targets)``, both float32 scalars.
    """
    w = weights.astype(jnp.float32)
    ce = token_cross_entropy(logits, targets)
    return jnp.sum(ce * w), jnp.sum(w)


def chunked_sft_loss_sums(
    hidden: Array,
    head: Callable[[Array], Array],
    targets: Array,
    weights: Array,
    chunk: int | None,
) -> tuple[Array, Array]:
    """`sft_loss_sums` from hidden states, without materialising the [B, T, V] logits.

    The logits of ``chunk`` positions at a time ([B, chunk, V] float32) go through the
    cross-entropy inside a `jax.lax.scan` whose body is rematerialised, so neither the forward
    nor the backward pass holds more than one chunk's logits (for a 128k vocabulary at
    4 x 4096 tokens: 256 MiB per chunk of 128 instead of 8 GiB). Same sums as
    `sft_loss_sums(head(hidden), ...)` up to float32 summation order.

    Args:
      hidden: [B, T, D] final (normed) hidden states.
      head: hidden [B, C, D] -> float32 logits [B, C, V] (the model's `logits`).
      targets, weights: [B, T] as in `sft_loss_sums`.
      chunk: positions per chunk; None (or >= T) computes all logits at once.
    """
    b, t = targets.shape
    if chunk is None or chunk >= t:
        return sft_loss_sums(head(hidden), targets, weights)
    n = -(-t // chunk)
    pad = n * chunk - t
    w = weights.astype(jnp.float32)
    cut = lambda a: jnp.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2))
    split = lambda a: cut(a).reshape(b, n, chunk, *a.shape[2:]).swapaxes(0, 1)

    @jax.checkpoint
    def one(total, xs):
        h, tgt, wt = xs
        return total + jnp.sum(token_cross_entropy(head(h), tgt) * wt), None

    total, _ = jax.lax.scan(
        one, jnp.zeros((), jnp.float32), (split(hidden), split(targets), split(w))
    )
    return total, jnp.sum(w)


def bt_loss_sums(
    chosen: Array, rejected: Array, weights: Array, l2: float = 0.0
) -> tuple[Array, Array, dict[str, Array]]:
    """Bradley–Terry pair loss ``-log σ(r⁺ − r⁻)`` (+ ``λ·mean(r²)``) as sums.

    The L2 term is folded into the per-pair sum as ``λ·(r⁺² + r⁻²)/2``, so that after
    dividing by the number of pairs it equals ``λ·mean(r²)`` over all scores.

    Args:
      chosen: [P] scores of the correct programs.
      rejected: [P] scores of the incorrect programs.
      weights: [P] 1.0 for real pairs, 0.0 for padding.
      l2: the penalty λ (official μCode: 1e-3; 0 disables it).

    Returns:
      ``(sum, num_pairs, aux)`` with aux sums ``correct`` (pairs ranked right) and ``margin``.
    """
    w = weights.astype(jnp.float32)
    margin = chosen.astype(jnp.float32) - rejected.astype(jnp.float32)
    per_pair = jax.nn.softplus(-margin)
    if l2:
        per_pair = per_pair + l2 * 0.5 * (jnp.square(chosen) + jnp.square(rejected))
    aux = {"correct": jnp.sum(w * (margin > 0)), "margin": jnp.sum(w * margin)}
    return jnp.sum(w * per_pair), jnp.sum(w), aux


def bce_loss_sums(scores: Array, labels: Array, weights: Array) -> tuple[Array, Array]:
    """Pointwise binary cross-entropy of ``σ(score)`` against 0/1 labels, as a sum and count.

    Args:
      scores: [N] logits.
      labels: [N] 0/1 oracle labels.
      weights: [N] 1.0 for real samples, 0.0 for padding.
    """
    s = scores.astype(jnp.float32)
    y = labels.astype(jnp.float32)
    w = weights.astype(jnp.float32)
    per = y * jax.nn.softplus(-s) + (1.0 - y) * jax.nn.softplus(s)
    return jnp.sum(w * per), jnp.sum(w)


# ---------------------------------------------------------------------------------------
# Verifier evaluation metrics (host side, numpy).


def pairwise_accuracy(chosen: np.ndarray, rejected: np.ndarray) -> float:
    """Fraction of pairs where the correct program scores higher (ties count half)."""
    chosen, rejected = np.asarray(chosen, np.float64), np.asarray(rejected, np.float64)
    if chosen.size == 0:
        return float("nan")
    return float(np.mean((chosen > rejected) + 0.5 * (chosen == rejected)))


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by the Mann–Whitney statistic (ties count half); NaN without both labels."""
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels).astype(bool)
    pos, neg = scores[labels], scores[~labels]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    # Average ranks over ties.
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    u = ranks[labels].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def calibration(scores: np.ndarray, labels: np.ndarray, num_bins: int = 10) -> dict[str, float]:
    """Expected calibration error and Brier score of ``σ(score)`` as P(correct).

    ECE: equal-width probability bins, ``Σ_b (n_b/n)·|mean(y_b) − mean(p_b)|``.
    A BT-trained verifier is only defined up to a shift, so its ECE mainly tells how
    far its raw scores are from probabilities; BCE training targets it directly.
    """
    p = 1.0 / (1.0 + np.exp(-np.asarray(scores, np.float64)))
    y = np.asarray(labels, np.float64)
    if p.size == 0:
        return {"ece": float("nan"), "brier": float("nan")}
    bins = np.minimum((p * num_bins).astype(int), num_bins - 1)
    ece = 0.0
    for b in range(num_bins):
        sel = bins == b
        if sel.any():
            ece += sel.mean() * abs(y[sel].mean() - p[sel].mean())
    return {"ece": float(ece), "brier": float(np.mean((p - y) ** 2))}
