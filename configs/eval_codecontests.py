"""Multi-turn Best-of-N on CodeContests (stdin/stdout programs; examples are the public tests).

Locally the 100-problem training sample in ../shared/data is used; offline there is no test
split, so for the paper's numbers point ``--config.dataset_path=""`` and
``--config.split=test`` at the hub copy. Longer programs and feedback than MBPP: 2048 new
tokens and 8192 prompt tokens.

  python launch/evaluate.py --config configs/eval_codecontests.py \
      --config.checkpoint /path/to/generator_hf --workdir /tmp/eval_codecontests
"""

from mucode_jax.evaluation import default_dataset_path, eval_defaults


def get_config():
    c = eval_defaults()
    c.dataset = "codecontests"
    c.dataset_path = default_dataset_path("codecontests")
    c.split = ""
    c.modes = "pt,random"
    c.num_candidates = 5
    c.max_turns = 3
    c.temperature = 0.7
    c.max_new_tokens = 2048
    c.max_prompt_length = 8192
    c.batch_size = 32
    c.max_batch_size = 32
    return c
