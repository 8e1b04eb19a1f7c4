"""Zheng et al.'s prompting study: the single-turn reasoning × instruction grid and the
multi-turn study (feedback granularity, CoT-retry), as one resumable job.

Cells (`grid_cells`):

* ``single/<reasoning>/<instruction>``: every reasoning prompt (plus ``none``, the
  no-reasoning row) × every instruction prompt, one turn, ``single.num_samples`` samples per
  problem; pass@k and pass n@k (submissions ranked by the public tests), each with a bootstrap
  interval over problems.
* ``multi/<granularity>``: up to ``multi.max_turns`` turns with execution feedback of one
  granularity (``binary``, ``failed``, ``failed_and_passed``, ``trace``), plain prompts;
  ``multi/cot_retry``: the same with CoT-retry prompts. Reported: pass n@k against the number
  of samples k, where every turn's program counts as a sample (`multi_turn_pass_n_at_k`).

One policy (one compiled sampler) and one executor serve every cell. Each cell's searches are
appended to ``WORKDIR/cells/<cell>-<key>.jsonl`` as they finish, and each finished cell's
metrics to ``WORKDIR/grid.json`` (``cells``: one entry per cell, with the key of its settings):
a killed run redoes no finished cell and resumes the unfinished one at its first unfinished
search; a changed setting redoes only the cells it changes. ``WORKDIR/grid.md`` holds the
tables (shaped like the paper's: reasoning rows × instruction columns; pass n@k against k) and
``WORKDIR/pass_n_at_k.png`` the multi-turn curves.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from mucode_jax import metrics, prompts, report, rollout
from mucode_jax.algorithms.artifacts import content_key
from mucode_jax.execution import feedback as F
from mucode_jax.types import Problem, Trajectory

log = logging.getLogger("mucode_jax.prompt_grid")

VERSION = 1
GRANULARITIES = F.GRANULARITIES


# ---------------------------------------------------------------------------------------------
# Config.


def grid_defaults() -> ml_collections.ConfigDict:
    """Every field of a grid config (``configs/prompt_grid_*.py`` state what differs)."""
    from mucode_jax.algorithms.config import mucode_defaults

    c = ml_collections.ConfigDict()
    c.seed = 0
    # The generator: the driver config's base stage (``driver.base``: an HF directory, or the
    # demo's warm start), with its tokenizer, sampling limits, mesh and executor settings.
    c.driver = mucode_defaults()
    c.base_workdir = ""  # the driver workdir whose artifacts hold the base ("": WORKDIR)
    c.generator = ""  # an HF generator directory to study instead of the base (e.g. a μCode one)
    c.problems = ml_collections.ConfigDict(
        dict(name="codecontests", split="test", limit=0, path="", seed=0, families=())
    )
    c.temperature = 1.0  # the paper: T = 1.0, top-p 0.95
    c.top_p = 0.95
    c.texts = ""  # a JSON file replacing prompt texts (`prompts.PromptRegistry.with_overrides`)
    c.batch_size = 64
    c.bootstrap = 1000

    c.single = ml_collections.ConfigDict()
    c.single.enabled = True
    c.single.reasoning = ("none", *prompts.REASONING_PROMPTS)
    c.single.instruction = tuple(prompts.INSTRUCTION_PROMPTS)
    c.single.num_samples = 100
    c.single.pass_k = (1, 10, 100)
    c.single.pass_n_k = ((10, 100),)

    c.multi = ml_collections.ConfigDict()
    c.multi.enabled = True
    c.multi.feedback = GRANULARITIES
    c.multi.cot_retry_feedback = "failed"  # the CoT-retry row's granularity ("": no row)
    c.multi.wrapper = "rlef"
    c.multi.max_chars = 2000
    c.multi.max_turns = 3
    c.multi.num_searches = 100
    c.multi.budgets = (1, 3, 10, 30, 100)
    c.multi.n = (1, 10)
    c.multi.draws = 200
    return c


def _fail(message: str) -> None:
    raise ValueError(message)


def check_grid_config(c: ml_collections.ConfigDict) -> None:
    """Raises ValueError with one sentence for the first bad setting of a grid config."""
    from mucode_jax.algorithms.config import check_config

    check_config(c.driver)
    for r in c.single.reasoning:
        if r != "none" and r not in prompts.REASONING_PROMPTS:
            _fail(
                f"Unknown reasoning prompt {r!r} in config.single.reasoning; use 'none' or "
                f"{', '.join(prompts.REASONING_PROMPTS)}."
            )
    for i in c.single.instruction:
        if i not in prompts.INSTRUCTION_PROMPTS:
            _fail(
                f"Unknown instruction prompt {i!r} in config.single.instruction; use "
                f"{', '.join(prompts.INSTRUCTION_PROMPTS)}."
            )
    s = c.single
    for k in s.pass_k:
        if not 1 <= k <= s.num_samples:
            _fail(f"config.single.pass_k holds {k}; each k must be in 1..single.num_samples.")
    for n, k in s.pass_n_k:
        if n < 1 or not 1 <= k <= s.num_samples:
            _fail(f"config.single.pass_n_k holds ({n}, {k}); need n >= 1 and k <= num_samples.")
    m = c.multi
    for g in (*m.feedback, *([m.cot_retry_feedback] if m.cot_retry_feedback else [])):
        if g not in GRANULARITIES:
            _fail(
                f"Unknown feedback granularity {g!r} in config.multi; use "
                f"{', '.join(GRANULARITIES)}."
            )
    if m.max_turns < 2:
        _fail(
            f"config.multi.max_turns must be at least 2 for a multi-turn study, got {m.max_turns}."
        )
    for k in m.budgets:
        if not 1 <= k <= m.num_searches:
            _fail(
                f"config.multi.budgets holds {k}; each budget must be in 1..multi.num_searches "
                "(every trajectory has at least one sample)."
            )
    if min(m.n, default=1) < 1 or m.draws < 1:
        _fail("config.multi.n must hold positive submission counts and multi.draws be >= 1.")
    if c.texts:
        prompts.PromptRegistry().with_overrides(c.texts)
    if c.generator and not (Path(c.generator) / "config.json").is_file():
        _fail(
            f"config.generator={c.generator!r} is not an HF checkpoint directory; point it at "
            "a generator's hf/ folder or leave it empty to use the driver's base."
        )


# ---------------------------------------------------------------------------------------------
# Cells.


@dataclasses.dataclass(frozen=True)
class Cell:
    """One setting of the study: a name, the search that samples it, what it reports."""

    name: str
    kind: str  # "single" or "multi"
    search: rollout.SearchConfig
    report: dict[str, Any]


def grid_cells(c: ml_collections.ConfigDict) -> list[Cell]:
    """The cells of a grid config, single-turn grid first."""
    texts = c.texts or {}
    out = []
    if c.single.enabled:
        rep = dict(pass_k=list(c.single.pass_k), pass_n_k=[list(x) for x in c.single.pass_n_k])
        for r in c.single.reasoning:
            for i in c.single.instruction:
                search = rollout.SearchConfig(
                    num_searches=c.single.num_samples,
                    max_turns=1,
                    prompt=prompts.PromptStrategy(reasoning=r, instruction=i, texts=texts),
                    batch_size=c.batch_size,
                    seed=c.seed,
                )
                out.append(Cell(f"single/{r}/{i}", "single", search, rep))
    if c.multi.enabled:
        m = c.multi
        rep = dict(budgets=list(m.budgets), n=list(m.n), draws=m.draws)
        rows = [(g, g, False) for g in m.feedback]
        if m.cot_retry_feedback:
            rows.append(("cot_retry", m.cot_retry_feedback, True))
        for name, body, cot in rows:
            search = rollout.SearchConfig(
                num_searches=m.num_searches,
                max_turns=m.max_turns,
                feedback=prompts.Feedback(body=body, wrapper=m.wrapper, max_chars=m.max_chars),
                prompt=prompts.PromptStrategy(cot_retry=cot, texts=texts),
                batch_size=c.batch_size,
                seed=c.seed,
            )
            out.append(Cell(f"multi/{name}", "multi", search, rep))
    return out


# ---------------------------------------------------------------------------------------------
# Metrics.


def multi_turn_pass_n_at_k(
    episodes: Sequence[Sequence[tuple[bool, bool]]],
    n: int,
    k: int,
    *,
    draws: int = 200,
    rng: np.random.Generator | None = None,
) -> float:
    """pass n@k of one problem's multi-turn episodes, every turn's program counting a sample.

    A draw takes the episodes in a random order and spends the budget of k samples turn by
    turn (the last episode may be cut short); the programs that pass the public tests are
    submitted in the order they were produced, at most n; the draw succeeds if one of them is
    correct. Returns the mean over ``draws`` random orders. With one-turn episodes it is a
    Monte-Carlo estimate of `metrics.pass_n_at_k` (which averages over every subset).

    Args:
      episodes: per episode, per turn: (passes the public tests, correct).
      n: submissions allowed (>= 1).
      k: the sample budget (>= 1); a budget beyond the episodes' total uses them all.
      draws: random orders averaged.
      rng: the generator (default: seeded 0).
    """
    if n < 1 or k < 1:
        raise ValueError(f"multi_turn_pass_n_at_k needs n >= 1 and k >= 1, got n={n}, k={k}.")
    if not episodes:
        raise ValueError("multi_turn_pass_n_at_k got no episodes for the problem.")
    rng = rng if rng is not None else np.random.default_rng(0)
    wins = 0
    for _ in range(draws):
        budget, submitted, won = k, 0, False
        for e in rng.permutation(len(episodes)):
            for public, correct in episodes[e]:
                if budget == 0 or submitted == n:
                    break
                budget -= 1
                if public:
                    submitted += 1
                    won = won or correct
            if budget == 0 or submitted == n or won:
                break
        wins += won
    return wins / draws


def _ci(values: Sequence[float], n_boot: int, seed: int) -> dict[str, float]:
    return metrics.mean_and_ci(np.asarray(values, dtype=np.float64), n_boot=n_boot, seed=seed)


def _by_problem(trajs: Sequence[Trajectory], problem_ids: Sequence[str]) -> dict[str, list]:
    out: dict[str, list[Trajectory]] = {p: [] for p in problem_ids}
    for t in trajs:
        out[t.problem_id].append(t)
    return {p: sorted(v, key=lambda t: t.search) for p, v in out.items()}


def single_turn_metrics(
    trajs: Sequence[Trajectory], problem_ids: Sequence[str], report_cfg, *, n_boot, seed
) -> dict[str, Any]:
    """pass@k and pass n@k with bootstrap intervals over problems (one-turn trajectories)."""
    groups = _by_problem(trajs, problem_ids)
    num = np.array([len(v) for v in groups.values()])
    cor = np.array([sum(t.turns[0].chosen.label for t in v) for v in groups.values()])
    pub = np.array([sum(t.turns[0].chosen.public_passed for t in v) for v in groups.values()])
    out: dict[str, Any] = {"pass_at_k": {}, "pass_n_at_k": {}}
    for k in report_cfg["pass_k"]:
        out["pass_at_k"][str(k)] = _ci(metrics.pass_at_k_per_problem(num, cor, k), n_boot, seed)
    for n, k in report_cfg["pass_n_k"]:
        per = [metrics.pass_n_at_k(a, b, c_, n, k) for a, b, c_ in zip(num, pub, cor)]
        out["pass_n_at_k"][f"{n}@{k}"] = _ci(per, n_boot, seed)
    return out


def multi_turn_metrics(
    trajs: Sequence[Trajectory], problem_ids: Sequence[str], report_cfg, *, n_boot, seed
) -> dict[str, Any]:
    """pass n@k against the sample budget k (every turn counts), with intervals; BoN@t."""
    groups = _by_problem(trajs, problem_ids)
    episodes = {
        p: [[(t.chosen.public_passed, t.chosen.label) for t in tr.turns] for tr in v]
        for p, v in groups.items()
    }
    out: dict[str, Any] = {"pass_n_at_k": {}}
    for n in report_cfg["n"]:
        for k in report_cfg["budgets"]:
            rng = np.random.default_rng([seed, n, k])
            per = [
                multi_turn_pass_n_at_k(e, n, k, draws=report_cfg["draws"], rng=rng)
                for e in episodes.values()
            ]
            out["pass_n_at_k"][f"{n}@{k}"] = _ci(per, n_boot, seed)
    searches = min(len(v) for v in groups.values())
    labels = rollout.turn_labels_by_problem(trajs, list(problem_ids), searches)
    # BoN@t of one trajectory per problem (the multi-turn pass@1 curve), averaged over searches.
    bon = metrics.bon_at_t(labels, num_turns=max(len(t.turns) for t in trajs))
    out["bon_at_t"] = [float(x) for x in np.asarray(bon).mean(axis=0)]
    out["mean_turns"] = float(np.mean([len(t.turns) for t in trajs]))
    return out


# ---------------------------------------------------------------------------------------------
# The resumable runner.


def _read_grid(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"version": VERSION, "cells": {}}
    try:
        grid = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path} is not valid JSON ({e.msg}); move it away to start the grid afresh."
        ) from None
    if grid.get("version") != VERSION or not isinstance(grid.get("cells"), dict):
        raise ValueError(
            f"{path} is not a version-{VERSION} grid file with 'cells'; move it away to start "
            "the grid afresh."
        )
    return grid


def cell_key(cell: Cell, context: Any) -> str:
    """The hash of what decides a cell's result: its search, its report, the model, problems."""
    return content_key(cell.name, dataclasses.asdict(cell.search), cell.report, context)


