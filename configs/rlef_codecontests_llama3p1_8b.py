"""RLEF on CodeContests with Llama-3.1-8B-Instruct (the paper's setting: 3 turns, public
tests give RLEF's feedback, private tests the reward, PPO with a turn-level value).

  python launch/rlef.py --config configs/rlef_codecontests_llama3p1_8b.py \
      --config.base=/ckpt/Llama-3.1-8B-Instruct --config.tokenizer=/ckpt/Llama-3.1-8B-Instruct \
      --config.data.train.path=/data/code_contests --config.data.test.path=/data/code_contests \
      --workdir /runs/rlef_cc_8b

Data, sampling, evaluation and the mesh come from `mucode_codecontests_llama3p1_8b.py`
(the same base model and test set as the μCode run). The policy and the value model are
two 8B models (fsdp over every device, rematerialised layers); one 5120-token row per
device per micro-batch on 8 devices. Choices the paper does not state are marked.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ml_collections  # noqa: E402
import mucode_codecontests_llama3p1_8b as mucode_config  # noqa: E402

from mucode_jax.algorithms.rl.config import rl_defaults  # noqa: E402


def get_config(arg: str = ""):
    del arg
    c = mucode_config.get_config()
    c.baselines = ()
    c.eval.modes = ("random", "pt")
    c.eval.search.num_candidates = 1  # RLEF reports 1@3: one sample per turn
    r = rl_defaults()
    r.iterations = 200  # not stated in the paper
    r.problems_per_iteration = 64
    r.episodes_per_problem = 4
    r.max_length = 5120  # 4096 prompt bucket + 1000 new tokens, rounded up
    r.minibatch_size = 64
    r.grad_accum = 8  # 8 rows per micro-batch: one per device on 8 devices
    r.epochs = 1
    r.kl = "k1"
    r.kl_coef = 0.05
    r.policy_optim.lr = 2e-7
    r.value_optim.lr = 1e-6
    r.value_warmup_iterations = 5  # not stated in the paper
    r.model = ml_collections.ConfigDict(dict(dtype="bfloat16", param_dtype="float32", remat=True))
    c.rl = r
    return c
