"""Zheng et al.'s prompt grid and multi-turn study on CodeContests (the paper's setting).

  python launch/prompt_grid.py --config configs/prompt_grid_codecontests.py \
      --config.driver.base=/ckpt/Llama-3.1-8B-Instruct \
      --config.driver.tokenizer=/ckpt/Llama-3.1-8B-Instruct \
      --config.problems.path=/data/code_contests --workdir /runs/prompt_grid_cc_8b

Single turn: no reasoning + 8 reasoning prompts × 6 instruction prompts, 100 samples per
problem, T = 1.0, top-p 0.95; pass@1, pass@10, pass@100 and pass 10@100. Multi-turn: 3 turns
with each feedback granularity and CoT-retry (RLEF's feedback wrapper), 100 trajectories per
problem, pass 1@k and pass 10@k for k = 1..100 samples (every turn counts). The CodeContests
test split (165 problems). Sampling limits and the mesh are the driver config's.
"""

import ml_collections

from mucode_jax.algorithms.config import mucode_defaults
from mucode_jax.prompt_grid import grid_defaults


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    del arg
    c = grid_defaults()
    d = mucode_defaults()
    d.base = "/ckpt/Llama-3.1-8B-Instruct"  # override with --config.driver.base
    d.tokenizer = d.base
    d.sampling.dtype = "bfloat16"
    d.sampling.max_new_tokens = 2048
    d.sampling.max_prompt_length = 8192
    d.sampling.max_batch_size = 64
    d.mesh = (("data", 1), ("fsdp", -1), ("tensor", 1))
    c.driver = d
    c.problems = ml_collections.ConfigDict(
        dict(name="codecontests", split="test", limit=0, seed=0, families=(), path="")
    )
    c.temperature = 1.0
    c.top_p = 0.95
    c.batch_size = 64
    c.single.num_samples = 100
    c.single.pass_k = (1, 10, 100)
    c.single.pass_n_k = ((10, 100),)
    c.multi.wrapper = "rlef"
    c.multi.num_searches = 100
    c.multi.budgets = (1, 3, 10, 30, 100)
    c.multi.n = (1, 10)
    return c
