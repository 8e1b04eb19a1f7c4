"""RLEF (PPO with a turn-level value, or the GRPO / RLOO control) end to end.

  python launch/rlef.py --config configs/rlef_demo.py --workdir workdir/rlef_demo

The base stage is the μCode driver's (the demo's warm start: pass the μCode demo's
--workdir to reuse it). Every stage is cached under WORKDIR/artifacts; the RL stage resumes
from its last round after a kill. Results: WORKDIR/summary.json, summary.md,
per_turn_success.png; the RL curves in WORKDIR/artifacts/rlef_*/{metrics,rounds}.jsonl and
TensorBoard.
"""

import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_CONFIG = config_flags.DEFINE_config_file("config", None, "RLEF config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where artifacts and the summary go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    from mucode_jax import compile_cache, sharding

    sharding.maybe_initialize_distributed()
    compile_cache.enable()
    from mucode_jax import multihost, report
    from mucode_jax.algorithms.rl import driver
    from mucode_jax.training import inputs

    inputs.quiet_checkpoint_logs()
    logging.info("config:\n%s", _CONFIG.value)
    try:
        summary = driver.run(_CONFIG.value, _WORKDIR.value)
    except (ValueError, multihost.MultihostError) as e:  # a user-facing mistake: one sentence
        sys.exit(f"rlef: {e}")
    if not multihost.is_main():
        return  # every process holds the same summary; process 0 prints it
    print()
    print(report.summary_table(summary["models"]))
    print(f"summary: {Path(_WORKDIR.value) / 'summary.json'}")


if __name__ == "__main__":
    from mucode_jax import cli

    app.run(main, flags_parser=cli.parse_flags)
