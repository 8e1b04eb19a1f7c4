"""The RLEF job's config section (``config.rl``): defaults and the up-front check.

An RLEF config is a μCode driver config (`algorithms.config.mucode_defaults`: data, warm
start or base, sampling, evaluation, executor, mesh) plus ``config.rl`` from `rl_defaults`,
so the RL job and the μCode job share the base stage, the evaluation and the summary.
"""

from __future__ import annotations

import ml_collections

from mucode_jax import prompts
from mucode_jax.algorithms.rl.losses import KL_MODES
from mucode_jax.training.config import sft_defaults

ALGORITHMS = ("ppo", "grpo", "rloo")


def _optim(lr: float) -> ml_collections.ConfigDict:
    o = sft_defaults().optim.copy_and_resolve_references()
    o.lr = lr
    o.schedule = "constant"
    o.clip_norm = 1.0
    return o


def rl_defaults() -> ml_collections.ConfigDict:
    """RLEF's settings where the paper states them (3 turns, RLEF feedback, +1/-1/-0.2
    rewards, no discount, KL to the initial policy), common PPO values elsewhere."""
    c = ml_collections.ConfigDict()
    c.algorithm = "ppo"  # ppo (turn-level value) | grpo | rloo (critic-free controls)
    c.controls = ()  # further algorithms run from the same base on the same budget
    c.iterations = 10  # rollout -> update rounds
    c.problems_per_iteration = 32  # train problems per round (a cursor walks a shuffled order)
    c.episodes_per_problem = 4  # G: episodes per problem (the GRPO / RLOO group)
    c.max_turns = 3
    c.temperature = 1.0  # rollouts sample the policy itself (ratios need it)
    c.top_p = 1.0
    c.feedback = ml_collections.ConfigDict(dict(body="rlef", wrapper="rlef", max_chars=2000))
    c.rewards = ml_collections.ConfigDict(dict(correct=1.0, incorrect=-1.0, invalid=-0.2))
    c.gamma = 1.0
    c.lam = 1.0
    c.kl = "k1"  # k1: β·k1 in the turn rewards | k3: β·k3 in the loss | none
    c.kl_coef = 0.05
    c.clip_eps = 0.2
    c.value_clip = 0.0  # 0: unclipped value loss
    c.normalize_advantages = False  # whiten the advantages of each round's rows
    c.epochs = 2  # PPO epochs over each round's rows
    c.minibatch_size = 16  # rows per optimizer step (global)
    c.grad_accum = 1
    c.max_length = 1024  # tokens per row (prompt + sampled); longer turns are dropped (counted)
    c.value_warmup_iterations = 0  # rounds that train the value model only
    c.policy_optim = _optim(1e-6)
    c.value_optim = _optim(1e-5)
    c.checkpoint_keep = 2
    c.progress = True
    return c


def _fail(msg: str) -> None:
    raise ValueError(msg)


def check_rl_config(c: ml_collections.ConfigDict) -> None:
    """One sentence for the first bad setting of ``config.rl``."""
    if "rl" not in c:
        _fail(
            "The config has no rl section; start it from mucode_jax.algorithms.rl.config.rl_defaults()."
        )
    r = c.rl
    for algo in [r.algorithm, *r.controls]:
        if algo not in ALGORITHMS:
            _fail(f"Unknown rl algorithm {algo!r}; use one of {', '.join(ALGORITHMS)}.")
    if r.kl not in KL_MODES:
        _fail(f"Unknown rl.kl {r.kl!r}; use one of {', '.join(KL_MODES)}.")
    for name in (
        "iterations",
        "problems_per_iteration",
        "episodes_per_problem",
        "max_turns",
        "epochs",
    ):
        if int(r[name]) < 1:
            _fail(f"rl.{name} must be at least 1, got {r[name]}.")
    if r.minibatch_size < 1 or r.grad_accum < 1 or r.minibatch_size % r.grad_accum:
        _fail(
            f"rl.minibatch_size={r.minibatch_size} must be a positive multiple of "
            f"rl.grad_accum={r.grad_accum}."
        )
    if not 0.0 < r.clip_eps < 1.0:
        _fail(f"rl.clip_eps must be in (0, 1), got {r.clip_eps}.")
    if r.max_length < 2:
        _fail(f"rl.max_length must be at least 2, got {r.max_length}.")
    try:
        prompts.Feedback(**r.feedback.to_dict())
    except ValueError as e:
        _fail(f"rl.feedback is invalid: {e}")
    bad = [m for m in c.eval.modes if m in ("lv", "pt_lv")]
    if bad:
        _fail(f"RLEF trains no verifier: drop {bad} from config.eval.modes (use random, pt).")
