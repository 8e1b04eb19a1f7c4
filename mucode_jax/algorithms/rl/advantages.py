"""Per-turn rewards, returns and advantages of multi-turn episodes (RLEF).

An episode is one search of the rollout engine with one candidate per turn: turn k's
action is the whole assistant message, so rewards, values and advantages are per turn,
arrays ``[episodes, turns]`` with a ``turn_mask`` (1 on the turns an episode ran, a prefix).

* `episode_turn_rewards`: RLEF's rewards: +1 on the last turn when its program is correct
  (public and private tests pass), -1 when not, and -0.2 on every turn without valid code
  (no code block, or a program that does not compile); no discount.
* `turn_advantages`: GAE over turns with a value read at each turn's last prompt token.
* `group_advantages`: the critic-free control (GRPO / RLOO): each episode's return against
  the other episodes of the same problem.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from mucode_jax.execution import results as R
from mucode_jax.types import Trajectory

INVALID_VERDICTS = (R.NO_CODE, R.SYNTAX_ERROR)


def turn_advantages(turn_rewards, values, turn_mask, gamma: float = 1.0, lam: float = 1.0):
    """GAE over the turns of each episode: ``(advantages, returns)``, both [episodes, turns].

    ``δ_k = r_k + γ·V_{k+1} − V_k`` with ``V = 0`` after the last valid turn, and
    ``A_k = δ_k + γλ·A_{k+1}``; ``returns = A + V`` (the value targets). With γ = λ = 1 this
    is the Monte-Carlo advantage ``A_k = Σ_{j≥k} r_j − V_k``. Entries outside ``turn_mask``
    are 0 in both outputs.

    Args:
      turn_rewards: float [E, K], the reward of each turn.
      values: float [E, K], V_k read at turn k's last prompt token.
      turn_mask: [E, K], 1 (True) on the turns each episode ran (a prefix of its row).
      gamma: discount over turns (RLEF: 1).
      lam: GAE's λ (RLEF: 1).
    """
    r = jnp.asarray(turn_rewards, jnp.float32)
    v = jnp.asarray(values, jnp.float32)
    m = jnp.asarray(turn_mask).astype(jnp.float32)
    if r.ndim != 2 or r.shape != v.shape or r.shape != m.shape:
        raise ValueError(
            f"turn_rewards, values and turn_mask must all be [episodes, turns]; got shapes "
            f"{r.shape}, {v.shape}, {m.shape}."
        )
    r, v = r * m, v * m
    k = r.shape[1]
    next_adv = jnp.zeros(r.shape[0], jnp.float32)
    next_v = jnp.zeros(r.shape[0], jnp.float32)
    out = []
    for t in reversed(range(k)):  # K is the turn budget (3): unrolled
        delta = r[:, t] + gamma * next_v - v[:, t]
        adv = (delta + gamma * lam * next_adv) * m[:, t]
        out.append(adv)
        next_adv, next_v = adv, v[:, t]
    adv = jnp.stack(out[::-1], axis=1)
    return adv, (adv + v) * m


def group_advantages(
    returns: Sequence[float], groups: Sequence[object], kind: str = "rloo", eps: float = 1e-6
) -> np.ndarray:
    """Critic-free advantages of episode returns against their group (one problem's episodes).

    ``rloo``: ``G_i − mean_{j≠i} G_j`` (leave-one-out; 0 for a group of one);
    ``grpo``: ``(G_i − mean G) / (std G + eps)`` (population std, as GRPO).
    """
    if kind not in ("rloo", "grpo"):
        raise ValueError(f"Unknown group baseline {kind!r}; use 'rloo' or 'grpo'.")
    g = np.asarray(returns, np.float64)
    out = np.zeros_like(g)
    keys = list(groups)
    if len(keys) != len(g):
        raise ValueError(f"{len(g)} returns but {len(keys)} group ids; give one per episode.")
    members: dict[object, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    for idx in members.values():
        x = g[idx]
        n = len(idx)
        if kind == "rloo":
            out[idx] = 0.0 if n == 1 else x - (x.sum() - x) / (n - 1)
        else:
            out[idx] = (x - x.mean()) / (x.std() + eps)
    return out.astype(np.float32)


def episode_turn_rewards(
    trajectory: Trajectory,
    *,
    correct: float = 1.0,
    incorrect: float = -1.0,
    invalid: float = -0.2,
) -> list[float]:
    """RLEF's reward of each turn of one episode (the selected candidate of each turn).

    Every turn whose program is missing or does not compile gets ``invalid``; the last turn
    also gets ``correct`` when its program passes the public and private tests, else
    ``incorrect``.
    """
    out = []
    for turn in trajectory.turns:
        bad = turn.chosen.code is None or turn.chosen.public.verdict in INVALID_VERDICTS
        out.append(invalid if bad else 0.0)
    out[-1] += correct if trajectory.success else incorrect
    return out
