"""The built-in RLEF demo: PPO with a turn-level value on the toy task family, on a CPU.

  python launch/rlef.py --config configs/rlef_demo.py --workdir workdir/rlef_demo

Starts from the μCode demo's warm start (`configs/demo.py`: the same stage, data and test
set; pass the μCode demo's --workdir to reuse its warm start instead of retraining it), runs
RLEF rounds (rollouts with RLEF's feedback, rewards +1 / -1 / -0.2, PPO epochs, weight sync),
then evaluates the base and the RL policy by multi-turn BoN on the demo's 200 test problems.
``--config.rl.algorithm=rloo`` (or grpo) runs the critic-free control on the same budget;
``--config.rl.controls='("rloo",)'`` runs both. ``rlef_demo.py:ci`` is the test variant.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import demo  # noqa: E402

from mucode_jax.algorithms.rl.config import rl_defaults  # noqa: E402


def get_config(arg: str = ""):
    c = demo.get_config("ci" if arg == "ci" else "")
    if arg not in ("", "ci"):
        raise ValueError(f"Unknown rlef demo config arg {arg!r}; use '' or 'ci'.")
    c.baselines = ()
    c.eval.modes = ("random", "pt")
    r = rl_defaults()
    r.iterations = 16
    r.problems_per_iteration = 32
    r.episodes_per_problem = 4
    # The toy environment's own feedback (the μCode demo's rollouts and every evaluation use
    # it): the shared warm start learned its conversations on it, and RLEF's template is
    # mostly outside the fixed toy vocabulary (spelled out letter by letter, never seen), so
    # with it turns 2-3 are noise and training would not match the evaluation's environment.
    # The real configs keep RLEF's template (rl_defaults).
    r.feedback = c.rollout.search.feedback.copy_and_resolve_references()
    # Toy rows are short: 3 turns of at most 48 tokens with their feedback stay under 256
    # (longer rows are dropped and counted in rounds.jsonl's rows_dropped_long).
    r.max_length = 256
    r.minibatch_size = 32
    r.epochs = 2
    r.kl = "k1"
    r.kl_coef = 0.02
    # Measured on this demo (docs/rlef.md): 2e-4 learns fastest and then collapses (k3 KL to
    # the reference in the hundreds in round 15); 5e-5 barely moves; 1e-4 with whitened
    # advantages learns to act on the feedback.
    r.policy_optim.lr = 1e-4
    r.normalize_advantages = True
    r.value_optim.lr = 1e-3
    r.value_warmup_iterations = 1
    if arg == "ci":
        r.iterations = 2
        r.problems_per_iteration = 4
        r.episodes_per_problem = 2
        r.minibatch_size = 8
        r.epochs = 1
        r.value_warmup_iterations = 0
        r.progress = False
    c.rl = r
    return c
