r"""What a real rollout costs the sampler: useful row-steps, prefilled rows and wall time.

Runs the μCode rollout stage of a driver config (default: the CPU demo) once per sampler
setting, on the driver's own base generator (for the demo, its warm start, trained once and
cached under ``--workdir``), with the same problems, seeds and executor:

* ``plain``: one decode loop per call over the whole cache, every row prefilled;
* ``compact``: decode in phases of 32 steps with finished rows compacted out of the batch;
* ``all`` (the default sampler): ``compact`` plus decode windows and one prefill per distinct
  prompt; ``all16`` and ``all8``: the same with phases of 16 and 8 steps.

For each it prints the fraction of computed row-steps that produced a token, the rows
prefilled per row asked for, the wall time and whether the trajectories equal those of
``plain`` (they must: the settings change only the cost). The counts do not depend on the
machine's load; the wall times do.

  python launch/bench_rollout.py --config configs/demo.py --workdir /tmp/bench_rollout
"""

from __future__ import annotations

import datetime
import json
import platform
import sys
import time
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py", "Driver config file.")
_WORKDIR = flags.DEFINE_string(
    "workdir", "/tmp/bench_rollout", "Where the base generator is cached."
)
_PROBLEMS = flags.DEFINE_integer("problems", 64, "Train problems to roll out (0: all).")
_SETTINGS = flags.DEFINE_list("settings", ["plain", "compact", "all"], "Sampler settings to run.")

SETTINGS = {
    "plain": dict(compact_every=None, share_prefill=False),
    "compact": dict(compact_every=32, share_prefill=False),
    "all": dict(compact_every=32, share_prefill=True),
    "all16": dict(compact_every=16, share_prefill=True),
    "all8": dict(compact_every=8, share_prefill=True),
}


def main(argv):
    del argv
    from mucode_jax import compile_cache

    compile_cache.enable()
    import jax
    import jax.numpy as jnp

    from mucode_jax import rollout
    from mucode_jax.algorithms import mucode
    from mucode_jax.algorithms.config import check_config, executor_options
    from mucode_jax.data.tokenizer import eos_token_ids
    from mucode_jax.execution import Executor
    from mucode_jax.models.hf import load_pretrained
    from mucode_jax.sampling import Sampler
    from mucode_jax.sampling.methods import make_method
    from mucode_jax.training.inputs import quiet_checkpoint_logs, tokenizer_from_config

    quiet_checkpoint_logs()
    c = _CONFIG.value
    check_config(c)  # applies config.protocol, as the driver does
    unknown = [s for s in _SETTINGS.value if s not in SETTINGS]
    if unknown:
        sys.exit(f"bench_rollout: unknown settings {unknown}; use some of {sorted(SETTINGS)}.")
    workdir = Path(_WORKDIR.value)
    tokenizer = tokenizer_from_config(c)
    train = mucode.load_problem_set(c.data.train)
    tests = {name: mucode.load_problem_set(c.data.tests[name]) for name in c.data.tests}
    problems = train[: _PROBLEMS.value] if _PROBLEMS.value else train
    search = rollout.SearchConfig(**c.rollout.search.to_dict(), seed=c.seed)
    with Executor(
        **executor_options(c), reference_cache=workdir / "reference_cpu.jsonl"
    ) as executor:
        driver = mucode.Driver(c, workdir, executor, tokenizer, train, tests)
        base = driver.base()  # the warm start: trained once, then read from the workdir
        model = load_pretrained(base.path, dtype=getattr(jnp, c.sampling.dtype))
        method = make_method(temperature=c.rollout.temperature, top_p=c.rollout.top_p)
        rows, reference = [], None
        for name in _SETTINGS.value:
            sampler = Sampler(
                model,
                max_new_tokens=c.sampling.max_new_tokens,
                max_prompt_length=c.sampling.max_prompt_length,
                eos_ids=eos_token_ids(tokenizer),
                max_batch_size=c.sampling.max_batch_size,
                pad_id=tokenizer.pad_token_id or 0,
                **SETTINGS[name],
            )
            sampler.warmup()
            sampler.reset_stats()
            policy = rollout.ModelPolicy(sampler, tokenizer, method=method)
            out = workdir / f"rollouts_{name}.jsonl"
            out.unlink(missing_ok=True)
            t0 = time.perf_counter()
            trajectories = rollout.run_search(problems, policy, executor, search, out)
            wall = time.perf_counter() - t0
            programs = {  # trajectories come back in the order they finish
                (r.problem_id, r.search): [c.tokens for t in r.turns for c in t.candidates]
                for r in trajectories
            }
            reference = programs if reference is None else reference
            s = sampler.stats
            rows.append(
                dict(
                    setting=name,
                    useful_fraction=s["useful_row_steps"] / max(s["row_steps"], 1),
                    row_steps=s["row_steps"],
                    useful_row_steps=s["useful_row_steps"],
                    prefill_rows_per_prompt_row=s["prefill_rows"] / max(s["prompt_rows"], 1),
                    wall_s=wall,
                    same_tokens_as_first=programs == reference,
                )
            )
            print(json.dumps(rows[-1]))
    print()
    print(
        f"{datetime.date.today()} {platform.node()} ({jax.devices()[0].platform}), "
        f"{len(problems)} problems x {search.num_searches} searches, "
        f"max_new_tokens {c.sampling.max_new_tokens}"
    )
    print("| setting | useful row-steps | prefilled rows / rows asked | wall s | same tokens |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['setting']} | {r['useful_fraction']:.1%} ({r['useful_row_steps']:,} of "
            f"{r['row_steps']:,}) | {r['prefill_rows_per_prompt_row']:.2f} | {r['wall_s']:.1f} | "
            f"{r['same_tokens_as_first']} |"
        )


if __name__ == "__main__":
    from mucode_jax import cli

    app.run(main, flags_parser=cli.parse_flags)
