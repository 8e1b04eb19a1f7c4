"""Generator SFT data of the expert-iteration loop: μCode relabeling and its baselines.

μCode step 4 and its baselines. Input: the rollout trajectories of
`mucode_jax.rollout.run_search` (`types.Trajectory`) and, optionally, their verifier scores. Output: **already-expanded conversations**, one per training example,
each ending in the assistant message to train on::

  {"messages": [...context..., {"role": "assistant", "content": target}],
   "problem_id": str, "search": int, "turn": int (1-based turn whose context this is),
   "kind": "relabeled" | "kept", "mode": "mucode" | "multi_star" | "multi_star2" | "rft_lv",
   "target_search": int, "target_turn": int (1-based), "target_label": bool,
   "target_score": float | None, "iteration": int | None}

The context of turn t is the trajectory's conversation up to and including the user message
before assistant turn t (earlier assistant turns are kept as they were generated). A relabeled
target differs from the message the trajectory had at that turn, so one conversation cannot
carry all of a trajectory's targets; hence the expansion happens here and the tokenization
must **not** expand prefixes again: use `sft_examples` (= `sft_examples_from_conversations(...,
prefix_expansion=False, target="final")`): one example per conversation, loss only on its final
assistant message.

Modes (``build_sft_data(mode, ...)``); "final score" is the score of a trajectory's last turn:

* ``mucode``: per problem, y* = the best program of the pool (``pool="final"``: the last turn
  of every trajectory, official; ``"all"``: every assistant turn) by key = R(x, y)
  (``oracle_assisted``: + 100 * oracle label). Correct trajectories (last turn correct) are
  kept; of the incorrect ones, up to ``max_relabeled`` (3), those with the highest final
  score, are relabeled: every turn's context gets target y* (``top_k`` > 1: one copy per
  top-k program). Problems without a correct program are relabeled too.
* ``multi_star2``: the same with the oracle in place of the verifier: key = 100 * label
  (+ R(x, y) as tie-break when verifier scores are available, see ``star2_tiebreak``), and
  only problems whose pool holds a correct program.
* ``mucode_r``: the ``mucode`` conversations followed by the ``multi_star2`` ones.
* ``multi_star``: the trajectories whose last turn is correct (oracle filter), nothing else.
* ``rft_lv``: per problem the ``rft_top_k`` (6) trajectories with the highest final score
  (``oracle_assisted``: + 100 * label).
* ``zheng_rft``: Zheng et al.'s multi-turn RFT (`mucode_jax.algorithms.rft`): correct
  multi-turn CoT-retry trajectories, MinHash-LSH de-duplicated to ``rft_max_per_problem``
  (50), CoT prompts stripped, every turn's own message as target.

A trajectory kept without relabeling (correct ones; all of ``multi_star`` / ``rft_lv``)
expands with its own final program as target at every context (``kept_target="final"``, the
official ``convert_multi_to_many --relabel_only`` expansion of (history, final completion)
rows), or with each turn's own message (``"each"``: the plain prefix expansion of the raw
trajectory, which trains on the failed intermediate programs).

Verifier scores: ``scores={(problem_id, search, turn, candidate): float}`` (0-based turn and
candidate; the driver's scores artifact), of which the selected candidate's count; when
``scores`` is None each selected candidate's own ``score`` is used (what `run_search`
records when it has a scorer).

Ties are broken at random, and ``relabel_order="random"`` draws the relabeled trajectories at
random, from ``random.Random`` seeded by (seed, mode, problem id): the output depends only on
the seed and the set of records, not on their order (problems and trajectories are processed
sorted by problem id and search index).
"""

from __future__ import annotations

import collections
import dataclasses
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mucode_jax.records import Scores
from mucode_jax.types import Trajectory

MODES = ("mucode", "multi_star", "multi_star2", "mucode_r", "rft_lv", "zheng_rft")
# Modes with their own rollouts and SFT settings, in the driver config section of their name
# (``zheng_rft``: Zheng et al.'s multi-turn RFT on CoT-retry rollouts, `algorithms.rft`).
OWN_SETTINGS = ("zheng_rft",)

