"""One RL round's scoring and PPO updates on synthetic episodes, on however many devices
JAX sees; prints ``RESULT {json}`` (the 1-device vs 8-device test runs it twice)."""

import json
import sys

import jax
import numpy as np
from flax import nnx

from mucode_jax import sharding as sh
from mucode_jax.algorithms.rl import episodes as E
from mucode_jax.algorithms.rl import loop
from mucode_jax.algorithms.rl.config import rl_defaults
from mucode_jax.algorithms.rl.trainer import RLTrainer
from mucode_jax.execution.results import ExecResult
from mucode_jax.models.llama import Llama, LlamaConfig
from mucode_jax.training.sft import verifier_from_base
from mucode_jax.types import Candidate, Trajectory, Turn


def trajectories(n=12, vocab=128, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        turns, prompt = [], list(rng.integers(3, vocab, size=rng.integers(4, 10)))
        k = int(rng.integers(1, 4))
        for t in range(k):
            toks = tuple(int(x) for x in rng.integers(3, vocab, size=rng.integers(2, 8)))
            ok = t == k - 1 and rng.random() < 0.5
            res = ExecResult("passed" if ok else "wrong_answer")
            lp = tuple(float(x) for x in -rng.random(len(toks)) * 5)
            c = Candidate("c", None if rng.random() < 0.2 else "x", res, res, toks, lp, lp)
            turns.append(Turn("u", (c,), 0, tuple(int(x) for x in prompt), None))
            prompt = prompt + list(toks) + list(rng.integers(3, vocab, size=3))
        out.append(Trajectory(f"p{i // 3}", "toy", i % 3, 0, tuple(turns)))
    return out


def main(algorithm: str):
    cfg = rl_defaults()
    cfg.algorithm = algorithm
    cfg.kl = "k3" if algorithm == "ppo" else "k1"
    cfg.max_length = 64
    cfg.minibatch_size = 16
    cfg.grad_accum = 2
    cfg.epochs = 2
    cfg.policy_optim.lr = 1e-3
    cfg.value_optim.lr = 1e-3
    mesh = sh.make_mesh({"data": 1, "fsdp": -1, "tensor": 1})
    mc = LlamaConfig.tiny(vocab_size=128)
    policy = Llama(mc, rngs=nnx.Rngs(0))
    value = verifier_from_base(Llama(mc, rngs=nnx.Rngs(0)), seed=0)
    trainer = RLTrainer(cfg, policy, value, mesh, sh.DEFAULT_RULES, seed=0)
    rows = E.build_rows(trajectories(), max_length=cfg.max_length, max_turns=3)
    scores = trainer.score(rows.rows)
    data, stats = loop.prepare(cfg, rows, scores)
    ms = trainer.update(
        data,
        rows.num_rows,
        np.random.default_rng(0),
        epochs=cfg.epochs,
        train_policy=True,
        train_value=algorithm == "ppo",
    )
    recs = [loop.summarize_update(m) for m in jax.device_get(ms)]
    out = {
        "devices": jax.device_count(),
        "values": scores["values"].tolist(),
        "advantage_mean": stats["advantage_mean"],
        "updates": recs,
    }
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
