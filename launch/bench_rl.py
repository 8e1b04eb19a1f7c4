r"""One RLEF round split into generation, execution and training time.

Runs the real loop (`algorithms.rl.loop.train`: rollouts through `rollout.run_search`, rows,
the scoring pass, PPO epochs, weight sync, checkpoint) of an RLEF config (default: the CPU
demo, from its warm start, trained once and cached under ``--workdir``) one round per call,
so each round is timed on its own and round 1 (which compiles every program and only trains
the value model when ``rl.value_warmup_iterations`` is 1) can be set apart. For each round:

* ``generation``: wall time inside the policy's sampler calls (they return host tokens, so
  the time is the sampler's, compilation of new bucket shapes included);
* ``execution (overlapped)``: the rest of the rollout wall time: waiting for programs that
  had not finished when no conversation could be sampled, plus the scheduler's host work;
* ``execution (alone)``: every program of the round (public and private tests) run again
  through the same executor with nothing else running: what execution costs by itself;
* ``scoring``: the compiled pass of log π_old, log π_ref and V over the round's rows;
* ``updates``: the rest of the round (advantages, the PPO epochs' policy and value steps,
  the weight sync, fetching the metrics; the steps are compiled before round 1);
* ``rows``, ``updates n``: what the round trained on.

  python launch/bench_rl.py --config configs/rlef_demo.py --workdir /tmp/bench_rl --rounds 3

The figures depend on the machine's load; the load average is printed with them.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_CONFIG = config_flags.DEFINE_config_file("config", "configs/rlef_demo.py", "RLEF config file.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/bench_rl", "Where the base generator is cached.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Rounds to time (round 1 compiles).")


class TimedPolicy:
    """The rollout policy, with the wall time spent inside its sampler calls."""

    def __init__(self, policy):
        self.policy, self.seconds, self.calls = policy, 0.0, 0

    def __getattr__(self, name):
        return getattr(self.policy, name)

    def complete(self, conversations, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.policy.complete(conversations, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1


def execution_alone(executor, problems, path: Path) -> tuple[float, int]:
    """Runs every program of a round's record file again (public and private tests)."""
    from mucode_jax import records

    by_id = {p.id: p for p in problems}
    codes, suites = [], []
    for t in records.read_trajectories(path):
        p = by_id[t.problem_id]
        for turn in t.turns:
            for c in turn.candidates:
                codes += [c.code, c.code]
                suites += [p.public_tests, p.private_tests]
    t0 = time.perf_counter()
    executor.map(codes, suites)
    return time.perf_counter() - t0, len(codes)


def main(argv):
    del argv
    from mucode_jax import compile_cache

    compile_cache.enable()
    import jax

    from mucode_jax.algorithms import mucode
    from mucode_jax.algorithms.config import check_config, executor_options
    from mucode_jax.algorithms.rl import loop
    from mucode_jax.algorithms.rl.config import check_rl_config
    from mucode_jax.algorithms.rl.driver import load_models
    from mucode_jax.algorithms.rl.trainer import RLTrainer
    from mucode_jax.execution import Executor
    from mucode_jax.training.inputs import quiet_checkpoint_logs, tokenizer_from_config
    from mucode_jax.training.writers import read_metrics

    quiet_checkpoint_logs()
    c = _CONFIG.value
    check_config(c)
    check_rl_config(c)
    workdir = Path(_WORKDIR.value)
    rl_dir = workdir / "bench_round"
    shutil.rmtree(rl_dir, ignore_errors=True)  # every run times fresh rounds
    tokenizer = tokenizer_from_config(c)
    train = mucode.load_problem_set(c.data.train)
    tests = {name: mucode.load_problem_set(c.data.tests[name]) for name in c.data.tests}
    rcfg = c.rl.copy_and_resolve_references()
    rows = []
    with Executor(**executor_options(c), reference_cache=workdir / "reference_cpu.jsonl") as ex:
        driver = mucode.Driver(c, workdir, ex, tokenizer, train, tests)
        base = driver.base()  # the warm start: trained once, then read from the workdir
        t0 = time.perf_counter()
        policy_model, value_model, mesh, rules = load_models(c, base.path)
        trainer = RLTrainer(rcfg, policy_model, value_model, mesh, rules, seed=c.seed)
        del policy_model, value_model
        setup_s = time.perf_counter() - t0
        policy = TimedPolicy(driver.models.policy(base.path, temperature=rcfg.temperature))
        score = trainer.score
        scoring = {"s": 0.0}

        def timed_score(r):
            t = time.perf_counter()
            try:
                return score(r)
            finally:
                scoring["s"] += time.perf_counter() - t

        trainer.score = timed_score
        for k in range(1, _ROUNDS.value + 1):
            with rcfg.unlocked():
                rcfg.iterations = k
                rcfg.progress = False
            policy.seconds, scoring["s"] = 0.0, 0.0
            load0 = os.getloadavg()[0]
            loop.train(
                rcfg, rl_dir, trainer=trainer, policy=policy, executor=ex,
                problems=driver.train, seed=c.seed,
            )  # fmt: skip
            rec = read_metrics(rl_dir / "rounds.jsonl")[-1]
            alone, programs = execution_alone(
                ex, driver.train, rl_dir / "rollouts" / f"iter_{k - 1:04d}.jsonl"
            )
            gen = policy.seconds
            row = dict(
                round=k,
                rollout_s=rec["rollout_s"],
                generation_s=gen,
                execution_overlapped_s=rec["rollout_s"] - gen,
                execution_alone_s=alone,
                programs=programs,
                train_s=rec["train_s"],
                scoring_s=scoring["s"],
                updates_s=rec["train_s"] - scoring["s"],
                rows=int(rec["rows_rows"]),
                updates=int(rec["updates"]),
                policy_trained=k > int(rcfg.value_warmup_iterations),
                load=(load0, os.getloadavg()[0]),
            )
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    r = rcfg
    print(
        f"{datetime.date.today()} {platform.node()} ({jax.devices()[0].platform}, "
        f"{jax.device_count()} devices, {os.cpu_count()} CPUs), "
        f"{r.problems_per_iteration} problems x {r.episodes_per_problem} episodes per round, "
        f"minibatch {r.minibatch_size}, {r.epochs} epochs, max_length {r.max_length}, "
        f"executor workers {c.executor.workers}; trainer set-up and step compilation "
        f"{setup_s:.1f} s"
    )
    print(
        "| round | rollout s | generation s | execution s (overlapped) | execution s (alone, "
        "programs) | train s | scoring s | updates s (n) | rows | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for x in rows:
        note = "" if x["policy_trained"] else " (value only)"
        print(
            f"| {x['round']} | {x['rollout_s']:.1f} | {x['generation_s']:.1f} | "
            f"{x['execution_overlapped_s']:.1f} | {x['execution_alone_s']:.1f} "
            f"({x['programs']}) | {x['train_s']:.1f} | {x['scoring_s']:.1f} | "
            f"{x['updates_s']:.1f} ({x['updates']}{note}) | {x['rows']} | "
            f"{x['load'][0]:.1f}-{x['load'][1]:.1f} |"
        )


if __name__ == "__main__":
    from mucode_jax import cli

    app.run(main, flags_parser=cli.parse_flags)
