"""Learning-rate schedules and the AdamW optimizer (optax), from a config.

Schedules follow `transformers.get_scheduler` so runs compare with the PyTorch
references step for step: a linear warm-up from 0 over ``warmup_steps``, then
constant, linear or cosine decay over the remaining steps down to
``final_lr_fraction * lr`` (0 gives HF's "linear" / "cosine"; 0.1 gives Zheng et al.'s
"anneal to 10 % of peak").
"""

from __future__ import annotations

from typing import Any

import jax
import optax

SCHEDULES = ("constant", "linear", "cosine")


def make_schedule(
    lr: float,
    schedule: str,
    total_steps: int,
    *,
    warmup_steps: int = 0,
    final_lr_fraction: float = 0.0,
) -> optax.Schedule:
    """Step -> learning rate.

    Args:
      lr: the peak learning rate.
      schedule: ``"constant"``, ``"linear"`` or ``"cosine"``.
      total_steps: optimizer steps of the whole run (warm-up included).
      warmup_steps: steps of linear warm-up from 0 to ``lr``.
      final_lr_fraction: the decay ends at this fraction of ``lr`` (ignored by "constant").
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {schedule!r}.")
    if warmup_steps < 0 or total_steps < 1:
        raise ValueError(
            f"Need warmup_steps >= 0 and total_steps >= 1, got {warmup_steps}, {total_steps}."
        )
    if not 0.0 <= final_lr_fraction <= 1.0:
        raise ValueError(f"optim.final_lr_fraction must be in [0, 1], got {final_lr_fraction}.")
    decay_steps = max(total_steps - warmup_steps, 1)
    if schedule == "constant":
        main = optax.constant_schedule(lr)
    elif schedule == "linear":
        main = optax.linear_schedule(lr, lr * final_lr_fraction, decay_steps)
    else:
        main = optax.cosine_decay_schedule(lr, decay_steps, alpha=final_lr_fraction)
    if warmup_steps == 0:
        return main
    warmup = optax.linear_schedule(0.0, lr, warmup_steps)
    return optax.join_schedules([warmup, main], [warmup_steps])


def decay_mask(params: Any) -> Any:
    """Weight decay on matrices only (not on norm scales or the verifier's score vector),
    as HF `Trainer` excludes biases and norm weights."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


HORIZONS = ("steps", "steps_x_epochs")


def make_optimizer(
    cfg: Any, total_steps: int, num_epochs: int = 1
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Gradient clipping by global norm, then AdamW with the configured schedule.

    Args:
      cfg: the ``optim`` section of a training config: ``lr``, ``schedule``,
        ``warmup_steps``, ``final_lr_fraction``, ``b1``, ``b2``, ``eps``,
        ``weight_decay``, ``clip_norm`` (0 or None disables clipping).
        ``horizon`` (``"steps"``, or ``"steps_x_epochs"``: the schedule runs over
        ``total_steps * num_epochs`` steps, as the official verifier script's does).
      total_steps: optimizer steps of the whole run.
      num_epochs: the run's epochs (only the ``"steps_x_epochs"`` horizon reads it).

    Returns:
      ``(optimizer, schedule)``.
    """
    horizon = cfg.get("horizon", "steps") if hasattr(cfg, "get") else "steps"
    if horizon not in HORIZONS:
        raise ValueError(f"optim.horizon must be one of {HORIZONS}, got {horizon!r}.")
    schedule = make_schedule(
        cfg.lr,
        cfg.schedule,
        total_steps * (max(int(num_epochs), 1) if horizon == "steps_x_epochs" else 1),
        warmup_steps=cfg.warmup_steps,
        final_lr_fraction=cfg.final_lr_fraction,
    )
    adamw = optax.adamw(
        schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask
    )
    parts = [adamw]
    if cfg.clip_norm:
        parts.insert(0, optax.clip_by_global_norm(cfg.clip_norm))
    return optax.chain(*parts), schedule
