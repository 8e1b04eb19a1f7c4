"""Generator SFT launcher (μCode step 5). Library code does the work; this reads flags.

  python launch/train_sft.py --config configs/sft_tiny.py --workdir /tmp/sft_tiny

Re-running with the same --workdir resumes from its latest checkpoint.
"""

import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

# Config files import mucode_jax: make the checkout importable without an install.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Checkpoints, metrics.jsonl, TensorBoard and the HF export."
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    from mucode_jax import compile_cache, errors, sharding

    sharding.maybe_initialize_distributed()
    compile_cache.enable()
    from mucode_jax.training import inputs
    from mucode_jax.training.sft import train_sft

    inputs.quiet_checkpoint_logs()
    config = _CONFIG.value
    logging.info("config:\n%s", config)
    try:
        errors.check_workdir(_WORKDIR.value)
        tokenizer = inputs.tokenizer_from_config(config)
        conversations = inputs.sft_conversations_from_config(config)
        result = train_sft(config, conversations, _WORKDIR.value, tokenizer=tokenizer)
    except errors.USER_ERRORS as e:  # a user mistake: one sentence
        sys.exit(f"train_sft: {e}")
    logging.info(
        "done: %d steps, last %s, export %s", result.num_steps, result.last_metrics, result.hf_path
    )


if __name__ == "__main__":
    from mucode_jax import cli

    app.run(main, flags_parser=cli.parse_flags)
