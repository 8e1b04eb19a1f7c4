"""What a search did on toy problems: each candidate's kind, the verifier's scores by kind, and
how often the selection picked a right program when it had the choice (and how often it
resubmitted a program the search had already seen fail).

The per-family analyses of docs/mucode.md (`launch/analyze_search.py`). A candidate's kind:

* ``right``: passes the public and the private tests;
* ``reading``: another reading of the statement, as the family writes it (whitespace aside);
* ``overfit``: passes the public tests, fails a private one (only a verifier can tell);
* ``no_code``: the completion has no program;
* ``other``: anything else that fails, mostly slipped constants (``n * 9 + 25`` for ``+ 29``).
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable, Mapping
from typing import Any

from mucode_jax import rollout
from mucode_jax.data import toy
from mucode_jax.types import Candidate, Problem, Trajectory

KINDS = ("right", "reading", "overfit", "no_code", "other")


def _norm(code: str) -> str:
    return re.sub(r"\s+", " ", code.strip())


def candidate_kind(problem: Problem, candidate: Candidate) -> str:
    """The kind of one candidate of a toy problem (see the module docstring)."""
    if candidate.label:
        return "right"
    if candidate.code is None:
        return "no_code"
    family, params = toy._family_and_params(problem)
    code = _norm(candidate.code)
    for h in family.hidden:
        if h != params["hidden"] and code == _norm(toy._code(family, {**params, "hidden": h})):
            return "reading"
    return "overfit" if candidate.public_passed else "other"


def search_report(
    trajectories: Iterable[Trajectory], problems: Mapping[str, Problem]
) -> dict[str, Any]:
    """Counts of kinds per (family, turn), verifier scores per (family, kind), selections.

    Args:
      trajectories: the searches (`records.read_trajectories` of a ``search_<mode>.jsonl``).
      problems: the toy problems by id.

    Returns:
      ``{"kinds": {(family, turn): {kind: n}}, "scores": {(family, kind): [score, ...]},
      "mixed": {(family, turn): (turns, picked right, mean fraction right, resubmitted)}}``;
      turns are 1-based; "mixed" covers the turns whose candidates hold right and wrong
      programs (the mean fraction right is what a uniformly random selection picks on
      average; "resubmitted" counts picks of a program the search already selected and saw
      fail its public tests, as `eval.search.skip_failed` compares them: `rollout.program_key`).
    """
    kinds: dict[tuple[str, int], collections.Counter] = collections.defaultdict(collections.Counter)
    scores: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    mixed: dict[tuple[str, int], list[float]] = collections.defaultdict(lambda: [0, 0, 0.0, 0])
    for traj in trajectories:
        if traj.problem_id not in problems:
            raise ValueError(
                f"Search of problem {traj.problem_id!r} has no toy problem among the "
                f"{len(problems)} given; pass the problems it ran on (the config and split of its run)."
            )
        problem = problems[traj.problem_id]
        family = problem.metadata["family"]
        failed: set[str] = set()  # programs this search selected and saw fail
        for t, turn in enumerate(traj.turns, start=1):
            pick = turn.candidates[turn.selected]
            ks = [candidate_kind(problem, c) for c in turn.candidates]
            kinds[family, t].update(ks)
            for c, k in zip(turn.candidates, ks):
                if c.score is not None:
                    scores[family, k].append(float(c.score))
            right = sum(k == "right" for k in ks)
            if 0 < right < len(ks):
                m = mixed[family, t]
                m[0] += 1
                m[1] += ks[turn.selected] == "right"
                m[2] += right / len(ks)
                m[3] += rollout.program_key(pick) in failed
            if not pick.public_passed:
                failed.add(rollout.program_key(pick))
    return {
        "kinds": {key: dict(c) for key, c in sorted(kinds.items())},
        "scores": dict(sorted(scores.items())),
        "mixed": {
            key: (int(n), int(r), f / n, int(u)) for key, (n, r, f, u) in sorted(mixed.items())
        },
    }


def pair_report(
    pairs: Iterable[Mapping[str, Any]],
    trajectories: Iterable[Trajectory],
    problems: Mapping[str, Problem],
) -> dict[tuple[str, str], int]:
    """The kinds of the rejected programs of verifier pairs, per family.

    A pair's rejected side is a turn of the rollouts it was drawn from (`data.verifier_data`),
    so its kind comes from that turn's execution results; ``right`` here is a right program of
    a turn that was not its trajectory's last (official labelling counts those as incorrect).

    Args:
      pairs: the ``pairs.jsonl`` rows of a verifier_data stage.
      trajectories: the rollouts those pairs came from.
      problems: the toy problems by id.
    """
    kind_of: dict[tuple[str, str], str] = {}
    for traj in trajectories:
        problem = problems.get(traj.problem_id)
        if problem is None:
            continue
        for turn in traj.turns:
            for c in turn.candidates:
                kind_of[traj.problem_id, c.completion] = candidate_kind(problem, c)
    counts: collections.Counter = collections.Counter()
    for p in pairs:
        key = (str(p["problem_id"]), str(p["rejected"]))
        if key not in kind_of:
            raise ValueError(
                f"A pair of problem {key[0]!r} rejects a program that no rollout of the "
                "given file holds; pass the rollouts.jsonl its verifier_data stage read."
            )
        counts[problems[key[0]].metadata["family"], kind_of[key]] += 1
    return dict(sorted(counts.items()))


def format_report(report: Mapping[str, Any]) -> str:
    """The report as three markdown tables."""
    lines = ["| family | turn | " + " | ".join(KINDS) + " |", "|---|---|" + "---|" * len(KINDS)]
    for (family, t), c in report["kinds"].items():
        lines.append(f"| {family} | {t} | " + " | ".join(str(c.get(k, 0)) for k in KINDS) + " |")
    if report["scores"]:
        lines += ["", "| family | kind | candidates | mean verifier score |", "|---|---|---|---|"]
        for (family, k), v in report["scores"].items():
            lines.append(f"| {family} | {k} | {len(v)} | {sum(v) / len(v):+.2f} |")
    lines += [
        "",
        "| family | turn | mixed turns | selection right | random (mean fraction right) "
        "| resubmitted a failed program |",
        "|---|---|---|---|---|---|",
    ]
    for (family, t), (n, r, f, u) in report["mixed"].items():
        lines.append(f"| {family} | {t} | {n} | {r / n:.2f} | {f:.2f} | {u} |")
    return "\n".join(lines)
