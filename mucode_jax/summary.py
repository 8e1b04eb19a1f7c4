"""Metrics of one selection mode's finished searches (multi-turn Best-of-N).

* ``bon``: BoN@t for t = 1..T with a bootstrap interval over problems (repeated searches are
  averaged per problem first; see `metrics.bootstrap_ci`);
* ``pass_at_k``: unbiased pass@k of the turn-1 candidates (all searches pooled), k in
  ``pass_k`` (k <= samples per problem);
* ``per_turn``: the per-turn success curves of `metrics.per_turn_success`, averaged over
  searches (a turn that no episode of a search ran is left out; None when none ran it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mucode_jax import metrics as M
from mucode_jax import rollout
from mucode_jax.types import Problem, Trajectory


def _mean_over_searches(v: np.ndarray) -> list[float | None]:
    """[S, T] (or [T]) -> [T], ignoring NaN (a turn no episode of a search ran); None if all."""
    v = np.asarray(v, np.float64).reshape(-1, np.shape(v)[-1])
    ran = ~np.isnan(v)
    sums = np.where(ran, v, 0.0).sum(axis=0)
    counts = ran.sum(axis=0)
    return [float(s / c) if c else None for s, c in zip(sums, counts)]


def summarize(
    records: Sequence[Trajectory],
    problems: Sequence[Problem],
    config: rollout.SearchConfig,
    *,
    pass_k: Sequence[int] = (1, 5, 10),
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics of one selection mode's finished searches."""
    ids = [p.id for p in problems]
    t_max = config.max_turns
    labels = rollout.turn_labels_by_problem(records, ids, config.num_searches)  # [S][P][turn]
    submitted = M.submitted_labels(labels, t_max)  # [S, P, T]
    bon = []
    for t in range(t_max):
        mean, lo, hi = M.bootstrap_ci(submitted[:, :, t], n_boot=n_boot, seed=seed)
        bon.append({"t": t + 1, "mean": mean, "lo": lo, "hi": hi})
    curves = M.per_turn_success(labels, t_max)
    by_problem: dict[str, list[int]] = {pid: [] for pid in ids}
    for r in records:
        if r.problem_id in by_problem:
            by_problem[r.problem_id].extend(int(c.label) for c in r.turns[0].candidates)
    n = np.array([len(by_problem[pid]) for pid in ids])
    c = np.array([sum(by_problem[pid]) for pid in ids])
    pak = {}
    for k in pass_k:
        if k <= n.min():
            per = M.pass_at_k_per_problem(n, c, k)
            mean, lo, hi = M.bootstrap_ci(per, n_boot=n_boot, seed=seed)
            pak[str(k)] = {"mean": mean, "lo": lo, "hi": hi}
    return {
        "num_problems": len(ids),
        "num_searches": config.num_searches,
        "num_candidates": config.num_candidates,
        "max_turns": t_max,
        "select": config.select,
        "bon": bon,
        "pass_at_k": pak,
        "per_turn": {k: _mean_over_searches(v) for k, v in curves.items()},
    }
