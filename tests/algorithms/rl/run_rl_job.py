"""A small RLEF loop (random tiny Llama, toy problems, real sampler and executor) in WORKDIR;
the kill-and-resume test runs it, SIGKILLs it, and runs it again; the multi-process test
runs it as 1 process x 8 devices and as 2 processes x 4 (`JAX_COORDINATOR_ADDRESS` etc.)."""

import sys
from pathlib import Path

import ml_collections
from flax import nnx

from mucode_jax.algorithms import mucode
from mucode_jax.algorithms.rl import loop
from mucode_jax.algorithms.rl.config import rl_defaults
from mucode_jax.algorithms.rl.driver import load_models
from mucode_jax.algorithms.rl.trainer import RLTrainer
from mucode_jax.data import tokenizer as tk
from mucode_jax.data import toy
from mucode_jax.execution import Executor
from mucode_jax.inference import Models
from mucode_jax.models.hf import save_pretrained
from mucode_jax.models.llama import Llama, LlamaConfig
from mucode_jax.training.inputs import cache_dir


def main(workdir: str, iterations: int, minibatch: int = 4):
    from mucode_jax import multihost, sharding

    sharding.maybe_initialize_distributed()
    workdir = Path(workdir)
    tokenizer = tk.build_tokenizer(toy.toy_corpus(), 1024, cache_dir=cache_dir() / "tokenizers")
    base = workdir / "base"
    if not (base / "config.json").is_file():
        eos = tk.eos_token_ids(tokenizer)
        mc = LlamaConfig.tiny(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            head_dim=8,
            eos_token_id=eos[0] if eos else None,
        )
        save_pretrained(Llama(mc, rngs=nnx.Rngs(0)), base)  # process 0 writes
    multihost.barrier("base written")
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.mesh = (("data", 1), ("fsdp", -1), ("tensor", 1))
    r = rl_defaults()
    r.iterations = iterations
    r.problems_per_iteration = 3
    r.episodes_per_problem = 2
    r.max_length = 272
    r.minibatch_size = minibatch  # a multiple of the device count
    r.epochs = 1
    r.policy_optim.lr = 1e-3
    r.value_optim.lr = 1e-3
    r.progress = False
    c.rl = r
    problems = mucode.toy_problem_set("train", 6, 0, ("affine",))
    ckpts = workdir / "rl" / "checkpoints"
    resuming = ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir())
    print("RESUME" if resuming else "FRESH", flush=True)
    policy_model, value_model, mesh, rules = load_models(c, base)
    trainer = RLTrainer(r, policy_model, value_model, mesh, rules, seed=0)
    with Executor(workers=1) as executor:
        models = Models(
            tokenizer,
            dtype="float32",
            max_new_tokens=12,
            max_prompt_length=256,
            max_batch_size=8,
            verifier_max_length=64,
            mesh=mesh,
            rules=rules,
        )
        policy = models.policy(base, temperature=1.0)
        loop.train(
            r,
            workdir / "rl",
            trainer=trainer,
            policy=policy,
            executor=executor,
            problems=problems,
            seed=0,
        )
    print("DONE")


if __name__ == "__main__":
    main(sys.argv[1], *map(int, sys.argv[2:]))
