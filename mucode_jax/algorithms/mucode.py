"""The μCode expert-iteration driver, with the baselines as data modes.

Iteration i = 1..I of data mode ``m``, starting from the base generator π_0:

  rollouts(π_{i-1}) -> verifier data (aggregated over iterations) -> verifier R_i trained
  from the base -> scores of every rollout program under R_i -> relabeled SFT data (mode m,
  merged over iterations) -> generator π_i trained from the base -> evaluation of π_i on
  every test set of ``config.data.tests``.

The evaluation verifier (``config.eval.verifier``): officially π_i is evaluated with the
verifier trained on the pairs of π_0..π_i (R_{i+1}, which the next iteration trains anyway; for
the last iteration π_I's rollouts and that verifier are extra stages), Multi-STaR with one
trained on its own π_i rollouts only; ``"previous"`` evaluates π_i with R_i. π_0 is evaluated
with R_1 (its own rollouts) either way.

An evaluation (`Driver.evaluate`) holds multi-turn BoN under each selection mode (BoN@t, the
"any of the searches" and public-test success curves, the verifier's AUC on the test
candidates, and the single-turn pass@k of the turn-1 candidates), the greedy multi-turn
Pass@T (temperature 0, one trajectory, stopping only on a correct program) and pass@k over
``eval.sampled.num_trajectories`` sampled multi-turn trajectories.

Every stage is an artifact in ``WORKDIR/artifacts`` keyed by a hash of its inputs
(`artifacts.Store`): a killed run resumes at the first unfinished stage, a changed setting
redoes only the stages it reaches, and data modes share what they have in common (all modes
share the first iteration's rollouts and verifier, since both come from the base).

The result is ``WORKDIR/summary.json`` (``models[model][test set]``: the evaluation's
metrics) and ``WORKDIR/summary.md`` (one row per model, test set and selection mode).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections

from mucode_jax import evaluation, multihost, records, report, rollout
from mucode_jax.algorithms import protocol, relabel
from mucode_jax.algorithms.artifacts import Artifact, Store, content_key
from mucode_jax.algorithms.config import check_config, executor_options
from mucode_jax.data import verifier_data as vd
from mucode_jax.types import Problem

log = logging.getLogger("mucode_jax.mucode")

# Data modes whose evaluation verifier is trained on the evaluated model's own rollouts only
# (the official rft.sh for Multi-STaR), under config.eval.verifier="official".
OWN_ROLLOUT_VERIFIER = ("multi_star",)


def _jsonl_write(path: Path, rows: Sequence[Any]) -> None:
    """Writes a stage's JSONL (process 0 only: every process computed the same rows)."""
    if not multihost.is_main():
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    """Writes a stage's small file (process 0 only: every process computed the same text)."""
    if multihost.is_main():
        path.write_text(text)


def _move_on_main(src: Path, dst: Path) -> None:
    """Moves a stage's output folder into place (process 0; the others wait at the stage's
    barrier in `artifacts.Store.run`)."""
    if multihost.is_main():
        os.replace(src, dst)


def _jsonl_read(path: Path) -> list[Any]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ----------------------------------------------------------------------------------------------
# Problems and tokenizer from the config.


def load_problem_set(cfg: ml_collections.ConfigDict) -> list[Problem]:
    """Problems from ``cfg.name`` (``toy`` or a dataset name), ``cfg.split``, ``cfg.limit``,
    ``cfg.path`` (a local JSONL, ``"shared"`` for the copy in ``../shared/data``, or ``""``
    for the HF hub)."""
    if cfg.name == "toy":
        return toy_problem_set(
            cfg.split, cfg.limit, cfg.get("seed", 0), cfg.get("families", ()), **toy_options(cfg)
        )
    from mucode_jax.data import problems as loaders

    path = cfg.get("path") or None
    if path == "shared":  # the local copy beside the repository (../shared/data)
        path = evaluation.default_dataset_path(cfg.name)
        if not path:
            raise ValueError(
                f"path='shared' but ../shared/data has no copy of {cfg.name!r}; give its JSONL "
                "path, or '' to load it from the HF hub."
            )
    probs = loaders.load_problems(
        cfg.name, path=path, split=cfg.get("split") or None, **loaders.options_from_config(cfg)
    )
    return list(probs)[: cfg.limit] if cfg.get("limit") else list(probs)


