"""Tiny generator SFT on the built-in toy trajectories: about a minute on 2 CPU cores.

A 2-layer Llama (random init) learns the toy task family's multi-turn conversations
with μCode's prefix expansion, loss on the final assistant turn, 8 examples per optimizer
step packed into rows of 256 tokens (1 or 2 micro-batches of 4 rows, as the step needs),
cosine schedule with warm-up, async checkpoints.

  python launch/train_sft.py --config configs/sft_tiny.py --workdir /tmp/sft_tiny

Override any field from the command line, e.g. ``--config.data.pack=False``.
"""

from mucode_jax.training.config import sft_defaults


def get_config():
    c = sft_defaults()
    c.tokenizer = "toy"
    c.tokenizer_vocab_size = 1024
    c.model.preset = "tiny"
    c.data.source = "toy"
    c.data.num_problems = 160
    c.data.max_length = 256
    c.data.pack = True  # layout only: each step still trains on batch_size examples
    c.data.train_eos = True  # a model from scratch must learn to stop
    c.batch_size = 8
    c.grad_accum = 2
    c.num_epochs = 3
    c.optim.lr = 3e-3
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 3
    c.optim.final_lr_fraction = 0.1
    c.checkpoint.every_steps = 5
    c.checkpoint.keep = 2
    return c
