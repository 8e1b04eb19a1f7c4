"""μCode expert iteration (and its baselines) end to end.

  python launch/mucode.py --config configs/demo.py --workdir workdir/demo

Every stage is cached under WORKDIR/artifacts by a hash of its inputs: re-running the same
command resumes at the first unfinished stage. Results: WORKDIR/summary.json, summary.md,
per_turn_success.png.
"""

import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_CONFIG = config_flags.DEFINE_config_file("config", None, "Driver config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where artifacts and the summary go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    from mucode_jax import compile_cache, sharding

    sharding.maybe_initialize_distributed()
    compile_cache.enable()
    from mucode_jax import errors, multihost, report
    from mucode_jax.algorithms import mucode
    from mucode_jax.training import inputs

    inputs.quiet_checkpoint_logs()
    logging.info("config:\n%s", _CONFIG.value)
    try:
        errors.check_workdir(_WORKDIR.value)
        summary = mucode.run(_CONFIG.value, _WORKDIR.value)
    except errors.USER_ERRORS as e:  # a user-facing mistake: one sentence
        sys.exit(f"mucode: {e}")
    if not multihost.is_main():
        return  # every process holds the same summary; process 0 prints it
    print()
    print(report.summary_table(summary["models"]))
    print(f"summary: {Path(_WORKDIR.value) / 'summary.json'}")


if __name__ == "__main__":
    from mucode_jax import cli

    app.run(main, flags_parser=cli.parse_flags)
