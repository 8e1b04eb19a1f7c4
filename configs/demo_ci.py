"""The shrunken demo the driver test runs: 1 iteration, few problems, a minute or two on a CPU.

  python launch/mucode.py --config configs/demo_ci.py --workdir /tmp/mucode_ci

Same machinery as `configs/demo.py` (warm start, rollouts, verifier, scores, relabeling,
generator SFT, evaluation), only smaller; the numbers it prints mean nothing.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import demo  # noqa: E402


def get_config(arg: str = ""):
    del arg
    return demo.get_config("ci")