def warm_start_problems(c: ml_collections.ConfigDict, train: Sequence[Problem]) -> list[Problem]:
    """The problems of the warm start's scripted conversations (``config.warm_start``).

    The warm start stands in for pretraining: with ``num_problems`` != 0 it sees more toy train
    problems than the μCode loop (``-1``: every one of the families; never a test statement,
    the toy split is by statement); with ``exclude_train`` none whose statement is one of the
    loop's ``train`` problems (both readings of it), so the loop's rollouts meet statements
    the warm start never saw, as a pretrained model meets MBPP's train split.
    """
    ws = c.warm_start
    if not ws.get("num_problems", 0):
        return list(train)
    d = c.data.train
    n = max(ws.num_problems, 0)
    problems = toy_problem_set("train", n, d.seed, d.get("families", ()), **toy_options(d))
    if ws.get("exclude_train", False):
        seen = {p.statement for p in train}
        problems = [p for p in problems if p.statement not in seen]
    return problems


def toy_options(cfg: ml_collections.ConfigDict) -> dict[str, Any]:
    """The `toy.toy_problems` options a toy data config may set (variant, test_fraction)."""
    return {k: cfg[k] for k in ("variant", "test_fraction") if k in cfg}


def toy_problem_set(
    split: str, limit: int, seed: int, families: Sequence[str] = (), **options: Any
) -> list[Problem]:
    """The first ``limit`` toy problems of ``split`` (0: all), only of ``families`` if given.

    ``options``: `toy.toy_problems` keywords (``variant``, ``test_fraction``).
    """
    from mucode_jax.data import toy

    if not families:
        return toy.toy_problems(split, limit or None, seed=seed, **options)
    variant = options.get("variant", "hidden")
    known = toy.family_names(variant)
    unknown = set(families) - set(known)
    if unknown:
        raise ValueError(
            f"Unknown toy families {sorted(unknown)} for variant {variant!r}; use some of "
            f"{', '.join(known)}."
        )
    probs = [
        p
        for p in toy.toy_problems(split, None, seed=seed, **options)
        if p.metadata["family"] in families
    ]
    return probs[:limit] if limit else probs


def _models(c: ml_collections.ConfigDict, tokenizer: Any):
    """The run's one sampler and one scorer, on the config's mesh (weights swapped per stage)."""
    from mucode_jax import sharding as sh
    from mucode_jax.inference import Models

    return Models(
        tokenizer,
        dtype=c.sampling.dtype,
        max_new_tokens=c.sampling.max_new_tokens,
        max_prompt_length=c.sampling.max_prompt_length,
        max_batch_size=c.sampling.max_batch_size,
        verifier_max_length=c.verifier.data.max_length,
        mesh=sh.make_mesh(tuple(tuple(a) for a in c.mesh)),
        rules=tuple(tuple(r) for r in c.get("rules", ())) or sh.DEFAULT_RULES,
        stop_on_eom=bool(c.sampling.get("stop_on_eom", False)),
    )


# ----------------------------------------------------------------------------------------------
# The driver.


