"""μCode on MBPP with Llama-3.2-1B-Instruct: the paper's main setting, official hyperparameters.

  python launch/mucode.py --config configs/mucode_mbpp_llama3p2_1b.py \
      --config.base=/ckpt/Llama-3.2-1B-Instruct --config.tokenizer=/ckpt/Llama-3.2-1B-Instruct \
      --workdir /runs/mucode_mbpp_1b

Official μCode settings: N = 15 rollouts per problem at temperature 0.7 / top-p 1.0, 3 turns, 1000 new tokens;
verifier (Bradley–Terry, λ = 1e-3) from the base, lr 1e-6, 2 epochs, batch 64, max length
2048, AdamW eps 1e-5, linear decay, no warm-up; generator SFT from the base, lr 5e-7, 2 epochs,
16 examples per optimizer step, max length 8192; 2 iterations; evaluation: multi-turn BoN with N = 5
candidates per turn under LV / PT / PT+LV / random, 10 repeated searches.

Mesh: one 8-GPU host (fsdp 8) by default; on a TPU slice or a 4-GPU host ``("fsdp", -1)``
takes every device, so the same file runs on both. ``tests/test_real_configs.py`` builds the
model, its shardings and both train steps ahead of time on 8 fake devices.

The protocol is ``official`` (``mucode_jax/algorithms/protocol.py``; the table in
``docs/mucode.md``): y* by R + 100·label, 16 examples per SFT optimizer step without packing,
``<|eot_id|>`` not trained, the official verifier recipe and evaluation schedule. Every
evaluated model is evaluated on MBPP test, HumanEval and MBPP+ (``config.data.tests``): BoN,
greedy multi-turn Pass@3 and pass@k over 15 sampled trajectories. ``--config.protocol=paper``
runs the paper's R-only relabeling with our earlier choices.
"""

import ml_collections

from mucode_jax.algorithms.config import mucode_defaults
from mucode_jax.training.config import sft_defaults, verifier_defaults

MESH = (("data", 1), ("fsdp", -1), ("tensor", 1))


def _train(c: ml_collections.ConfigDict, preset: str, *, micro_batch: int):
    c.model.preset = preset  # the checkpoint's architecture (ahead-of-time checks)
    c.model.dtype = "bfloat16"
    c.model.param_dtype = "float32"
    c.model.remat = True
    c.grad_accum = c.batch_size // micro_batch
    c.mesh = MESH
    c.checkpoint.every_steps = 200
    c.checkpoint.keep = 1
    c.log_every = 10
    return c


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    del arg
    preset = "llama3.2-1b"
    c = mucode_defaults()
    c.mesh = MESH
    c.baselines = ("multi_star", "multi_star2", "mucode_r", "rft_lv")

    c.sampling.max_prompt_length = 6144  # 3 turns of prompt + code + feedback
    c.sampling.max_batch_size = 256
    c.rollout.search.batch_size = 256

    # Verifier: official lr 1e-6, 2 epochs, batch 64, max length 2048, eps 1e-5, linear, no warm-up.
    c.verifier = _train(verifier_defaults(), preset, micro_batch=8)
    c.verifier.data.pairs_per_problem = 32
    c.verifier.data.label_non_final_negative = True

    # Generator: official lr 5e-7, 2 epochs, 16 examples per step (unpacked), max length 8192.
    c.sft = _train(sft_defaults(), preset, micro_batch=8)

    c.eval.modes = ("lv", "pt", "pt_lv", "random")
    c.eval.search.num_searches = 10
    c.eval.search.batch_size = 256
    return c
