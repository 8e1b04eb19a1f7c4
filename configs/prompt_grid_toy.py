"""Zheng et al.'s prompt grid and multi-turn study on the toy domain, on the μCode demo's warm start.

  python launch/prompt_grid.py --config configs/prompt_grid_toy.py --workdir workdir/prompt_grid_toy

The generator is the demo's warm start (`configs/demo.py`: the driver's base stage, trained
once into WORKDIR/artifacts; `--config.base_workdir=workdir/demo` reuses a demo run's). Then
the 9 × 6 single-turn cells (no reasoning + 8 reasoning prompts × 6 instruction prompts, 4
samples per problem) and the multi-turn study (4 feedback granularities and CoT-retry, 8
trajectories of up to 3 turns per problem) on 24 toy test problems. A 0.92M-parameter model
trained on toy code only cannot follow prose prompts: the numbers test the machinery (every
cell runs, is resumable, has intervals), not the paper's claims.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import demo  # noqa: E402
import ml_collections  # noqa: E402

from mucode_jax.prompt_grid import grid_defaults  # noqa: E402


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    del arg
    c = grid_defaults()
    c.driver = demo.get_config()
    c.problems = ml_collections.ConfigDict(c.driver.data.tests.toy.to_dict())  # the demo's test set
    c.problems.limit = 24
    c.batch_size = 64
    c.bootstrap = 1000
    c.single.num_samples = 4
    c.single.pass_k = (1, 4)
    c.single.pass_n_k = ((1, 4),)
    c.multi.wrapper = "mucode"  # the demo's feedback turns
    c.multi.max_chars = 300
    c.multi.num_searches = 8
    c.multi.budgets = (1, 2, 4, 8)
    c.multi.n = (1,)
    c.multi.draws = 200
    return c
