"""The RLEF loop: rollouts -> advantages -> PPO epochs over minibatches -> weight sync.

Round i (``rl.iterations`` rounds):

1. **Rollouts** with the current policy (the sampler holds its weights): the next
   ``problems_per_iteration`` train problems of a shuffled order (the *rollout cursor*
   walks it, wrapping around), ``episodes_per_problem`` episodes each, one candidate per
   turn, up to ``max_turns`` turns, RLEF's feedback; appended to
   ``WORKDIR/rollouts/iter_XXXX.jsonl`` by `rollout.run_search` (a killed round resumes its
   finished episodes).
2. **Rows and scores**: `episodes.build_rows` (exact sampled ids), then log π_old, log π_ref
   and V of every row in one compiled pass.
3. **Advantages**: RLEF's rewards (minus β·k1 per turn with ``kl="k1"``); ``ppo``:
   `turn_advantages` with the value model; ``grpo`` / ``rloo``: `group_advantages` of the
   episode returns within each problem's episodes, the same for every turn.
4. **Updates**: ``epochs`` passes over the rows in shuffled minibatches; the policy step
   (after ``value_warmup_iterations`` rounds) and, for ``ppo``, the value step.
5. **Sync** the new policy into the sampler; checkpoint (orbax: policy, value, their
   optimizer states, the reference, the PRNG keys; with the round, the cursor and the update
   count as JSON). The minibatch order is a function of (seed, round), so a run killed at any
   moment resumes from its last round and logs the same losses.

Logs: ``metrics.jsonl`` (one record per minibatch update: losses, KL, entropy, clip
fraction, trainer-vs-sampler log-prob gap), ``rounds.jsonl`` (one per round: reward, pass
rate, lengths, KL, timings) and TensorBoard (both), a progress bar over rounds.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from mucode_jax import multihost, rollout
from mucode_jax.algorithms.rl import episodes as E
from mucode_jax.algorithms.rl.advantages import group_advantages, turn_advantages
from mucode_jax.algorithms.rl.trainer import RLTrainer
from mucode_jax.training.checkpoint import Checkpointer
from mucode_jax.training.writers import MetricsLog, Progress, TensorBoardWriter
from mucode_jax.types import Problem

log = logging.getLogger("mucode_jax.rlef")


class _Null:
    """A writer that writes nothing (processes other than 0)."""

    def write(self, *args, **kwargs):
        pass

    scalars = write

    def close(self):
        pass


def round_problems(problems: Sequence[Problem], cursor: int, n: int, seed: int) -> list[Problem]:
    """``n`` problems from position ``cursor`` of a seeded shuffled order (wrapping; each
    problem at most once per round)."""
    order = list(problems)
    random.Random(f"rlef-order/{seed}").shuffle(order)
    n = min(n, len(order))
    return [order[(cursor + j) % len(order)] for j in range(n)]


def prepare(
    cfg: ml_collections.ConfigDict, rows: E.EpisodeRows, scores: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Advantages, returns and the full row data of one round (host numpy)."""
    w = rows.rows["weights"]
    row_k1 = np.sum(w * (scores["old_logp"] - scores["ref_logp"]), axis=1)
    rewards = rows.turn_rewards
    if cfg.kl == "k1":
        rewards = E.apply_kl_to_rewards(rows, row_k1, cfg.kl_coef)
    if cfg.algorithm == "ppo":
        values = E.per_turn(rows, scores["values"])
        adv, ret = turn_advantages(rewards, values, rows.turn_mask, gamma=cfg.gamma, lam=cfg.lam)
        adv, ret = np.asarray(adv), np.asarray(ret)
        row_adv, row_ret = adv[rows.episode, rows.turn], ret[rows.episode, rows.turn]
    else:
        episode_adv = group_advantages(rewards.sum(1), rows.groups, cfg.algorithm)
        row_adv = episode_adv[rows.episode]
        row_ret = np.zeros_like(row_adv)
    if cfg.normalize_advantages and len(row_adv) > 1:
        row_adv = (row_adv - row_adv.mean()) / (row_adv.std() + 1e-6)
    data = dict(rows.rows)
    data["advantages"] = (w * row_adv[:, None]).astype(np.float32)
    data["old_logp"] = scores["old_logp"].astype(np.float32)
    data["ref_logp"] = scores["ref_logp"].astype(np.float32)
    data["returns"] = row_ret.astype(np.float32)
    data["old_values"] = scores["values"].astype(np.float32)
    data["turn_weight"] = np.ones(rows.num_rows, np.float32)
    tokens = max(float(w.sum()), 1.0)
    stats = {
        "reward": float(rows.turn_rewards.sum(1).mean()) if len(rows.groups) else 0.0,
        "pass_rate": float(rows.success.mean()) if len(rows.groups) else 0.0,
        "pass_turn1": float(
            np.mean([r == 1.0 for r in rows.turn_rewards[:, 0]]) if len(rows.groups) else 0.0
        ),
        "kl_k1_rollout": float(np.sum(w * (scores["old_logp"] - scores["ref_logp"])) / tokens),
        "gap_sampler_rollout": float(
            np.sum(w * np.abs(scores["old_logp"] - rows.rows["sampler_logp"])) / tokens
        ),
        "advantage_mean": float(row_adv.mean()) if len(row_adv) else 0.0,
        "value_mean": float(scores["values"].mean()) if len(row_adv) else 0.0,
        **{f"rows_{k}": float(v) for k, v in rows.stats.items()},
    }
    return data, stats


