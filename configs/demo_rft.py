"""The μCode demo with Zheng et al.'s multi-turn RFT as one more row (data mode ``zheng_rft``).

  python launch/mucode.py --config configs/demo_rft.py --workdir workdir/demo
  python launch/mucode.py --config configs/demo_rft.py:ci --workdir /tmp/demo_rft_ci  # quick

Same as `configs/demo.py` (run in the same workdir, it reuses every finished demo stage) plus
the ``zheng_rft`` mode: 8 CoT-retry trajectories of up to 3 turns per train problem from the
warm start (T = 1.0, top-p 0.95), the correct multi-turn ones MinHash-LSH de-duplicated to at
most 50 per problem (single-turn successes kept too: see below), CoT prompts stripped, SFT from the warm start on every turn with the
demo generator's optimiser (lr 1e-3: the paper's 2e-6 is for an 8B model and does not move a
0.92M one), cosine, 10 warm-up steps, annealing to 10 % of the peak.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import demo  # noqa: E402


def get_config(arg: str = ""):
    c = demo.get_config(arg)  # "ci": the shrunken demo (a quick check that the mode runs)
    c.baselines = ("multi_star", "zheng_rft")
    r = c.zheng_rft
    r.search.num_searches = 8
    r.search.feedback = c.rollout.search.feedback
    r.optim.lr = c.sft.optim.lr  # 1e-3 (cosine, 10 warm-up steps, to 10 % as the paper)
    # The demo's warm start has seen feedback but does not act on it (4 of 877 correct CoT-retry
    # trajectories were multi-turn in docs/zheng.md's run), so the paper's multi-turn-only
    # filter keeps next to nothing: keep the single-turn successes too. (This changes
    # config.relabel, so in a demo workdir the other modes' data stages rerun.)
    c.relabel.rft_multi_turn_only = False
    return c