Conversation = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class RelabelConfig:
    """How the data modes select and relabel (defaults: the official μCode scripts).

    Attributes:
      top_k: programs y* per problem; each relabeled trajectory is expanded once per program
        (official ``TOP_K=1``).
      max_relabeled: incorrect trajectories relabeled per problem (official
        ``NUM_TO_RELABEL=3``); None relabels all (the paper's description: "the size of the
        dataset for μCode is the total number of rollouts as we relabel every trajectory").
      keep_correct: keep correct trajectories unrelabeled (official ``--merge_positive_data``);
        False makes every trajectory a relabeling candidate (incorrect ones first).
      relabel_order: which incorrect trajectories fill the ``max_relabeled`` slots: ``"score"``
        (highest final key first, official) or ``"random"``.
      pool: where y* comes from: ``"final"`` (last turns, official) or ``"all"`` (every turn).
      oracle_assisted: ``mucode`` / ``rft_lv`` key = R(x, y) + ``oracle_bonus`` * label.
      oracle_bonus: the oracle label's weight (100).
      star2_tiebreak: how ``multi_star2`` orders programs of equal oracle label: ``"auto"``
        (the verifier if any score is available, else random), ``"verifier"`` or ``"random"``.
      rft_top_k: trajectories kept per problem by ``rft_lv`` (paper: top 6 of 15).
      kept_target: targets of an unrelabeled trajectory: ``"final"`` (its last program at
        every context, official) or ``"each"`` (each turn's own message).
      rft_max_per_problem: ``zheng_rft``'s trajectories per problem after de-duplication (50).
      rft_dedup_threshold: ``zheng_rft``'s MinHash-LSH similarity threshold (0.8).
      rft_multi_turn_only: ``zheng_rft`` keeps multi-turn trajectories only (the paper's).
    """

    top_k: int = 1
    max_relabeled: int | None = 3
    keep_correct: bool = True
    relabel_order: str = "score"
    pool: str = "final"
    oracle_assisted: bool = False
    oracle_bonus: float = 100.0
    star2_tiebreak: str = "auto"
    rft_top_k: int = 6
    kept_target: str = "final"
    rft_max_per_problem: int = 50
    rft_dedup_threshold: float = 0.8
    rft_multi_turn_only: bool = True

    def __post_init__(self):
        checks = [
            (self.top_k >= 1, f"top_k must be at least 1, got {self.top_k}."),
            (
                self.max_relabeled is None or self.max_relabeled >= 0,
                f"max_relabeled must be None (all) or >= 0, got {self.max_relabeled}.",
            ),
            (self.rft_top_k >= 1, f"rft_top_k must be at least 1, got {self.rft_top_k}."),
            (
                self.relabel_order in ("score", "random"),
                f"relabel_order must be 'score' or 'random', got {self.relabel_order!r}.",
            ),
            (self.pool in ("final", "all"), f"pool must be 'final' or 'all', got {self.pool!r}."),
            (
                self.star2_tiebreak in ("auto", "verifier", "random"),
                "star2_tiebreak must be 'auto', 'verifier' or 'random', "
                f"got {self.star2_tiebreak!r}.",
            ),
            (
                self.kept_target in ("final", "each"),
                f"kept_target must be 'final' or 'each', got {self.kept_target!r}.",
            ),
            (
                self.rft_max_per_problem >= 1,
                f"rft_max_per_problem must be at least 1, got {self.rft_max_per_problem}.",
            ),
            (
                0.0 < self.rft_dedup_threshold < 1.0,
                f"rft_dedup_threshold must be in (0, 1), got {self.rft_dedup_threshold}.",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclasses.dataclass(frozen=True)
class _Traj:
    """A trajectory with the verifier score of each turn's selected program."""

    trajectory: Trajectory
    scores: tuple[float | None, ...]

    @property
    def problem_id(self) -> str:
        return self.trajectory.problem_id

    @property
    def search(self) -> int:
        return self.trajectory.search

    @property
    def labels(self) -> tuple[bool, ...]:
        return self.trajectory.labels

    @property
    def num_turns(self) -> int:
        return len(self.trajectory.turns)

    @property
    def success(self) -> bool:
        return self.trajectory.success

    def context(self, t: int) -> list[dict[str, str]]:
        return self.trajectory.context(t)

    def completion(self, t: int) -> str:
        return self.trajectory.turns[t].chosen.completion

    def where(self, t: int) -> str:
        return f"problem {self.problem_id!r}, search {self.search}, turn index {t} (0-based)"


def _group(trajectories: Iterable[Trajectory], scores: Scores | None) -> dict[str, list[_Traj]]:
    """Trajectories with their scores, by problem, sorted by problem id and search index."""
    by_problem: dict[str, list[_Traj]] = collections.defaultdict(list)
    for tr in trajectories:
        if scores is None:
            vals = tuple(turn.chosen.score for turn in tr.turns)
        else:
            vals = tuple(
                scores.get((tr.problem_id, tr.search, t, turn.selected))
                for t, turn in enumerate(tr.turns)
            )
        by_problem[tr.problem_id].append(_Traj(tr, vals))
    return {pid: sorted(v, key=lambda tr: tr.search) for pid, v in sorted(by_problem.items())}


def _rng(seed: int, mode: str, problem_id: str) -> random.Random:
    return random.Random(f"mucode_jax.relabel/{seed}/{mode}/{problem_id}")


def _ranked(items: Sequence[Any], keys: Sequence[float], rng: random.Random) -> list[Any]:
    """Items by key, highest first; equal keys in random order."""
    ties = [rng.random() for _ in items]
    order = sorted(range(len(items)), key=lambda i: (-keys[i], ties[i]))
    return [items[i] for i in order]


def _conv(
    tr: _Traj, t: int, target: tuple[_Traj, int], kind: str, mode: str, iteration: int | None
) -> Conversation:
    src, u = target
    return {
        "messages": tr.context(t) + [{"role": "assistant", "content": src.completion(u)}],
        "problem_id": tr.problem_id,
        "search": tr.search,
        "turn": t + 1,
        "kind": kind,
        "mode": mode,
        "target_search": src.search,
        "target_turn": u + 1,
        "target_label": src.labels[u],
        "target_score": src.scores[u],
        "iteration": iteration,
    }


def _kept(tr: _Traj, config: RelabelConfig, mode: str, iteration: int | None) -> list[Conversation]:
    last = tr.num_turns - 1
    return [
        _conv(tr, t, (tr, last if config.kept_target == "final" else t), "kept", mode, iteration)
        for t in range(tr.num_turns)
    ]


class _Keys:
    """Selection keys of programs: verifier score and / or oracle bonus."""

    def __init__(self, mode: str, *, verifier: bool, oracle: float):
        self.mode, self.verifier, self.oracle = mode, verifier, oracle

    def __call__(self, tr: _Traj, t: int) -> float:
        key = self.oracle * float(tr.labels[t])
        if self.verifier:
            s = tr.scores[t]
            if s is None:
                raise ValueError(
                    f"Mode {self.mode!r} needs the verifier score of {tr.where(t)}, which is "
                    "missing; pass scores={(problem_id, search, turn, candidate): float} or run "
                    "the rollouts with a scorer so each candidate carries a score."
                )
            key += s
        return key


def _relabel(
    problems: Mapping[str, list[_Traj]],
    keys: _Keys,
    config: RelabelConfig,
    *,
    mode: str,
    require_correct: bool,
    seed: int,
    iteration: int | None,
) -> tuple[list[Conversation], dict[str, int]]:
    """μCode-style one-step relabeling (``mucode`` and ``multi_star2``)."""
    out: list[Conversation] = []
    stats = collections.Counter(
        problems=0,
        trajectories=0,
        problems_without_correct=0,
        problems_dropped=0,
        trajectories_relabeled=0,
        trajectories_kept=0,
        conversations=0,
    )
    for pid, trajs in problems.items():
        stats["problems"] += 1
        stats["trajectories"] += len(trajs)
        rng = _rng(seed, mode, pid)
        pool = [
            (tr, t)
            for tr in trajs
            for t in (range(tr.num_turns) if config.pool == "all" else [tr.num_turns - 1])
        ]
        if not any(tr.labels[t] for tr, t in pool):
            stats["problems_without_correct"] += 1
            if require_correct:
                stats["problems_dropped"] += 1
                continue
        targets = _ranked(pool, [keys(tr, t) for tr, t in pool], rng)[: config.top_k]

        candidates = [tr for tr in trajs if not (config.keep_correct and tr.success)]
        if config.relabel_order == "score":
            finals = [keys(tr, tr.num_turns - 1) for tr in candidates]
            candidates = _ranked(candidates, finals, rng)
            candidates.sort(key=lambda tr: tr.success)  # incorrect first (stable)
        else:
            rng.shuffle(candidates)
        relabeled = (
            candidates if config.max_relabeled is None else candidates[: config.max_relabeled]
        )
        chosen = {tr.search for tr in relabeled}
        for tr in trajs:
            if tr.search in chosen:
                stats["trajectories_relabeled"] += 1
                for t in range(tr.num_turns):
                    for target in targets:
                        out.append(_conv(tr, t, target, "relabeled", mode, iteration))
            elif config.keep_correct and tr.success:
                stats["trajectories_kept"] += 1
                out.extend(_kept(tr, config, mode, iteration))
    stats["conversations"] = len(out)
    return out, dict(stats)


def _multi_star(
    problems: Mapping[str, list[_Traj]], config: RelabelConfig, iteration: int | None
) -> tuple[list[Conversation], dict[str, int]]:
    out: list[Conversation] = []
    stats = collections.Counter(
        problems=0, trajectories=0, problems_dropped=0, trajectories_kept=0, conversations=0
    )
    for trajs in problems.values():
        stats["problems"] += 1
        stats["trajectories"] += len(trajs)
        good = [tr for tr in trajs if tr.success]
        if not good:
            stats["problems_dropped"] += 1
        for tr in good:
            stats["trajectories_kept"] += 1
            out.extend(_kept(tr, config, "multi_star", iteration))
    stats["conversations"] = len(out)
    return out, dict(stats)


def _rft_lv(
    problems: Mapping[str, list[_Traj]],
    keys: _Keys,
    config: RelabelConfig,
    seed: int,
    iteration: int | None,
) -> tuple[list[Conversation], dict[str, int]]:
    out: list[Conversation] = []
    stats = collections.Counter(problems=0, trajectories=0, trajectories_kept=0, conversations=0)
    for pid, trajs in problems.items():
        stats["problems"] += 1
        stats["trajectories"] += len(trajs)
        finals = [keys(tr, tr.num_turns - 1) for tr in trajs]
        top = {
            tr.search
            for tr in _ranked(trajs, finals, _rng(seed, "rft_lv", pid))[: config.rft_top_k]
        }
        for tr in trajs:
            if tr.search in top:
                stats["trajectories_kept"] += 1
                out.extend(_kept(tr, config, "rft_lv", iteration))
    stats["conversations"] = len(out)
    return out, dict(stats)


def _star2_uses_verifier(
    problems: Mapping[str, list[_Traj]], config: RelabelConfig, scores
) -> bool:
    if config.star2_tiebreak != "auto":
        return config.star2_tiebreak == "verifier"
    if scores is not None:
        return True
    return any(s is not None for v in problems.values() for tr in v for s in tr.scores)


def build_sft_data(
    mode: str,
    trajectories: Iterable[Trajectory],
    *,
    scores: Scores | None = None,
    config: RelabelConfig = RelabelConfig(),
    seed: int = 0,
    iteration: int | None = None,
) -> tuple[list[Conversation], dict[str, int]]:
    """The generator's SFT conversations of one expert iteration, for one data mode.

    Args:
      mode: ``mucode``, ``multi_star``, ``multi_star2``, ``mucode_r`` or ``rft_lv`` (module
        docstring).
      trajectories: the rollouts (`mucode_jax.rollout.run_search`), all searches of all
        problems.
      scores: verifier scores keyed by (problem id, search, turn, candidate), 0-based (the
        scores artifact, `records.read_scores`); None reads each selected candidate's own
        ``score``. Needed by ``mucode``, ``mucode_r`` and ``rft_lv`` (for the turns they rank).
      config: selection settings.
      seed: seeds the tie-breaks and random draws.
      iteration: stored on every conversation (for `merge_iterations`).

    Returns:
      ``(conversations, stats)``. Tokenize with `sft_examples` (one example per
      conversation, no further prefix expansion). Stats count problems, trajectories,
      relabeled / kept trajectories, dropped problems and conversations (for ``mucode_r``
      with ``mucode/`` and ``multi_star2/`` prefixes, plus the total ``conversations``).

    Raises:
      ValueError: an unknown mode or a missing score.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown data mode {mode!r}; use one of {', '.join(MODES)}.")
    problems = _group(trajectories, scores)
    bonus = config.oracle_bonus if config.oracle_assisted else 0.0
    if mode == "multi_star":
        return _multi_star(problems, config, iteration)
    if mode == "rft_lv":
        return _rft_lv(problems, _Keys(mode, verifier=True, oracle=bonus), config, seed, iteration)
    if mode == "zheng_rft":
        from mucode_jax.algorithms import rft

        return rft.build_rft_data(
            [tr.trajectory for trs in problems.values() for tr in trs],
            max_per_problem=config.rft_max_per_problem,
            threshold=config.rft_dedup_threshold,
            seed=seed,
            iteration=iteration,
            multi_turn_only=config.rft_multi_turn_only,
        )

    def mucode():
        keys = _Keys("mucode", verifier=True, oracle=bonus)
        return _relabel(
            problems,
            keys,
            config,
            mode="mucode",
            require_correct=False,
            seed=seed,
            iteration=iteration,
        )

    def multi_star2():
        verifier = _star2_uses_verifier(problems, config, scores)
        keys = _Keys("multi_star2", verifier=verifier, oracle=config.oracle_bonus)
        return _relabel(
            problems,
            keys,
            config,
            mode="multi_star2",
            require_correct=True,
            seed=seed,
            iteration=iteration,
        )

    if mode == "mucode":
        return mucode()
    if mode == "multi_star2":
        return multi_star2()
    a, sa = mucode()
    b, sb = multi_star2()
    stats = {f"mucode/{k}": v for k, v in sa.items()}
    stats.update({f"multi_star2/{k}": v for k, v in sb.items()})
    stats["conversations"] = len(a) + len(b)
    return a + b, stats


def merge_iterations(per_iteration: Sequence[Sequence[Conversation]]) -> list[Conversation]:
    """The training set of μCode step 5: the conversations of all iterations so far.

    Args:
      per_iteration: the `build_sft_data` conversations of iterations 1..i, in order.

    Returns:
      Their concatenation, oldest first (as the official ``merge_datasets``); each a shallow
      copy whose ``"iteration"`` is kept if set, else set to its 1-based position.
    """
    out = []
    for i, convs in enumerate(per_iteration, start=1):
        if isinstance(convs, Mapping):
            raise ValueError(
                f"Iteration {i} is a dict, not a list of conversations; pass "
                "[conversations_of_iteration_1, conversations_of_iteration_2, ...]."
            )
        for c in convs:
            if not isinstance(c, Mapping) or "messages" not in c:
                raise ValueError(
                    f"Iteration {i} holds {type(c).__name__} items, not build_sft_data "
                    "conversations with 'messages'."
                )
            it = c.get("iteration")
            out.append({**c, "iteration": i if it is None else it})
    return out


def sft_examples(
    conversations: Iterable[Conversation], tokenizer: Any, **kwargs: Any
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Tokenizes `build_sft_data` conversations: one example each, loss on its last message.

    Calls `mucode_jax.data.sft.sft_examples_from_conversations` with ``prefix_expansion=False``
    and ``target="final"`` (the conversations are already expanded; expanding again would train
    on the contexts' original assistant messages). ``kwargs``: ``max_length``, ``overflow``.
    """
    for name in ("prefix_expansion", "target"):
        if name in kwargs:
            raise ValueError(
                f"sft_examples fixes {name}; build_sft_data conversations are already expanded "
                "and train on their final assistant message only."
            )
    from mucode_jax.data.sft import sft_examples_from_conversations

    return sft_examples_from_conversations(
        conversations, tokenizer, prefix_expansion=False, target="final", **kwargs
    )
