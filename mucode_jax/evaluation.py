"""Multi-turn Best-of-N evaluation: searches under each selection mode -> metrics, plot.

Used by `launch/evaluate.py` and by the expert-iteration driver after every iteration.
For each selection mode the searches of every problem are run by `rollout.run_search`
(appended to ``WORKDIR/search_<mode>.jsonl`` as they finish, so an interrupted evaluation
resumes), then summarised by `summary.summarize` and drawn by `report.plot_per_turn`.

`evaluate_from_config` is the launcher's whole job: an HF checkpoint directory with its
tokenizer, a dataset (local JSONL or the hub), the selection modes -> the files above.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax

from mucode_jax import multihost, rollout
from mucode_jax.report import SearchProgress, plot_per_turn, write_json_atomic
from mucode_jax.summary import summarize
from mucode_jax.types import Problem


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
    if multihost.is_main():  # every process holds the same metrics
        write_json_atomic(workdir / "metrics.json", out)
        plot_per_turn({name: out}, workdir / "per_turn_success.png")
    return out


def reference_cache(workdir: str | os.PathLike) -> Path:
    """The executor's reference-cost cache in ``workdir``: ``reference_cpu.jsonl`` for
    process 0, ``reference_cpu.process<i>.jsonl`` for the others (each host measures its
    own CPU, and no two processes append to one file on a shared filesystem)."""
    rank = jax.process_index()
    return Path(workdir) / (
        "reference_cpu.jsonl" if rank == 0 else f"reference_cpu.process{rank}.jsonl"
    )


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
    c.workers = 0  # executor workers per process (host); 0 = one per CPU
    # The devices the generator and verifier are sharded over (all of them, on every process).
    c.mesh = (("data", 1), ("fsdp", -1), ("tensor", 1))
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
    from mucode_jax.training.config import DTYPES

    if config.dtype not in DTYPES:
        raise ValueError(f"config.dtype {config.dtype!r} is not one of {', '.join(DTYPES)}.")
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


def _same_paths(settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` with its paths normalised (``ckpt/`` and ``ckpt`` are one checkpoint)."""
    out = dict(settings)
    for k in ("checkpoint", "verifier", "dataset_path"):
        if isinstance(out.get(k), str) and out[k]:
            out[k] = os.path.normpath(out[k])
    return out


def _check_resume(config, workdir: Path) -> Callable[[], None]:
    """Refuses a workdir whose searches used other settings; returns the function that
    records this run's settings (called once the inputs are known to load)."""
    settings = {k: config.get(k) for k in _RESUME_KEYS}
    settings = _same_paths(json.loads(json.dumps(settings, default=str)))
    path = workdir / "eval_config.json"
    if path.is_file():
        old = _same_paths(json.loads(path.read_text()))
        changed = sorted(k for k in settings if old.get(k) != settings[k])
        if changed:
            raise ValueError(
                f"{workdir} holds searches run with other settings ({', '.join(changed)} "
                "changed); use a fresh --workdir or the old settings."
            )
    return lambda: write_json_atomic(path, settings) if multihost.is_main() else None


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
    multihost.check_same(config, "the evaluation config")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    multihost.check_shared_directory(workdir, "the workdir")
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
    multihost.check_same(list(problems), "the problems")

    from mucode_jax.execution import Executor

    # The executor's workers fork before JAX starts its threads and claims memory.
    # Reference costs (the CPU limits) are measured once per workdir: a resume applies the same.
    with Executor(
        workers=int(config.workers) or None, reference_cache=reference_cache(workdir)
    ) as executor:
        from transformers import AutoTokenizer

        from mucode_jax import sharding as sh
        from mucode_jax.inference import Models

        tokenizer = AutoTokenizer.from_pretrained(str(ckpt), local_files_only=True)
        models = Models(
            tokenizer,
            dtype=config.dtype,
            max_new_tokens=config.max_new_tokens,
            max_prompt_length=config.max_prompt_length,
            max_batch_size=config.max_batch_size,
            verifier_max_length=config.verifier_max_length,
            mesh=sh.make_mesh(tuple(tuple(a) for a in config.mesh)),
        )
        policy = models.policy(
            ckpt,
            temperature=float(config.temperature),
            top_p=float(config.top_p),
            top_k=int(config.top_k),
        )
        scorer = models.scorer(config.verifier) if config.verifier else None
        record_settings()  # the inputs load: from here on the workdir holds these searches
        bar = SearchProgress(bool(config.progress) and multihost.is_main())
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
    if multihost.is_main():
        write_json_atomic(workdir / "metrics.json", out)
        plot_per_turn({out["name"]: out}, workdir / "per_turn_success.png")
    multihost.barrier("evaluation written")
    return out