def run_grid(
    cells: Sequence[Cell],
    problems: Sequence[Problem],
    policy: rollout.Policy,
    executor: rollout.Executor,
    workdir: str | os.PathLike,
    *,
    context: Any = None,
    n_boot: int = 1000,
    seed: int = 0,
    progress: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Runs every unfinished cell and returns the grid (also in ``WORKDIR/grid.json``).

    Args:
      cells: `grid_cells` (or any list of `Cell`).
      problems: the evaluation problems.
      policy: the one policy every cell samples from.
      executor: the one executor every cell's programs run on.
      workdir: where ``grid.json``, ``cells/`` and the tables go.
      context: what else decides the results (the model's key, the problems' key), hashed
        into every cell's key.
      n_boot: bootstrap replicates per interval.
      seed: the bootstrap's seed.
      progress: called with one line per cell.
    """
    workdir = Path(workdir)
    (workdir / "cells").mkdir(parents=True, exist_ok=True)
    path = workdir / "grid.json"
    grid = _read_grid(path)
    ids = [p.id for p in problems]
    grid["problems"] = len(ids)
    grid["order"] = [c.name for c in cells]
    start = time.monotonic()
    for i, cell in enumerate(cells):
        key = cell_key(cell, context)
        done = grid["cells"].get(cell.name)
        if done is not None and done.get("key") == key:
            continue
        t0 = time.monotonic()
        out = workdir / "cells" / f"{cell.name.replace('/', '__')}-{key}.jsonl"
        trajs = rollout.run_search(problems, policy, executor, cell.search, out)
        fn = single_turn_metrics if cell.kind == "single" else multi_turn_metrics
        entry = fn(trajs, ids, cell.report, n_boot=n_boot, seed=seed)
        entry.update(
            key=key,
            kind=cell.kind,
            settings=dataclasses.asdict(cell.search.settings),
            samples=int(sum(len(t.turns) for t in trajs)),
            seconds=round(time.monotonic() - t0, 2),
            trajectories=str(out.relative_to(workdir)),
        )
        grid["cells"][cell.name] = entry
        report.write_json_atomic(path, grid)
        if progress is not None:
            progress(
                f"[{i + 1}/{len(cells)}] {cell.name}: {_headline(entry)} "
                f"({entry['seconds']:.0f} s, {time.monotonic() - start:.0f} s in all)"
            )
    (workdir / "grid.md").write_text(grid_tables(grid))
    plot_pass_n_at_k(grid, workdir / "pass_n_at_k.png")
    return grid


def _headline(entry: dict[str, Any]) -> str:
    parts = []
    for name, table in (("pass@", entry.get("pass_at_k", {})), ("pass ", entry["pass_n_at_k"])):
        for k, v in table.items():
            parts.append(f"{name}{k} {100 * v['mean']:.1f}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# Tables and plots.


def _pct(v: dict[str, float] | None, ci: bool = False) -> str:
    if v is None:
        return "–"
    s = f"{100 * v['mean']:.1f}"
    return f"{s} [{100 * v['lo']:.1f}, {100 * v['hi']:.1f}]" if ci else s


def grid_tables(grid: dict[str, Any]) -> str:
    """Markdown: per single-turn metric a reasoning × instruction table (the paper's layout),
    the best cells with intervals, and the multi-turn pass n@k against k."""
    order = [n for n in grid.get("order", []) if n in grid["cells"]]
    cells = {n: grid["cells"][n] for n in [*order, *sorted(set(grid["cells"]) - set(order))]}
    lines = [f"Problems: {grid.get('problems', '?')}. Percentages; [95 % bootstrap interval].", ""]
    single = {n: v for n, v in cells.items() if v["kind"] == "single"}
    if single:
        rows = list(dict.fromkeys(n.split("/")[1] for n in single))
        cols = list(dict.fromkeys(n.split("/")[2] for n in single))
        first = next(iter(single.values()))
        metrics_ = [("pass_at_k", k, f"pass@{k}") for k in first["pass_at_k"]]
        metrics_ += [("pass_n_at_k", k, f"pass {k}") for k in first["pass_n_at_k"]]
        for table, k, title in metrics_:
            lines += [f"### Single turn, {title}: reasoning prompt (rows) × instruction prompt", ""]
            lines.append("| reasoning \\ instruction | " + " | ".join(cols) + " |")
            lines.append("|---" * (len(cols) + 1) + "|")
            for r in rows:
                vals = [single.get(f"single/{r}/{i}", {}).get(table, {}).get(k) for i in cols]
                lines.append(f"| {r} | " + " | ".join(_pct(v) for v in vals) + " |")
            lines.append("")
        lines += ["### Single turn, every cell with intervals", ""]
        heads = [t for _, _, t in metrics_]
        lines.append("| cell | " + " | ".join(heads) + " |")
        lines.append("|---" * (len(heads) + 1) + "|")
        for name, v in single.items():
            vals = [v[table].get(k) for table, k, _ in metrics_]
            lines.append(f"| {name[7:]} | " + " | ".join(_pct(x, ci=True) for x in vals) + " |")
        lines.append("")
    multi = {n: v for n, v in cells.items() if v["kind"] == "multi"}
    if multi:
        heads = list(next(iter(multi.values()))["pass_n_at_k"])
        lines += ["### Multi-turn: pass n@k against k samples (every turn counts)", ""]
        lines.append("| setting | mean turns | " + " | ".join(f"pass {h}" for h in heads) + " |")
        lines.append("|---" * (len(heads) + 2) + "|")
        for name, v in multi.items():
            vals = [_pct(v["pass_n_at_k"].get(h), ci=True) for h in heads]
            lines.append(f"| {name[6:]} | {v['mean_turns']:.2f} | " + " | ".join(vals) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_pass_n_at_k(grid: dict[str, Any], path: str | os.PathLike) -> None:
    """pass n@k against k for every multi-turn cell, one panel per n."""
    multi = {n: v for n, v in grid["cells"].items() if v["kind"] == "multi"}
    if not multi:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = sorted({int(h.split("@")[0]) for v in multi.values() for h in v["pass_n_at_k"]})
    fig, axes = plt.subplots(1, len(ns), figsize=(5 * len(ns), 4), squeeze=False)
    for ax, n in zip(axes[0], ns):
        for name, v in multi.items():
            pts = sorted(
                (int(h.split("@")[1]), x)
                for h, x in v["pass_n_at_k"].items()
                if int(h.split("@")[0]) == n
            )
            ks = [k for k, _ in pts]
            ax.plot(ks, [100 * x["mean"] for _, x in pts], marker="o", label=name[6:])
            ax.fill_between(
                ks, [100 * x["lo"] for _, x in pts], [100 * x["hi"] for _, x in pts], alpha=0.12
            )
        ax.set_xscale("log")
        ax.set_xlabel("k (samples, every turn counts)")
        ax.set_ylabel(f"pass {n}@k (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# From a config.


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, Any]:
    """The whole job: the base generator (the driver's base stage), one sampler, one executor,
    every cell."""
    from mucode_jax.algorithms import mucode
    from mucode_jax.execution import Executor
    from mucode_jax.training.inputs import tokenizer_from_config

    check_grid_config(config)
    workdir = Path(workdir)
    d = config.driver
    tokenizer = tokenizer_from_config(d)
    problems = mucode.load_problem_set(config.problems)
    if not problems:
        raise ValueError("config.problems selects no problems; check its name, split and limit.")
    # The warm start's key depends on the driver's train set: load it as the driver does.
    train = mucode.load_problem_set(d.data.train) if d.warm_start.enabled else []
    base_dir = Path(config.base_workdir) if config.base_workdir else workdir
    cells = grid_cells(config)
    cache = base_dir / "reference_cpu.jsonl"
    with Executor(workers=d.executor.workers or None, reference_cache=cache) as executor:
        driver = mucode.Driver(d, base_dir, executor, tokenizer, train, {})
        if config.generator:
            path = Path(config.generator).resolve()
            gen_dir, gen_key = path, content_key(str(path))
        else:
            base = driver.base()
            gen_dir, gen_key = base.path, base.key
        policy = driver.models.policy(gen_dir, temperature=config.temperature, top_p=config.top_p)
        context = {
            "base": gen_key,
            "problems": content_key([p.id for p in problems], config.problems),
            "sampling": d.sampling,
            "temperature": config.temperature,
            "top_p": config.top_p,
        }
        return run_grid(
            cells,
            problems,
            policy,
            executor,
            workdir,
            context=context,
            n_boot=config.bootstrap,
            seed=config.seed,
        )
