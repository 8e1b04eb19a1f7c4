"""RLEF: PPO on multi-turn execution-feedback episodes with a turn-level value, and a
critic-free GRPO / RLOO control in the same loop.

* `advantages`: RLEF's turn rewards, `turn_advantages` (GAE over turns), group baselines.
* `losses`: the clipped PPO policy loss with the k1 / k3 KL estimators, the value loss.
* `episodes`: trajectories of the rollout engine -> token rows on the exact sampled ids.
* `trainer`: the sharded policy / value / reference state, jitted steps, weight sync,
  checkpoints; `loop`: rollouts -> advantages -> PPO epochs -> sync, resumable.
* `driver`: the launcher's job (warm start, RL, evaluation, summary); `config`: defaults.
"""

from mucode_jax.algorithms.rl.advantages import (
    episode_turn_rewards,
    group_advantages,
    turn_advantages,
)

__all__ = ["episode_turn_rewards", "group_advantages", "turn_advantages"]
