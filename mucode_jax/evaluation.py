"""Multi-turn Best-of-N evaluation: searches under each selection mode -> metrics, plot.

Used by `launch/evaluate.py` and by the expert-iteration driver after every iteration.
For each selection mode the searches of every problem are run by `rollout.run_search`
(appended to ``WORKDIR/search_<mode>.jsonl`` as they finish, so an interrupted evaluation
resumes), then summarised:

* ``bon``: BoN@t for t = 1..T with a bootstrap interval over problems (repeated searches are
  averaged per problem first; see `metrics.bootstrap_ci`);
* ``pass_at_k``: unbiased pass@k of the turn-1 candidates (all searches pooled), k in
  ``pass_k`` (k <= samples per problem);
* ``per_turn``: the per-turn success curves of `metrics.per_turn_success`, averaged over
  searches (a turn that no episode of a search ran is left out; None when none ran it).

`evaluate_from_config` is the launcher's whole job: an HF checkpoint directory with its
tokenizer, a dataset (local JSONL or the hub), the selection modes -> the files above.
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
from mucode_jax.types import Problem, Trajectory


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
        if isinstance(progress, SearchProgress):
            progress.start(f"{name} {mode}")  # one bar per selection mode
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
    if isinstance(progress, SearchProgress):
        progress.close()
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
    ax.set_ylim(0, 100)
    ax.set_xticks(
        sorted({b["t"] for r in results.values() for m in r["modes"].values() for b in m["bon"]})
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------------------
# The evaluation launcher's library function.

# Local copies of the benchmarks beside the repository (``../shared/data``), by dataset.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
LOCAL_FILES = {
    "mbpp": "mbpp/mbpp.jsonl",
    "mbpp_sanitized": "mbpp/sanitized-mbpp.jsonl",
    "humaneval": "humaneval/HumanEval.jsonl",
    "mbpp_plus": "evalplus/MbppPlus-v0.1.0.jsonl",
    "codecontests": "codecontests/codecontests_train_sample100.jsonl",
}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
# Settings that change what a search file holds: a resumed run must use the same ones.
_RESUME_KEYS = (
    "checkpoint",
    "verifier",
    "dataset",
    "dataset_path",
    "split",
    "num_problems",
    "num_searches",
    "num_candidates",
    "max_turns",
    "temperature",
    "top_p",
    "top_k",
    "max_new_tokens",
    "feedback_body",
    "feedback_wrapper",
    "feedback_chars",
    "seed",
)


def default_dataset_path(name: str) -> str:
    """The local JSONL of ``name`` under ``../shared/data`` if it is there, else ``""`` (hub)."""
    rel = LOCAL_FILES.get(name)
    path = SHARED_DATA / rel if rel else None
    return str(path) if path is not None and path.is_file() else ""


def eval_defaults():
    """The fields of an evaluation config (see ``configs/eval_*.py``)."""
    import ml_collections

    c = ml_collections.ConfigDict()
    c.checkpoint = ""  # HF checkpoint directory holding the generator and its tokenizer
    c.verifier = ""  # HF checkpoint directory of the learned verifier (lv / pt_lv modes)
    c.dataset = "mbpp"
    c.dataset_path = ""  # local JSONL; "" loads the dataset from the HF hub by name
    c.split = ""  # MBPP: "test" (task ids 11-510); CodeContests hub: "test"; "" = all
    c.num_problems = 0  # first n problems; 0 = all
    c.modes = "pt,random"  # comma-separated selection modes: random, pt, lv, pt_lv
    c.num_candidates = 5  # N: candidates per turn
    c.max_turns = 3  # T
    c.num_searches = 1  # repeated searches (different seeds) per problem
    c.temperature = 0.7
    c.top_p = 1.0
    c.top_k = 0
    c.max_new_tokens = 1024
    c.max_prompt_length = 4096
    c.max_batch_size = 64  # sampler batch bucket
    c.batch_size = 64  # conversations per generation call
    c.feedback_body = "failed"  # binary, failed, failed_and_passed, trace, mucode, rlef
    c.feedback_wrapper = "mucode"  # mucode ("Feedback: ..."), rlef ("... Give it another try.")
    c.feedback_chars = 2000
    c.verifier_max_length = 2048
    c.pass_k = (1, 5, 10)
    c.workers = 0  # executor workers; 0 = one per CPU
    c.dtype = "bfloat16"
    c.seed = 0
    c.progress = True
    return c


def _check_eval_config(config) -> tuple[list[str], Path]:
    from mucode_jax.data.problems import DATASETS

    if config.dataset not in DATASETS:
        raise ValueError(f"Unknown dataset {config.dataset!r}; use one of {', '.join(DATASETS)}.")
    if int(config.max_turns) < 1:
        raise ValueError(
            f"max_turns must be at least 1 (the first attempt is turn 1), got {config.max_turns}."
        )
    modes = [m.strip() for m in str(config.modes).split(",") if m.strip()]
    bad = [m for m in modes if m not in rollout.SELECT_MODES]
    if not modes or bad:
        raise ValueError(
            f"Unknown selection modes {bad or modes!r}; use a comma-separated subset of "
            f"{', '.join(rollout.SELECT_MODES)}."
        )
    if any(m in ("lv", "pt_lv") for m in modes) and not config.verifier:
        raise ValueError(
            "The lv and pt_lv modes need a learned verifier; set --config.verifier to its "
            "checkpoint directory."
        )
    ckpt = Path(config.checkpoint)
    if not config.checkpoint or not (ckpt / "config.json").is_file():
        raise ValueError(
            f"{str(ckpt)!r} is not an HF checkpoint directory (no config.json); set "
            "--config.checkpoint to one."
        )
    if not any((ckpt / f).is_file() for f in _TOKENIZER_FILES):
        raise ValueError(
            f"Checkpoint {str(ckpt)!r} has no tokenizer files (tokenizer.json or "
            "tokenizer_config.json); save the tokenizer into it with tokenizer.save_pretrained."
        )
    return modes, ckpt


def _check_resume(config, workdir: Path) -> Callable[[], None]:
    """Refuses a workdir whose searches used other settings; returns the function that
    records this run's settings (called once the inputs are known to load)."""
    settings = {k: config.get(k) for k in _RESUME_KEYS}
    settings = json.loads(json.dumps(settings, default=str))
    path = workdir / "eval_config.json"
    if path.is_file():
        old = json.loads(path.read_text())
        changed = sorted(k for k in settings if old.get(k) != settings[k])
        if changed:
            raise ValueError(
                f"{workdir} holds searches run with other settings ({', '.join(changed)} "
                "changed); use a fresh --workdir or the old settings."
            )
    return lambda: write_json_atomic(path, settings)