@dataclasses.dataclass
class Driver:
    config: ml_collections.ConfigDict
    workdir: Path
    executor: Any
    tokenizer: Any
    train: list[Problem]
    tests: dict[str, list[Problem]]  # test set name (config.data.tests) -> its problems

    def __post_init__(self):
        self.workdir = Path(self.workdir)
        self.store = Store(self.workdir / "artifacts")
        self.models = _models(self.config, self.tokenizer)
        self.train_key = content_key([p.id for p in self.train], self.config.data.train)
        self.test_keys = {
            name: content_key([p.id for p in probs], self.config.data.tests[name])
            for name, probs in self.tests.items()
        }

    # -- stages -------------------------------------------------------------------------------

    def base(self) -> Artifact:
        """The base generator π_0: an HF directory, or the demo's warm start (SFT on noisy data)."""
        c = self.config
        if not c.warm_start.enabled:
            path = Path(c.base)
            if not (path / "config.json").is_file():
                raise ValueError(
                    f"config.base={c.base!r} is not an HF checkpoint directory; point it at a "
                    "Llama checkpoint or enable config.warm_start."
                )
            return Artifact("base", content_key(str(path.resolve())), path, reused=True)

        ws = c.warm_start
        problems = warm_start_problems(c, self.train)
        # Its conversations run through the rollout engine with the rollouts' search settings.
        search = rollout.SearchConfig(**c.rollout.search.to_dict(), seed=c.seed)

        def fn(out: Path):
            from mucode_jax.algorithms import warm_start
            from mucode_jax.training import train_sft

            convs = warm_start.conversations(
                problems,
                self.executor,
                search,
                out / "conversations.jsonl",
                samples_per_problem=ws.samples_per_problem,
                max_turns=ws.get("turns", 1),
                p_correct=ws.p_correct,
                kind_weights=dict(ws.get("kind_weights") or {}) or None,
            )
            res = train_sft(ws.sft, convs, out / "train", tokenizer=self.tokenizer)
            _move_on_main(res.hf_path, out / "hf")

        from mucode_jax.algorithms.warm_start import SCRIPTED_FIELDS

        # The rollouts' N (or T) can change without retraining the warm start.
        unused = set(SCRIPTED_FIELDS)
        inputs = {
            "problems": content_key([p.id for p in problems]),
            "cfg": ws,
            "search": {k: v for k, v in c.rollout.search.to_dict().items() if k not in unused},
            "seed": c.seed,
        }
        art = self.store.run("warm_start", inputs, fn)
        return Artifact(art.name, art.key, art.path / "hf", art.reused)

    def rollouts(self, gen: Artifact, mode: str | None = None) -> Artifact:
        c = self.config
        own = mode in relabel.OWN_SETTINGS  # e.g. zheng_rft: its own CoT-retry rollouts
        r = c[mode] if own else c.rollout
        search = rollout.SearchConfig(**r.search.to_dict(), seed=c.seed)

        def fn(out: Path):
            bar = report.SearchProgress(multihost.is_main())
            bar.start("rollouts")
            policy = self.models.policy(gen.path, temperature=r.temperature, top_p=r.top_p)
            rollout.run_search(
                self.train,
                policy,
                self.executor,
                search,
                out / "rollouts.jsonl",
                progress=bar,
            )
            bar.close()

        inputs = {"gen": gen, "train": self.train_key, "cfg": r, "seed": c.seed}
        if own:
            inputs["mode"] = mode
        return self.store.run("rollouts", inputs, fn)

    def verifier_data(self, rolls: Artifact, previous: Artifact | None, iteration: int) -> Artifact:
        c = self.config

        def fn(out: Path):
            trajectories = records.read_trajectories(rolls.path / "rollouts.jsonl")
            samples = vd.verifier_samples_from_trajectories(trajectories, iteration=iteration)
            pairs, stats = vd.build_verifier_pairs(
                samples,
                pairs_per_problem=c.verifier.data.pairs_per_problem,
                seed=c.seed + iteration,
                label_non_final_negative=c.verifier.data.label_non_final_negative,
            )
            old = _jsonl_read(previous.path / "pairs.jsonl") if previous is not None else []
            _jsonl_write(out / "pairs.jsonl", vd.aggregate_verifier_pairs(old, pairs))
            _write_text(out / "stats.json", json.dumps(stats, indent=2))

        inputs = {
            "rollouts": rolls,
            "previous": previous,
            "iteration": iteration,
            "cfg": c.verifier.data,
        }
        return self.store.run("verifier_data", inputs, fn)

    def verifier(self, base: Artifact, data: Artifact) -> Artifact:
        c = self.config

        def fn(out: Path):
            from mucode_jax.training import train_verifier

            pairs = _jsonl_read(data.path / "pairs.jsonl")
            if not pairs:
                raise ValueError(
                    f"No verifier pairs in {data.path.name}: no training problem has both a "
                    "correct and an incorrect rollout program, so the generator is too weak (or "
                    "too strong); train the warm start longer or raise rollout.search.num_searches."
                )
            res = train_verifier(
                c.verifier,
                pairs,
                out / "train",
                tokenizer=self.tokenizer,
                init_params_from=str(base.path),
            )
            _write_text(out / "metrics.json", json.dumps(_floats(res.last_metrics), indent=2))
            _move_on_main(res.hf_path, out / "hf")

        art = self.store.run("verifier", {"base": base, "data": data, "cfg": c.verifier}, fn)
        return Artifact(art.name, art.key, art.path / "hf", art.reused)

    def scores(self, ver: Artifact, rolls: Artifact) -> Artifact:
        """R(x, y) of every candidate of every turn of the rollouts, as their own artifact."""

        def fn(out: Path):
            scorer = self.models.scorer(ver.path)
            keys, xs, ys = [], [], []
            for tr in records.read_trajectories(rolls.path / "rollouts.jsonl"):
                for t, turn in enumerate(tr.turns):
                    for k, cand in enumerate(turn.candidates):
                        keys.append((tr.problem_id, tr.search, t, k))
                        xs.append(tr.prompt)
                        ys.append(cand.completion)
            scores = scorer.score(xs, ys)  # every process: the scorer is collective
            if multihost.is_main():
                records.write_scores(out / "scores.jsonl", dict(zip(keys, scores)))

        return self.store.run("scores", {"verifier": ver, "rollouts": rolls}, fn)

    def sft_data(
        self,
        mode: str,
        rolls: Artifact,
        scores: Artifact,
        previous: Artifact | None,
        iteration: int,
    ) -> Artifact:
        c = self.config

        def fn(out: Path):
            convs, stats = relabel.build_sft_data(
                mode,
                records.read_trajectories(rolls.path / "rollouts.jsonl"),
                scores=records.read_scores(scores.path / "scores.jsonl"),
                config=relabel.RelabelConfig(**c.relabel.to_dict()),
                seed=c.seed + iteration,
                iteration=iteration,
            )
            old = _jsonl_read(previous.path / "sft.jsonl") if previous is not None else []
            _jsonl_write(out / "sft.jsonl", old + list(convs))
            _write_text(out / "stats.json", json.dumps(_floats(stats), indent=2))

        inputs = {
            "mode": mode,
            "rollouts": rolls,
            "scores": scores,
            "previous": previous,
            "iteration": iteration,
            "cfg": c.relabel,
        }
        return self.store.run("sft_data", inputs, fn)

    def generator(self, base: Artifact, data: Artifact, mode: str | None = None) -> Artifact:
        c = self.config
        sft_cfg = c.sft
        if mode in relabel.OWN_SETTINGS:  # e.g. zheng_rft: config.sft with its own optimiser
            sft_cfg = c.sft.copy_and_resolve_references()
            sft_cfg.optim.update(c[mode].optim.to_dict())

        def fn(out: Path):
            from mucode_jax.training import train_sft

            convs = _jsonl_read(data.path / "sft.jsonl")
            # Relabeled data is already one conversation per training example, each ending in
            # its target (see relabel.py): no second prefix expansion, loss on the final turn.
            cfg = sft_cfg.copy_and_resolve_references()
            with cfg.unlocked():
                cfg.data.prefix_expansion = False
                cfg.data.target = "final"
            res = train_sft(
                cfg,
                convs,
                out / "train",
                tokenizer=self.tokenizer,
                init_params_from=str(base.path),
            )
            _move_on_main(res.hf_path, out / "hf")

        art = self.store.run("generator", {"base": base, "data": data, "cfg": sft_cfg}, fn)
        return Artifact(art.name, art.key, art.path / "hf", art.reused)

    def evaluate(self, gen: Artifact, ver: Artifact, name: str, test: str) -> dict[str, Any]:
        """π on one test set: multi-turn BoN under each selection mode (with R = ``ver``),
        the greedy multi-turn Pass@T and pass@k over sampled multi-turn trajectories."""
        c = self.config
        e = c.eval
        search = rollout.SearchConfig(**e.search.to_dict(), seed=c.seed)
        problems = self.tests[test]

        def fn(out: Path):
            from mucode_jax import summary

            policy = self.models.policy(gen.path, temperature=e.temperature, top_p=e.top_p)
            needs_lv = any(m in ("lv", "pt_lv") for m in e.modes)
            scorer = self.models.scorer(ver.path) if needs_lv else None
            res = evaluation.run_evaluation(
                problems,
                policy,
                self.executor,
                out,
                modes=list(e.modes),
                search=search,
                scorer=scorer,
                pass_k=list(e.pass_k),
                progress=report.SearchProgress(multihost.is_main()),
                name=f"{name} {test}",
            )
            # The paper's multi-turn metrics: one candidate per turn, stopping only on a
            # correct program (public and private tests), as the official rollout script.
            runs = []
            if e.greedy:
                runs.append(("greedy", 1, 0.0, 1.0, (1,)))
            if e.sampled.num_trajectories:
                s = e.sampled
                runs.append(("sampled", s.num_trajectories, s.temperature, s.top_p, s.pass_k))
            for kind, n, temperature, top_p, ks in runs:
                cfg = rollout.SearchConfig(
                    num_searches=n,
                    num_candidates=1,
                    max_turns=search.max_turns,
                    feedback=search.feedback,
                    stop_on_public_pass=False,
                    stop_on_correct=True,
                    show_tests=search.show_tests,
                    prompt_form=search.prompt_form,
                    extraction=search.extraction,
                    system=search.system,
                    batch_size=search.batch_size,
                    seed=c.seed,
                )
                bar = report.SearchProgress(multihost.is_main())
                bar.start(f"{name} {test} {kind}")
                records_ = rollout.run_search(
                    problems,
                    self.models.policy(gen.path, temperature=temperature, top_p=top_p),
                    self.executor,
                    cfg,
                    out / f"{kind}.jsonl",
                    progress=bar,
                )
                bar.close()
                res[kind] = summary.trajectory_metrics(
                    records_, problems, n, pass_k=ks, seed=c.seed
                )
            if multihost.is_main():
                report.write_json_atomic(out / "metrics.json", res)

        inputs = {
            "gen": gen,
            "verifier": ver,
            "test": self.test_keys[test],
            "cfg": e,
            "seed": c.seed,
        }
        art = self.store.run("eval", inputs, fn)
        return json.loads((art.path / "metrics.json").read_text())

    def evaluate_all(self, gen: Artifact, ver: Artifact, name: str) -> dict[str, Any]:
        """`evaluate` on every test set of ``config.data.tests``, by name."""
        return {test: self.evaluate(gen, ver, name, test) for test in self.tests}

    def eval_verifier(
        self, mode: str, gen: Artifact, vdata: Artifact, base: Artifact, ver: Artifact, i: int
    ) -> Artifact:
        """The verifier π_i (``gen``, trained in iteration i) is evaluated with.

        ``config.eval.verifier="official"``: one trained on the pairs of π_0..π_i — the
        rollouts of π_i added to ``vdata`` (π_0..π_{i-1}), exactly the next iteration's
        verifier, so only the last iteration costs extra rollouts and a verifier (the official
        ``mucode.sh``); for the modes of `OWN_ROLLOUT_VERIFIER` (Multi-STaR, the official
        ``rft.sh``) one trained on π_i's own rollouts only. ``"previous"``: ``ver``, the
        verifier R_i of iteration i (pairs of π_0..π_{i-1}; our earlier schedule).
        """
        if self.config.eval.verifier == "previous":
            return ver
        rolls = self.rollouts(gen)
        own = mode in OWN_ROLLOUT_VERIFIER
        return self.verifier(base, self.verifier_data(rolls, None if own else vdata, i + 1))

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        c = self.config
        results: dict[str, Any] = {}
        base = self.base()
        for mode in [c.mode, *c.baselines]:
            gen, vdata, sft = base, None, None
            for i in range(1, c.iterations + 1):
                log.info("=== %s: iteration %d of %d", mode, i, c.iterations)
                rolls = self.rollouts(gen)
                vdata = self.verifier_data(rolls, vdata, i)
                ver = self.verifier(base, vdata)
                if i == 1 and "base" not in results:  # π_0 with the verifier of its rollouts
                    results["base"] = self.evaluate_all(base, ver, "base")
                scores = self.scores(ver, rolls)
                own = self.rollouts(gen, mode) if mode in relabel.OWN_SETTINGS else rolls
                sft = self.sft_data(mode, own, scores, sft, i)
                gen = self.generator(base, sft, mode)
                name = f"{mode}/iter{i}"
                results[name] = self.evaluate_all(
                    gen, self.eval_verifier(mode, gen, vdata, base, ver, i), name
                )
        summary = {"models": results, "timings": self.store.timings}
        if multihost.is_main():  # every process holds the same summary
            report.write_json_atomic(self.workdir / "summary.json", summary)
            (self.workdir / "summary.md").write_text(report.summary_table(results))
            flat = {f"{m} {t}": res for m, by_test in results.items() for t, res in by_test.items()}
            report.plot_per_turn(flat, self.workdir / "per_turn_success.png")
        multihost.barrier("summary written")
        return summary


