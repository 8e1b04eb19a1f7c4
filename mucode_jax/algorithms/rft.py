"""Zheng et al.'s multi-turn rejection-sampling fine-tuning (RFT) data: a driver data mode.

"What Makes Large Language Models Reason in (Multi-Turn) Code Generation?" (ICLR 2025) builds
its RFT set from CoT-retry rollouts (`prompts.PromptStrategy(cot_retry=True)`: turn 1 plain,
turn 2 adds "write a code solution with guidelines", turn 3 "generate a naive solution"):

1. N trajectories per problem (paper: 200, at most 3 turns);
2. keep those whose last turn is correct (public and private tests);
3. keep the multi-turn ones only (the paper trains on those);
4. de-duplicate with MinHash-LSH (`lsh_dedup`, on `datasketch`) to at most 50 per problem;
5. strip the CoT prompts from the user turns (`strip_prompt_strategy`), so the model learns to
   reason without being asked;
6. SFT on every assistant turn of the stripped trajectories (standard cross-entropy; the
   paper: lr 2e-6, cosine, 10 warm-up steps, annealing to 10 % of the peak).

`build_rft_data` does 2-5 and expands each kept trajectory into one conversation per turn,
each ending in that turn's own message (`relabel` format, ``kind="kept"``, ``mode=
"zheng_rft"``), so the driver's generator stage (loss on the final message, no further prefix
expansion) trains on all assistant turns. The driver runs this mode with its own rollouts and
SFT settings (``config.zheng_rft``; `algorithms.config.mucode_defaults`).
"""

from __future__ import annotations

import collections
import dataclasses
import re
from collections.abc import Iterable, Sequence
from typing import Any

from mucode_jax.types import Trajectory

MODE = "zheng_rft"
NUM_PERM = 128
LSH_WEIGHTS = (0.05, 0.95)  # (false positive, false negative) weights of the band choice
_TOKEN = re.compile(r"\w+|[^\w\s]")
_SEPARATOR = "\n# --- next turn ---\n"


def _shingles(program: str, n: int = 3) -> set[bytes]:
    """Token n-grams of a program (identifiers, numbers, punctuation; whitespace ignored)."""
    toks = _TOKEN.findall(program)
    if len(toks) < n:
        return {" ".join(toks).encode()}
    return {" ".join(toks[i : i + n]).encode() for i in range(len(toks) - n + 1)}


def lsh_dedup(
    programs: list[str], max_keep: int, threshold: float = 0.8, seed: int = 0
) -> list[int]:
    """Indices of the programs kept by MinHash-LSH near-duplicate removal.

    Programs are visited in order; one is kept unless a kept program is a near duplicate of it
    (token 3-gram Jaccard similarity, estimated by a 128-permutation MinHash, at least
    ``threshold``): `datasketch.MinHashLSH` proposes candidates (bands weighted against missed
    duplicates) and the MinHash estimate confirms them. So each family of
    near duplicates keeps its first member, and at most ``max_keep`` programs are kept.

    Args:
      programs: program texts.
      max_keep: the most programs kept (the paper's 50 per problem); 0 keeps none.
      threshold: Jaccard similarity from which two programs count as duplicates, in (0, 1).
      seed: the MinHash permutations' seed.

    Returns:
      The kept indices, increasing.

    Raises:
      ValueError: a negative ``max_keep``, a ``threshold`` outside (0, 1), a non-string program.
    """
    from datasketch import MinHash, MinHashLSH

    if int(max_keep) != max_keep or max_keep < 0:
        raise ValueError(f"max_keep must be a non-negative integer, got {max_keep!r}.")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}.")
    bad = [i for i, p in enumerate(programs) if not isinstance(p, str)]
    if bad:
        raise ValueError(
            f"Program {bad[0]} is a {type(programs[bad[0]]).__name__}, not a str; pass the "
            "program texts."
        )
    # Bands tuned against false negatives (a missed duplicate is kept); the false positives this
    # lets through are then rejected by the MinHash Jaccard estimate.
    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM, weights=LSH_WEIGHTS)
    kept: list[int] = []
    hashes: dict[str, Any] = {}
    for i, program in enumerate(programs):
        if len(kept) >= max_keep:
            break
        m = MinHash(num_perm=NUM_PERM, seed=seed)
        m.update_batch(list(_shingles(program)))
        if any(hashes[k].jaccard(m) >= threshold for k in lsh.query(m)):
            continue
        key = str(i)
        lsh.insert(key, m)
        hashes[key] = m
        kept.append(i)
    return kept


