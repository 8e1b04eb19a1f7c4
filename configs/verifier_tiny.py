"""Tiny verifier training (Bradley–Terry) on the built-in toy samples: about a minute on a CPU.

Samples are every assistant turn of 4 noisy toy trajectories per problem, conditioned on
the first prompt; 32 (correct, incorrect) pairs per problem, one-sided problems dropped,
10 % of problems held out for pairwise accuracy, AUC and calibration.

  python launch/train_verifier.py --config configs/verifier_tiny.py --workdir /tmp/verifier_tiny

Pointwise BCE instead: ``--config.loss=bce``.
"""

from mucode_jax.training.config import verifier_defaults


def get_config():
    c = verifier_defaults()
    c.tokenizer = "toy"
    c.tokenizer_vocab_size = 1024
    c.model.preset = "tiny"
    c.data.source = "toy"
    c.data.num_problems = 40
    c.data.max_length = 128
    c.data.pairs_per_problem = 8
    c.data.eval_fraction = 0.1  # hold out problems to report AUC (the official run holds none)
    c.batch_size = 16
    c.grad_accum = 2
    c.num_epochs = 1
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 2
    c.checkpoint.every_steps = 5
    c.checkpoint.keep = 2
    c.eval_batch_size = 32
    return c
