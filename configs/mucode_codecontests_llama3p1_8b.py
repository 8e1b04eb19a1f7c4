"""μCode on CodeContests with Llama-3.1-8B-Instruct (paper: 1k train problems, 3 turns).

  python launch/mucode.py --config configs/mucode_codecontests_llama3p1_8b.py \
      --config.base=/ckpt/Llama-3.1-8B-Instruct --config.tokenizer=/ckpt/Llama-3.1-8B-Instruct \
      --config.data.train.path=/data/code_contests --config.data.tests.codecontests.path=/data/code_contests \
      --workdir /runs/mucode_cc_8b

Official hyperparameters as in `mucode_mbpp_llama3p2_1b.py`; the 8B needs fsdp over
all devices of a host or slice plus rematerialisation; tensor parallelism can be added with
``--config.mesh`` / the train configs' ``mesh`` (e.g. ``(("data",1),("fsdp",-1),("tensor",2))``).
CodeContests problems read stdin: the public tests are shown in the prompt (dataset default).
"""

import sys
from pathlib import Path

import ml_collections

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mucode_mbpp_llama3p2_1b as base_config  # noqa: E402


def get_config(arg: str = ""):
    del arg
    c = base_config.get_config()
    preset = "llama3.1-8b"
    for t in (c.sft, c.verifier):
        t.model.preset = preset
    # One 8192-token row per device per micro-batch on 8 devices: 16 / 8 = 2 micro-batches.
    c.sft.grad_accum = c.sft.batch_size // 8
    c.verifier.grad_accum = c.verifier.batch_size // 8
    c.baselines = ("multi_star",)
    c.data.train.name, c.data.train.split, c.data.train.limit = "codecontests", "train", 1000
    c.data.tests = ml_collections.ConfigDict()
    c.data.tests.codecontests = ml_collections.ConfigDict(
        dict(name="codecontests", split="test", limit=0, path="")
    )
    c.sampling.max_batch_size = 64
    c.rollout.search.batch_size = 64
    c.eval.search.batch_size = 64
    return c
