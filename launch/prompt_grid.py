"""Zheng et al.'s reasoning × instruction prompt grid and multi-turn feedback / CoT-retry study.

  python launch/prompt_grid.py --config configs/prompt_grid_toy.py --workdir workdir/prompt_grid_toy

Results: WORKDIR/grid.json (one entry per cell under ``cells``), grid.md (the tables),
pass_n_at_k.png. Re-running the same command skips every finished cell.
"""

import sys
import time
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_CONFIG = config_flags.DEFINE_config_file("config", None, "Grid config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where grid.json, tables and cells go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    from mucode_jax import compile_cache

    compile_cache.enable()
    from mucode_jax import multihost, prompt_grid
    from mucode_jax.training import inputs

    if multihost.wants_distributed():
        sys.exit(
            "prompt_grid: The prompt grid runs on one process (the environment describes a "
            "multi-process job); start it once, on one host, without JAX_COORDINATOR_ADDRESS, "
            "SLURM or MPI tasks: it uses every device of that host."
        )
    inputs.quiet_checkpoint_logs()
    start = time.monotonic()
    try:
        grid = prompt_grid.run(_CONFIG.value, _WORKDIR.value)
    except ValueError as e:  # a user-facing mistake (config, data): one sentence, no trace
        sys.exit(f"prompt_grid: {e}")
    print()
    print(prompt_grid.grid_tables(grid))
    print(f"grid: {Path(_WORKDIR.value) / 'grid.json'} ({time.monotonic() - start:.0f} s)")


if __name__ == "__main__":
    from mucode_jax import cli

    app.run(main, flags_parser=cli.parse_flags)
