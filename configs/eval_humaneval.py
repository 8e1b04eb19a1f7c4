"""Multi-turn Best-of-N on HumanEval (164 problems; one public example per problem).

N = 5 candidates per turn, T = 3 turns, temperature 0.7; selection by public tests and at
random (add ``lv`` / ``pt_lv`` with ``--config.verifier=/path/to/verifier_hf``). The
tokenizer is read from the checkpoint directory; the data from ../shared/data when present,
else from the HF hub.

  python launch/evaluate.py --config configs/eval_humaneval.py \
      --config.checkpoint /path/to/generator_hf --workdir /tmp/eval_humaneval
"""

from mucode_jax.evaluation import default_dataset_path, eval_defaults


def get_config():
    c = eval_defaults()
    c.dataset = "humaneval"
    c.dataset_path = default_dataset_path("humaneval")
    c.split = ""
    c.modes = "pt,random"
    c.num_candidates = 5
    c.max_turns = 3
    c.temperature = 0.7
    c.max_new_tokens = 1024
    c.max_prompt_length = 4096
    return c