def strip_prompt_strategy(trajectory: Trajectory) -> Trajectory:
    """The trajectory as if it had been run with the plain prompts.

    Drops the reasoning turn (``preamble``) and replaces every user message by its plain form
    (`types.Turn.plain`: without the instruction / CoT-retry additions, and after a reasoning
    turn the plain first prompt). The assistant messages are untouched. Each turn's
    ``prompt_ids`` are dropped, since they render the unstripped conversation.
    """
    turns = tuple(
        dataclasses.replace(
            t,
            user=t.user if t.plain is None else t.plain,
            plain=None,
            prompt_ids=() if (t.plain is not None or trajectory.preamble) else t.prompt_ids,
        )
        for t in trajectory.turns
    )
    return dataclasses.replace(trajectory, turns=turns, preamble=())


def trajectory_programs(trajectory: Trajectory) -> str:
    """The text `build_rft_data` de-duplicates on: every turn's selected program, in order."""
    return _SEPARATOR.join(t.chosen.code or t.chosen.completion for t in trajectory.turns)


def build_rft_data(
    trajectories: Iterable[Trajectory],
    *,
    max_per_problem: int = 50,
    threshold: float = 0.8,
    seed: int = 0,
    iteration: int | None = None,
    multi_turn_only: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Multi-turn RFT conversations from CoT-retry rollouts (module docstring, steps 2-5).

    Args:
      trajectories: the rollouts (all searches of all problems).
      max_per_problem: trajectories kept per problem after de-duplication (paper: 50).
      threshold: `lsh_dedup`'s similarity threshold.
      seed: `lsh_dedup`'s seed.
      iteration: stored on every conversation.
      multi_turn_only: drop trajectories solved at turn 1 (the paper trains on multi-turn ones).

    Returns:
      ``(conversations, stats)``; the conversations in `relabel.build_sft_data`'s format, one
      per turn of each kept (stripped) trajectory, ending in that turn's own message.
    """
    from mucode_jax.algorithms import relabel

    by_problem: dict[str, list[Trajectory]] = collections.defaultdict(list)
    for tr in trajectories:
        by_problem[tr.problem_id].append(tr)
    stats = collections.Counter(
        problems=0,
        trajectories=0,
        correct=0,
        multi_turn_correct=0,
        duplicates_dropped=0,
        trajectories_kept=0,
        problems_kept=0,
        conversations=0,
    )
    each = relabel.RelabelConfig(kept_target="each")
    out: list[dict[str, Any]] = []
    for pid in sorted(by_problem):
        trajs = sorted(by_problem[pid], key=lambda t: t.search)
        stats["problems"] += 1
        stats["trajectories"] += len(trajs)
        good = [t for t in trajs if t.success]
        stats["correct"] += len(good)
        stats["multi_turn_correct"] += sum(len(t.turns) > 1 for t in good)
        if multi_turn_only:
            good = [t for t in good if len(t.turns) > 1]
        kept = [
            good[i]
            for i in _dedup(
                [trajectory_programs(t) for t in good], max_per_problem, threshold, seed
            )
        ]
        stats["duplicates_dropped"] += len(good) - len(kept)
        stats["trajectories_kept"] += len(kept)
        stats["problems_kept"] += bool(kept)
        for tr in kept:
            plain = relabel._Traj(strip_prompt_strategy(tr), (None,) * len(tr.turns))
            out.extend(relabel._kept(plain, each, MODE, iteration))
    stats["conversations"] = len(out)
    if not out:
        raise ValueError(
            f"zheng_rft kept no trajectory: of {stats['trajectories']} rollouts {stats['correct']} "
            f"end correct and {stats['multi_turn_correct']} of those took more than one turn (the "
            "generator never repairs a failed program); raise config.zheng_rft.search."
            "num_searches, start from a generator that uses feedback, or set "
            "config.relabel.rft_multi_turn_only=False to keep single-turn successes too."
        )
    return out, dict(stats)


def _dedup(programs: Sequence[str], max_keep: int, threshold: float, seed: int) -> list[int]:
    return lsh_dedup(list(programs), max_keep, threshold, seed) if programs else []