class SearchProgress:
    """A tqdm bar per selection mode over searches, with samples/s and an ETA."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar = None
        self.desc = ""

    def start(self, desc: str) -> None:
        self.close()
        self.desc = desc

    def __call__(self, info: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=info["total"], desc=self.desc, unit="search", initial=0)
        self.bar.set_postfix(
            samples=info["samples"], samples_s=f"{info['samples_per_s']:.1f}", refresh=False
        )
        self.bar.update(info["done"] - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def evaluate_from_config(config, workdir: str | os.PathLike) -> dict[str, Any]:
    """Multi-turn BoN of an HF checkpoint on a benchmark, as ``launch/evaluate.py`` runs it.

    Writes ``WORKDIR/search_<mode>.jsonl`` (resumable), ``WORKDIR/metrics.json`` and
    ``WORKDIR/per_turn_success.png``; returns the metrics.

    Raises:
      ValueError: one sentence for an unknown dataset or mode, a turn limit below 1, a
        checkpoint directory without config or tokenizer files, or a workdir resumed with
        other settings.
    """
    from mucode_jax.data.problems import load_problems

    modes, ckpt = _check_eval_config(config)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    record_settings = _check_resume(config, workdir)
    search = rollout.SearchConfig(
        num_searches=int(config.num_searches),
        num_candidates=int(config.num_candidates),
        max_turns=int(config.max_turns),
        select=modes[0],
        feedback=dict(
            body=config.feedback_body,
            wrapper=config.feedback_wrapper,
            max_chars=int(config.feedback_chars),
        ),
        batch_size=int(config.batch_size),
        seed=int(config.seed),
    )
    path = config.dataset_path or None
    problems = load_problems(config.dataset, path=path, split=config.split or None)
    if config.num_problems:
        problems = problems[: int(config.num_problems)]
    if not problems:
        raise ValueError(f"No problems in {config.dataset!r} (split {config.split!r}); check it.")

    from mucode_jax.execution import Executor

    # The executor's workers fork before JAX starts its threads and claims memory.
    # Reference costs (the CPU limits) are measured once per workdir: a resume applies the same.
    with Executor(
        workers=int(config.workers) or None,
        reference_cache=Path(workdir) / "reference_cpu.jsonl",
    ) as executor:
        import jax.numpy as jnp
        from transformers import AutoTokenizer

        from mucode_jax.data.tokenizer import eos_token_ids
        from mucode_jax.models.hf import load_pretrained
        from mucode_jax.sampling import Sampler
        from mucode_jax.sampling.methods import make_method

        tokenizer = AutoTokenizer.from_pretrained(str(ckpt), local_files_only=True)
        dtype = getattr(jnp, config.dtype)
        model = load_pretrained(ckpt, dtype=dtype)
        sampler = Sampler(
            model,
            max_new_tokens=int(config.max_new_tokens),
            max_prompt_length=int(config.max_prompt_length),
            eos_ids=eos_token_ids(tokenizer),
            max_batch_size=int(config.max_batch_size),
            pad_id=tokenizer.pad_token_id or 0,
        )
        method = make_method(
            temperature=float(config.temperature),
            top_p=float(config.top_p),
            top_k=int(config.top_k),
        )
        policy = rollout.ModelPolicy(sampler, tokenizer, method=method)
        scorer = None
        if config.verifier:
            from mucode_jax.scoring import VerifierScorer

            scorer = VerifierScorer(
                load_pretrained(config.verifier, dtype=dtype),
                tokenizer,
                max_length=int(config.verifier_max_length),
                max_batch_size=int(config.max_batch_size),
            )
        record_settings()  # the inputs load: from here on the workdir holds these searches
        bar = SearchProgress(bool(config.progress))
        results: dict[str, Any] = {}
        for mode in modes:
            bar.start(f"{config.dataset} {mode}")
            res = run_evaluation(
                problems,
                policy,
                executor,
                workdir,
                modes=[mode],
                search=search,
                scorer=scorer,
                pass_k=tuple(int(k) for k in config.pass_k),
                progress=bar,
                name=ckpt.name or str(ckpt),
            )
            bar.close()
            results.update(res["modes"])
    out = {
        "name": ckpt.name or str(ckpt),
        "checkpoint": str(ckpt),
        "dataset": config.dataset,
        "num_problems": len(problems),
        "modes": results,
    }
    write_json_atomic(workdir / "metrics.json", out)
    plot_per_turn({out["name"]: out}, workdir / "per_turn_success.png")
    return out
