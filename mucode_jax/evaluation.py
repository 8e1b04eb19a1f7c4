"""Multi-turn Best-of-N evaluation: searches under each selection mode -> metrics, plot.

Used by `launch/evaluate.py` and by the expert-iteration driver after every iteration.
For each selection mode the searches of every problem are run by `rollout.run_search`
(appended to ``WORKDIR/search_<mode>.jsonl`` as they finish, so an interrupted evaluation
resumes), then summarised:

* ``bon``: BoN@t for t = 1..T with a bootstrap interval over problems (repeated searches are
  averaged per problem first; see `metrics.bootstrap_ci`);
* ``pass_at_k``: unbiased pass@k of the turn-1 candidates (all searches pooled), k in
  ``pass_k`` (k <= samples per problem);
* ``per_turn``: the per-turn success curves of `metrics.per_turn_success`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mucode_jax import metrics as M
from mucode_jax import rollout
from mucode_jax.types import Problem


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Writes JSON to a temporary file beside ``path`` and renames it in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _mean_over_searches(v: np.ndarray) -> list[float | None]:
    """[S, T] (or [T]) -> [T], ignoring NaN (a turn no episode of a search ran); None if all."""
    v = np.asarray(v, np.float64).reshape(-1, np.shape(v)[-1])
    ran = ~np.isnan(v)
    sums = np.where(ran, v, 0.0).sum(axis=0)
    counts = ran.sum(axis=0)
    return [float(s / c) if c else None for s, c in zip(sums, counts)]


def summarize(
    records: Sequence[dict[str, Any]],
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
        if r["problem_id"] in by_problem:
            by_problem[r["problem_id"]].extend(int(c["label"]) for c in r["turns"][0]["candidates"])
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


def run_evaluation(
    problems: Sequence[Problem],
    policy: rollout.Policy,
    executor: rollout.Executor,
    workdir: str | os.PathLike,
    *,
    modes: Sequence[str],
    search: rollout.SearchConfig,
    scorer: rollout.Scorer | None = None,
    pass_k: Sequence[int] = (1, 5, 10),
    progress: Callable[[dict[str, Any]], None] | None = None,
    name: str = "eval",
) -> dict[str, Any]:
    """Runs each selection mode's searches and writes ``WORKDIR/metrics.json`` and a plot."""
    workdir = Path(workdir)
    out: dict[str, Any] = {"name": name, "modes": {}}
    for mode in modes:
        cfg = rollout.SearchConfig(**{**search.__dict__, "select": mode})
        records = rollout.run_search(
            problems,
            policy,
            executor,
            cfg,
            workdir / f"search_{mode}.jsonl",
            scorer=scorer,
            progress=progress,
        )
        out["modes"][mode] = summarize(records, problems, cfg, pass_k=pass_k, seed=search.seed)
    write_json_atomic(workdir / "metrics.json", out)
    plot_per_turn({name: out}, workdir / "per_turn_success.png")
    return out


def plot_per_turn(results: dict[str, dict[str, Any]], path: str | os.PathLike) -> None:
    """BoN@t curves with their intervals, one line per (model, selection mode)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, res in results.items():
        for mode, m in res["modes"].items():
            ts = [b["t"] for b in m["bon"]]
            mean = [100 * b["mean"] for b in m["bon"]]
            lo = [100 * b["lo"] for b in m["bon"]]
            hi = [100 * b["hi"] for b in m["bon"]]
            label = f"{name} / {mode}" if len(results) > 1 else mode
            ax.plot(ts, mean, marker="o", label=label)
            ax.fill_between(ts, lo, hi, alpha=0.15)
    ax.set_xlabel("turn t")
    ax.set_ylabel("BoN@t (%)")
    ax.set_xticks(
        sorted({b["t"] for r in results.values() for m in r["modes"].values() for b in m["bon"]})
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