def summarize_update(m: dict[str, Any]) -> dict[str, float]:
    """Device sums of one minibatch update -> means."""
    out: dict[str, float] = {}
    if "policy" in m:
        p = {k: float(v) for k, v in m["policy"].items()}
        n = max(p["count"], 1.0)
        out.update(
            loss=p["loss"],
            pg=p["pg"] / n,
            kl_k1=p["kl_k1"] / n,
            kl_k3=p["kl_k3"] / n,
            entropy=p["entropy"] / n,
            clipfrac=p["clipfrac"] / n,
            ratio=p["ratio"] / n,
            gap_sampler=p["gap_sampler"] / n,
            gap_old=p["gap_old"] / n,
            grad_norm=p["grad_norm"],
            policy_tokens=p["count"],
        )
    if "value" in m:
        v = {k: float(x) for k, x in m["value"].items()}
        n = max(v["count"], 1.0)
        out.update(
            value_loss=v["loss"],
            value_mean=v["value"] / n,
            value_abs_err=v["value_abs_err"] / n,
            value_grad_norm=v["grad_norm"],
        )
    return out


def train(
    cfg: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    trainer: RLTrainer,
    policy: rollout.ModelPolicy,
    executor: rollout.Executor,
    problems: Sequence[Problem],
    seed: int = 0,
) -> dict[str, Any]:
    """Runs (or resumes) every round in ``workdir``; returns the last round's record."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpointer(workdir / "checkpoints", keep=cfg.checkpoint_keep, async_save=False)
    start, cursor, updates = 0, 0, 0
    latest = ckpt.latest_step()
    if latest is not None:
        trainer.state, data = ckpt.restore(latest, trainer.abstract_state())
        start, cursor, updates = int(data["iteration"]), int(data["cursor"]), int(data["updates"])
        log.info("resumed %s at round %d", workdir, start)
    trainer.sync(policy.sampler)
    # Every process computes the same records; process 0 writes them.
    main = multihost.is_main()
    metrics = MetricsLog(workdir / "metrics.jsonl", resume_step=updates) if main else _Null()
    rounds = MetricsLog(workdir / "rounds.jsonl", resume_step=start) if main else _Null()
    tb = TensorBoardWriter(workdir / "tensorboard", resume_step=updates) if main else _Null()
    bar = Progress(
        cfg.iterations, start, enabled=bool(cfg.progress) and main, desc=f"rlef {cfg.algorithm}"
    )
    feedback = cfg.feedback.to_dict()
    last: dict[str, Any] = {}
    try:
        for it in range(start, int(cfg.iterations)):
            t0 = time.perf_counter()
            probs = round_problems(problems, cursor, cfg.problems_per_iteration, seed)
            search = rollout.SearchConfig(
                num_searches=int(cfg.episodes_per_problem),
                num_candidates=1,
                max_turns=int(cfg.max_turns),
                feedback=feedback,
                batch_size=int(cfg.get("rollout_batch_size", 64)),
                seed=seed * 100_003 + it,
            )
            trajs = rollout.run_search(
                probs, policy, executor, search, workdir / "rollouts" / f"iter_{it:04d}.jsonl"
            )
            pos = {p.id: j for j, p in enumerate(probs)}
            trajs = sorted(trajs, key=lambda t: (pos[t.problem_id], t.search))
            t1 = time.perf_counter()
            rows = E.build_rows(
                trajs,
                max_length=int(cfg.max_length),
                max_turns=int(cfg.max_turns),
                rewards=cfg.rewards.to_dict(),
            )
            scores = trainer.score(rows.rows)
            data, stats = prepare(cfg, rows, scores)
            rng = np.random.default_rng([seed, it])
            train_policy = it >= int(cfg.value_warmup_iterations)
            train_value = cfg.algorithm == "ppo"
            device_metrics = trainer.update(
                data,
                rows.num_rows,
                rng,
                epochs=int(cfg.epochs),
                train_policy=train_policy,
                train_value=train_value,
            )
            trainer.sync(policy.sampler)
            host = jax.device_get(device_metrics)  # replicated scalars
            t2 = time.perf_counter()
            per_update = [summarize_update(m) for m in host]
            for rec in per_update:
                updates += 1
                rec = {"round": it + 1, **rec}
                metrics.write(updates, rec)
                tb.scalars(updates, rec)
            record = {
                **stats,
                "updates": len(per_update),
                "rollout_s": t1 - t0,
                "train_s": t2 - t1,
            }
            if per_update:
                for k in ("loss", "kl_k3", "entropy", "gap_sampler", "value_loss"):
                    vals = [r[k] for r in per_update if k in r]
                    if vals:
                        record[f"{k}_mean"] = float(np.mean(vals))
            rounds.write(it + 1, record)
            tb.scalars(updates, {f"round/{k}": v for k, v in record.items()})
            cursor += len(probs)
            ckpt.save(
                it + 1, trainer.state, {"iteration": it + 1, "cursor": cursor, "updates": updates}
            )
            bar.update(
                1,
                reward=record["reward"],
                pass_rate=record["pass_rate"],
                kl=record["kl_k1_rollout"],
                len=record["rows_completion_tokens_mean"],
            )
            last = {"round": it + 1, **record}
        ckpt.wait()
    finally:
        bar.close()
        ckpt.close()
        metrics.close()
        rounds.close()
        tb.close()
    return last
