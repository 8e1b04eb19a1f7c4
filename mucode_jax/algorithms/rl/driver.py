"""The RLEF job: the μCode driver's base stage, RL from it, evaluation, the summary.

Stages (content-addressed artifacts under ``WORKDIR/artifacts``, as the μCode driver's):
the base generator (`algorithms.mucode.Driver.base`: an HF directory, or the demo's warm
start, the same stage and key as the μCode demo's), its evaluation, then for each RL
algorithm (``rl.algorithm`` and ``rl.controls``) an ``rlef`` stage (the resumable loop of
`rl.loop`, its HF export) and its evaluation. ``WORKDIR/summary.json`` has the μCode
driver's schema (models ``base`` and ``rlef/<algorithm>``, per selection mode BoN@t with
intervals), with ``summary.md`` and ``per_turn_success.png``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import ml_collections

from mucode_jax import report
from mucode_jax.algorithms import mucode
from mucode_jax.algorithms.artifacts import Artifact
from mucode_jax.algorithms.config import check_config
from mucode_jax.algorithms.rl.config import check_rl_config

log = logging.getLogger("mucode_jax.rlef")


def load_models(c: ml_collections.ConfigDict, base_dir: Path):
    """The trainable policy and value model from the base directory, on the config's mesh."""
    from mucode_jax import sharding as sh
    from mucode_jax.models import hf
    from mucode_jax.training.config import dtype_of
    from mucode_jax.training.sft import verifier_from_base

    m = c.rl.get("model", ml_collections.ConfigDict())
    mesh = sh.make_mesh(tuple(tuple(a) for a in c.mesh))
    rules = tuple(tuple(r) for r in c.get("rules", ())) or sh.DEFAULT_RULES
    kw = dict(
        dtype=dtype_of(m.get("dtype", "float32")),
        param_dtype=dtype_of(m.get("param_dtype", "float32")),
        mesh=mesh,
        rules=rules,
        remat=bool(m.get("remat", False)),
        attention=m.get("attention", "auto"),
    )
    policy = hf.load_pretrained(base_dir, **kw)
    value = verifier_from_base(hf.load_pretrained(base_dir, **kw), seed=c.seed)
    return policy, value, mesh, rules


def rl_stage(driver: mucode.Driver, base: Artifact, algorithm: str) -> Artifact:
    c = driver.config
    rcfg = c.rl.copy_and_resolve_references()
    with rcfg.unlocked():
        rcfg.algorithm = algorithm
        rcfg.controls = ()

    def fn(out: Path):
        from mucode_jax.algorithms.rl import loop
        from mucode_jax.algorithms.rl.trainer import RLTrainer
        from mucode_jax.training.sft import export

        policy_model, value_model, mesh, rules = load_models(c, base.path)
        trainer = RLTrainer(rcfg, policy_model, value_model, mesh, rules, seed=c.seed, log=log.info)
        del policy_model, value_model
        policy = driver.models.policy(base.path, temperature=rcfg.temperature, top_p=rcfg.top_p)
        loop.train(
            rcfg,
            out,
            trainer=trainer,
            policy=policy,
            executor=driver.executor,
            problems=driver.train,
            seed=c.seed,
        )
        from flax import nnx

        export(
            nnx.merge(trainer.policy_graphdef, trainer.state.policy.params), out, driver.tokenizer
        )

    inputs = {"base": base, "train": driver.train_key, "cfg": rcfg, "seed": c.seed}
    art = driver.store.run(f"rlef_{algorithm}", inputs, fn)
    return Artifact(art.name, art.key, art.path / "hf", art.reused)


def run_driver(driver: mucode.Driver) -> dict[str, Any]:
    c = driver.config
    base = driver.base()
    results = {"base": driver.evaluate_all(base, None, "base")}
    for algorithm in [c.rl.algorithm, *c.rl.controls]:
        gen = rl_stage(driver, base, algorithm)
        name = f"rlef/{algorithm}"
        results[name] = driver.evaluate_all(gen, None, name)
    summary = {"models": results, "timings": driver.store.timings}
    from mucode_jax import multihost

    if not multihost.is_main():
        return summary  # process 0 writes; every process returns the same summary
    report.write_json_atomic(driver.workdir / "summary.json", summary)
    (driver.workdir / "summary.md").write_text(report.summary_table(results))
    flat = {f"{m} {t}": res for m, by_test in results.items() for t, res in by_test.items()}
    report.plot_per_turn(flat, driver.workdir / "per_turn_success.png")
    return summary


def run(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict[str, Any]:
    """Checks the config, starts the executor, loads problems and tokenizer, runs the job.

    On several processes every process runs this with the same config, as the μCode
    driver: they must agree on the config and the problems, each starts its own executor
    for the programs of its share of the episodes, process 0 writes every file.
    """
    from mucode_jax import evaluation, multihost
    from mucode_jax.algorithms.config import executor_options
    from mucode_jax.execution import Executor
    from mucode_jax.training.inputs import tokenizer_from_config

    check_config(config)
    check_rl_config(config)
    multihost.check_same(config, "the driver config")
    tokenizer = tokenizer_from_config(config)
    train = mucode.load_problem_set(config.data.train)
    if not train:
        raise ValueError("The train problem set is empty; check config.data.train.")
    tests = {name: mucode.load_problem_set(config.data.tests[name]) for name in config.data.tests}
    empty = [name for name, probs in tests.items() if not probs]
    if empty:
        raise ValueError(f"The test set {empty[0]!r} is empty; check config.data.tests.{empty[0]}.")
    multihost.check_same([train, tests], "the train and test problems")
    cache = evaluation.reference_cache(workdir)
    with Executor(**executor_options(config), reference_cache=cache) as executor:
        driver = mucode.Driver(config, Path(workdir), executor, tokenizer, train, tests)
        return run_driver(driver)
