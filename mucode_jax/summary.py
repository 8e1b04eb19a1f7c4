"""Metrics of one selection mode's finished searches (multi-turn Best-of-N).

* ``bon``: BoN@t for t = 1..T with a bootstrap interval over problems (repeated searches are
  averaged per problem first; see `metrics.bootstrap_ci`);
* ``turn1_pass_at_k``: unbiased *single-turn* pass@k of the turn-1 BoN candidates (all
  searches pooled), k in ``pass_k`` (k <= samples per problem). Not the paper's pass@k: that
  is `trajectory_metrics` over whole multi-turn trajectories;
* ``any_search``: for t = 1..T, the fraction of problems of which *any* of the searches
  submitted a correct program by turn t (the official "any success" curve);
* ``public_success``: for t = 1..T, the fraction of searches whose selected program passed
  the public tests by turn t (the official public-test success curve);
* ``verifier_auc``: ROC AUC of the learned verifier's scores against the oracle labels over
  every scored candidate of every turn (test problems: never trained on), None unscored;
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
    table = {r.key: r for r in records}
    public = np.zeros((config.num_searches, len(ids), t_max))
    for si in range(config.num_searches):
        for pi, pid in enumerate(ids):
            for t, turn in enumerate(table[(pid, si)].turns[:t_max]):
                if turn.chosen.public_passed:
                    public[si, pi, t:] = 1.0
                    break
    scored = [
        (c.score, c.label)
        for r in records
        if r.problem_id in by_problem
        for turn in r.turns
        for c in turn.candidates
        if c.score is not None
    ]
    auc = None
    if scored:
        from mucode_jax.training.losses import auc as roc_auc

        value = roc_auc(np.array([x for x, _ in scored]), np.array([y for _, y in scored]))
        auc = None if np.isnan(value) else float(value)
    return {
        "num_problems": len(ids),
        "num_searches": config.num_searches,
        "num_candidates": config.num_candidates,
        "max_turns": t_max,
        "select": config.select,
        "bon": bon,
        "turn1_pass_at_k": pak,
        "any_search": [float(v) for v in submitted.max(axis=0).mean(axis=0)],
        "public_success": [float(v) for v in public.mean(axis=(0, 1))],
        "verifier_auc": auc,
        "per_turn": {k: _mean_over_searches(v) for k, v in curves.items()},
    }


def trajectory_metrics(
    records: Sequence[Trajectory],
    problems: Sequence[Problem],
    num_trajectories: int,
    *,
    pass_k: Sequence[int] = (1,),
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """The paper's multi-turn metrics over whole trajectories (one candidate per turn).

    A trajectory passes when its last program is correct (public and private tests); run with
    ``stop_on_correct`` it stops at its first correct program, so that is "any turn". With
    one greedy trajectory per problem, ``pass_at_k["1"]`` is the greedy multi-turn Pass@T
    (the official ``pass_at_k.sh``: temperature 0, 1 rollout, 3 turns); with ``n`` sampled
    trajectories it is the unbiased pass@k over them (the official ``metrics.py``), k <= n.

    Returns:
      ``{"num_problems", "num_trajectories", "max_turns_run", "pass_at_k": {k: {mean, lo,
      hi}}}``.
    """
    ids = [p.id for p in problems]
    table = {r.key: r for r in records}
    missing = [(p, s) for s in range(num_trajectories) for p in ids if (p, s) not in table]
    if missing:
        raise ValueError(f"{len(missing)} trajectories are missing, e.g. {missing[0]}.")
    n = np.full(len(ids), num_trajectories)
    c = np.array([sum(int(table[(p, s)].turns[-1].label) for s in range(num_trajectories))
                  for p in ids])  # fmt: skip
    out = {}
    for k in pass_k:
        if k <= num_trajectories:
            per = M.pass_at_k_per_problem(n, c, k)
            mean, lo, hi = M.bootstrap_ci(per, n_boot=n_boot, seed=seed)
            out[str(k)] = {"mean": mean, "lo": lo, "hi": hi}
    return {
        "num_problems": len(ids),
        "num_trajectories": num_trajectories,
        "max_turns_run": max((len(r.turns) for r in records), default=0),
        "pass_at_k": out,
    }
