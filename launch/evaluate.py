"""Multi-turn Best-of-N evaluation launcher. Library code does the work; this reads flags.

  python launch/evaluate.py --config configs/eval_mbpp.py \
      --config.checkpoint /path/to/hf_checkpoint --workdir /tmp/eval_mbpp

Writes WORKDIR/search_<mode>.jsonl (one line per finished search), WORKDIR/metrics.json
(BoN@t with bootstrap intervals, pass@k, per-turn curves) and WORKDIR/per_turn_success.png.
Re-running with the same --workdir resumes: finished searches are kept and skipped.
"""

import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

# Config files import mucode_jax: make the checkout importable without an install.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Evaluation config file (configs/eval_*.py).", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Search JSONL files, metrics.json and per_turn_success.png."
)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    from mucode_jax import compile_cache, sharding

    sharding.maybe_initialize_distributed()
    compile_cache.enable()
    from mucode_jax import errors
    from mucode_jax.evaluation import evaluate_from_config

    config = _CONFIG.value
    logging.info("config:\n%s", config)
    try:
        errors.check_workdir(_WORKDIR.value)
        metrics = evaluate_from_config(config, _WORKDIR.value)
    except errors.USER_ERRORS as e:
        sys.exit(f"error: {e}")
    for mode, m in metrics["modes"].items():
        bon = ", ".join(f"BoN@{b['t']}={100 * b['mean']:.1f}%" for b in m["bon"])
        logging.info("%s: %s", mode, bon)
    logging.info("wrote %s", Path(_WORKDIR.value) / "metrics.json")


if __name__ == "__main__":
    from mucode_jax import cli

    app.run(main, flags_parser=cli.parse_flags)
