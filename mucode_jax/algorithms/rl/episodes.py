"""Trajectories of the rollout engine -> per-turn training rows on the exact sampled ids.

One row per turn of every episode (a search with one candidate per turn): the row is the
turn's ``prompt_ids`` (exactly what the sampler was given: system?, the first prompt, the
earlier turns and their feedback, the open assistant header) followed by the candidate's
``tokens`` (exactly what it sampled, the end id included). Nothing is decoded and encoded
again: a multi-turn row built by re-rendering the conversation could hold other ids for the
earlier assistant messages than the ones sampled (a BPE merges across the message boundary
differently), and the importance ratio would then compare different sequences.

Row arrays (length ``max_length``, right-padded; ``inputs = row[:-1]``, ``targets = row[1:]``):

* ``weights``: 1.0 exactly on the positions whose target is a sampled token; prompt,
  earlier turns and feedback tokens are 0.0, so they get no loss and zero gradient.
* ``segment_ids`` (1 on real tokens, 0 on padding), ``positions``.
* ``sampler_logp``: the sampler's log-probability of each target (`Candidate.logprobs`,
  temperature 1), for the trainer-versus-sampler gap.
* ``value_mask``: 1 on the prompt only, so the value head (read at the last non-zero entry)
  reads the turn's last prompt token.

A turn that sampled nothing (its conversation outgrew the sampler's prompt bucket) or whose
row is longer than ``max_length`` has no row; it keeps its reward and gets V = 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from mucode_jax.algorithms.rl.advantages import episode_turn_rewards
from mucode_jax.types import Trajectory

ROW_KEYS = (
    "inputs",
    "targets",
    "weights",
    "segment_ids",
    "positions",
    "sampler_logp",
    "value_mask",
)


@dataclasses.dataclass
class EpisodeRows:
    """The rows of a batch of episodes and the turn-level arrays they map to.

    Attributes:
      rows: ``ROW_KEYS`` -> [N, max_length - 1] arrays (int32 ids / masks, float32 values).
      episode, turn: [N] the episode index and turn index of each row.
      turn_rewards: [E, K] RLEF's rewards; turn_mask: [E, K] 1 on the turns each episode ran.
      groups: [E] the problem id of each episode (the GRPO / RLOO group).
      success: [E] whether each episode's final program is correct.
      stats: counts (episodes, turns, rows, dropped_long, empty) and mean lengths.
    """

    rows: dict[str, np.ndarray]
    episode: np.ndarray
    turn: np.ndarray
    turn_rewards: np.ndarray
    turn_mask: np.ndarray
    groups: list[str]
    success: np.ndarray
    stats: dict[str, float]

    @property
    def num_rows(self) -> int:
        return len(self.episode)


def build_rows(
    trajectories: Sequence[Trajectory],
    *,
    max_length: int,
    max_turns: int,
    rewards: dict[str, float] | None = None,
) -> EpisodeRows:
    """Rows of ``trajectories`` (in order), their rewards and masks.

    Raises:
      ValueError: if a trajectory has more turns than ``max_turns``, more than one candidate
        in a turn (a Best-of-N search is not an episode), or a turn with sampled tokens and
        no prompt ids (a scripted policy's records cannot be trained on).
    """
    rewards = dict(rewards or {})
    e, t_len = len(trajectories), max_length - 1
    turn_rewards = np.zeros((e, max_turns), np.float32)
    turn_mask = np.zeros((e, max_turns), np.float32)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ROW_KEYS}
    ep_idx, turn_idx = [], []
    dropped = empty = 0
    lengths = []
    for i, tr in enumerate(trajectories):
        if len(tr.turns) > max_turns:
            raise ValueError(
                f"Episode {tr.key} has {len(tr.turns)} turns, more than rl max_turns={max_turns}; "
                "set the rollout's max_turns to at most it."
            )
        r = episode_turn_rewards(tr, **rewards)
        turn_rewards[i, : len(r)] = r
        turn_mask[i, : len(r)] = 1.0
        for k, turn in enumerate(tr.turns):
            if len(turn.candidates) != 1:
                raise ValueError(
                    f"Episode {tr.key} turn {k} has {len(turn.candidates)} candidates; RL "
                    "episodes need rollout.search.num_candidates=1."
                )
            cand = turn.chosen
            prompt, toks = list(turn.prompt_ids), list(cand.tokens)
            if not toks:
                empty += 1
                continue
            if not prompt:
                raise ValueError(
                    f"Episode {tr.key} turn {k} has sampled tokens but no prompt ids; train on "
                    "rollouts of a model policy (rollout.ModelPolicy)."
                )
            if len(cand.logprobs) != len(toks):
                raise ValueError(
                    f"Episode {tr.key} turn {k} has {len(toks)} tokens but "
                    f"{len(cand.logprobs)} log-probs; the rollout records are corrupt."
                )
            full = prompt + toks
            n = len(full) - 1
            if n > t_len:
                dropped += 1
                continue
            lengths.append(len(toks))
            p = len(prompt)
            row = np.zeros(t_len + 1, np.int32)
            row[: n + 1] = full
            w = np.zeros(t_len, np.float32)
            w[p - 1 : n] = 1.0  # targets p..n are the sampled tokens
            slp = np.zeros(t_len, np.float32)
            slp[p - 1 : n] = cand.logprobs
            seg = np.zeros(t_len, np.int32)
            seg[:n] = 1
            pos = np.where(seg > 0, np.arange(t_len), 0).astype(np.int32)
            vm = np.zeros(t_len, np.int32)
            vm[:p] = 1
            cols["inputs"].append(row[:-1])
            cols["targets"].append(row[1:])
            cols["weights"].append(w)
            cols["segment_ids"].append(seg)
            cols["positions"].append(pos)
            cols["sampler_logp"].append(slp)
            cols["value_mask"].append(vm)
            ep_idx.append(i)
            turn_idx.append(k)
    rows = {
        k: (
            np.stack(v)
            if v
            else np.zeros((0, t_len), np.float32 if k in ("weights", "sampler_logp") else np.int32)
        )
        for k, v in cols.items()
    }
    success = np.array([tr.success for tr in trajectories], bool)
    stats = {
        "episodes": e,
        "turns": float(turn_mask.sum()),
        "rows": len(ep_idx),
        "dropped_long": dropped,
        "empty": empty,
        "completion_tokens_mean": float(np.mean(lengths)) if lengths else 0.0,
        "turns_mean": float(turn_mask.sum(1).mean()) if e else 0.0,
    }
    return EpisodeRows(
        rows=rows,
        episode=np.array(ep_idx, np.int64),
        turn=np.array(turn_idx, np.int64),
        turn_rewards=turn_rewards,
        turn_mask=turn_mask,
        groups=[tr.problem_id for tr in trajectories],
        success=success,
        stats=stats,
    )


def per_turn(rows: EpisodeRows, row_values: np.ndarray) -> np.ndarray:
    """Row values [N] -> [E, K] (0 where a turn has no row)."""
    out = np.zeros(rows.turn_mask.shape, np.float32)
    out[rows.episode, rows.turn] = row_values
    return out


def apply_kl_to_rewards(rows: EpisodeRows, row_kl: np.ndarray, coef: float) -> np.ndarray:
    """Turn rewards minus ``coef`` x each turn's summed per-token k1 (KL "in the reward")."""
    return rows.turn_rewards - coef * per_turn(rows, row_kl) * rows.turn_mask


def describe(stats: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items()
    )