def _floats(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _floats(v) for k, v in d.items()}
    try:
        return float(d) if not isinstance(d, (str, list, bool, type(None))) else d
    except (TypeError, ValueError):
        return str(d)


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, Any]:
    """Runs the whole driver: checks the config, starts the executor, loads problems and
    tokenizer, loops.

    On several processes (`mucode_jax.multihost`) every process runs this with the same
    config: it checks that they agree on the config and the problems, and that the workdir
    is shared (`artifacts.Store`); each process starts its own executor for the programs of
    its share of the searches; process 0 writes every file, the others wait and read.
    """
    from mucode_jax.execution import Executor
    from mucode_jax.training.inputs import tokenizer_from_config

    check_config(config)
    multihost.check_same(config, "the driver config")
    name = config.get("protocol", "official")
    log.info("protocol %s: %s", name, protocol.describe(name))
    tokenizer = tokenizer_from_config(config)
    train = load_problem_set(config.data.train)
    if not train:
        raise ValueError("The train problem set is empty; check config.data.train.")
    tests = {}
    for name in config.data.tests:
        tests[name] = load_problem_set(config.data.tests[name])
        if not tests[name]:
            raise ValueError(f"The test set {name!r} is empty; check config.data.tests.{name}.")
    multihost.check_same([train, tests], "the train and test problems")
    # Reference costs (the CPU limits) are measured once per workdir, shared by every stage
    # (one file per process: each host measures its own CPU).
    cache = evaluation.reference_cache(workdir)
    with Executor(**executor_options(config), reference_cache=cache) as executor:
        driver = Driver(config, Path(workdir), executor, tokenizer, train, tests)
        return driver.run()
