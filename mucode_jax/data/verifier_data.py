"""Verifier training data: samples from trajectories, (correct, incorrect) pairs, tokens.

μCode step 2. Every turn of every rollout trajectory becomes a *sample*: its selected
program y conditioned only on the first user prompt x (the verifier scores (x, y), not the
history; `prompts.render_verifier_input` renders the pair)::

  {"problem_id": str, "prompt": str, "response": str, "label": 0 | 1, "final": bool,
   "iteration": int}

``label`` is the oracle label of that turn's program. With
``label_non_final_negative`` (the official code's behaviour) a turn that is not the
last of its trajectory counts as incorrect whatever its oracle label. Per problem
(and per iteration, so that aggregating iterations keeps each one's 32 pairs) we
draw ``pairs_per_problem`` (correct, incorrect) pairs uniformly *with replacement*;
problems without both kinds are dropped and counted.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from mucode_jax import prompts
from mucode_jax.types import Trajectory


def verifier_samples_from_trajectories(
    trajectories: Iterable[Trajectory], *, iteration: int = 0
) -> list[dict[str, Any]]:
    """One sample per turn: the first prompt x, the selected program y, its oracle label.

    Args:
      trajectories: rollout trajectories (`mucode_jax.rollout.run_search`).
      iteration: the expert-iteration index stored on each sample.
    """
    out = []
    for traj in trajectories:
        last = len(traj.turns) - 1
        for t, turn in enumerate(traj.turns):
            out.append(
                {
                    "problem_id": traj.problem_id,
                    "prompt": traj.prompt,
                    "response": turn.chosen.completion,
                    "label": int(turn.label),
                    "final": t == last,
                    "iteration": iteration,
                }
            )
    return out


def build_verifier_pairs(
    samples: Iterable[Mapping[str, Any]],
    *,
    pairs_per_problem: int = 32,
    seed: int = 0,
    label_non_final_negative: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Draws (correct, incorrect) pairs per problem, with replacement.

    Args:
      samples: see the module docstring (``final`` defaults to True, ``iteration`` to 0).
      pairs_per_problem: pairs per (iteration, problem) (official: 32).
      seed: the draw's seed (deterministic for the same samples in the same order).
      label_non_final_negative: treat non-final turns as incorrect (official code).

    Returns:
      ``(pairs, stats)``: pairs are ``{"problem_id", "prompt", "chosen", "rejected",
      "iteration"}`` (responses as text); stats count ``problems``, ``dropped_one_sided``,
      ``pairs``.
    """
    groups: dict[tuple[int, str], dict[str, Any]] = {}
    for s in samples:
        key = (int(s.get("iteration", 0)), str(s["problem_id"]))
        g = groups.setdefault(key, {"prompt": s["prompt"], "pos": [], "neg": []})
        label = int(bool(s["label"]))
        if label_non_final_negative and not s.get("final", True):
            label = 0
        g["pos" if label else "neg"].append(s["response"])
    rng = np.random.default_rng(seed)
    pairs: list[dict[str, Any]] = []
    stats = collections.Counter(problems=len(groups), dropped_one_sided=0, pairs=0)
    for (iteration, pid), g in sorted(groups.items()):
        if not g["pos"] or not g["neg"]:
            stats["dropped_one_sided"] += 1
            continue
        i = rng.integers(0, len(g["pos"]), pairs_per_problem)
        j = rng.integers(0, len(g["neg"]), pairs_per_problem)
        for a, b in zip(i, j):
            pairs.append(
                {
                    "problem_id": pid,
                    "prompt": g["prompt"],
                    "chosen": g["pos"][a],
                    "rejected": g["neg"][b],
                    "iteration": iteration,
                }
            )
        stats["pairs"] += pairs_per_problem
    return pairs, dict(stats)


def aggregate_verifier_pairs(*pair_lists: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The training set of iteration i: the pairs of iterations 0..i, concatenated."""
    return [dict(p) for pairs in pair_lists for p in pairs]


def tokenize_verifier_pairs(
    pairs: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    *,
    max_length: int | None = None,
    overflow: str = "drop",
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Renders each side as ``[user: prompt, assistant: response]`` with the chat template.

    Args:
      pairs: from `build_verifier_pairs`.
      tokenizer: a Hugging Face tokenizer with a chat template.
      max_length: the longest rendering kept; None for no limit.
      overflow: ``"drop"`` a pair with a longer side (as TRL's reward trainer filters), or
        ``"truncate"`` it to its first ``max_length`` tokens (HF tokenizer truncation).

    Returns:
      ``(tokenized, stats)``: each ``{"chosen": int32 [n], "rejected": int32 [m],
      "problem_id"}``; stats count ``pairs``, ``dropped_too_long``, ``truncated``.
    """
    if overflow not in ("drop", "truncate"):
        raise ValueError(f"overflow must be 'drop' or 'truncate', got {overflow!r}.")
    cache: dict[tuple[str, str], np.ndarray] = {}

    def ids(prompt: str, response: str) -> np.ndarray:
        key = (prompt, response)
        if key not in cache:
            cache[key] = np.asarray(prompts.render_verifier_input(tokenizer, *key), np.int32)
        return cache[key]

    out = []
    stats = collections.Counter(pairs=0, dropped_too_long=0, truncated=0)
    for p in pairs:
        a, b = ids(p["prompt"], p["chosen"]), ids(p["prompt"], p["rejected"])
        if max_length is not None and max(len(a), len(b)) > max_length:
            if overflow == "drop":
                stats["dropped_too_long"] += 1
                continue
            a, b = a[:max_length], b[:max_length]
            stats["truncated"] += 1
        out.append({"chosen": a, "rejected": b, "problem_id": p.get("problem_id", "")})
        stats["pairs"] += 1
    return out, dict(stats)


def split_by_problem(
    pairs: Sequence[Mapping[str, Any]], eval_fraction: float, seed: int = 0
) -> tuple[list[Any], list[Any]]:
    """Splits pairs into train / eval by problem id (no problem on both sides)."""
    if eval_fraction <= 0:
        return list(pairs), []
    ids = sorted({str(p["problem_id"]) for p in pairs})
    rng = np.random.default_rng(seed)
    n_eval = max(1, int(round(eval_fraction * len(ids)))) if len(ids) > 1 else 0
    held = set(rng.permutation(ids)[:n_eval].tolist())
    train = [p for p in pairs if str(p["problem_id"]) not in held]
    ev = [p for p in pairs if str(p["problem_id"]) in held]
    return train, ev
