"""The demo's base generator π_0: SFT data from a scripted stand-in for a pretrained model.

The built-in demo has no pretrained checkpoint, so π_0 is trained on conversations of a script
that answers the toy problems the way a weak instruct model does (`NoisyScript`):

* turn 1: a noisy solution (`toy.noisy_solution`): the reference with probability
  ``p_correct``, else another reading of the statement, a program overfit to the shown test,
  or a slip in its numbers or words;
* after feedback: **the same answer again**. The script never uses feedback, as small models
  often do not: they repeat themselves. So π_0 knows what a multi-turn conversation looks like
  (it copies, it stops) but not that feedback means "change the program"; learning that is
  left to μCode's relabeled data (an incorrect turn followed by the best program), which the
  oracle-filtered baselines do not get (π_0 never recovers, so their data has no recoveries).

The conversations come from the real rollout engine (`rollout.run_search`) with the script as
the policy, so the feedback turns are exactly what the executor and the search's feedback
template produce at rollout time.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mucode_jax import rollout
from mucode_jax.data import toy
from mucode_jax.types import Message, Problem

# The search fields its scripted searches set themselves (see `conversations`): the rollouts'
# values of these do not shape the warm start.
SCRIPTED_FIELDS = ("num_searches", "num_candidates", "max_turns", "select")


class NoisyScript:
    """A `rollout.Policy` for toy problems: noisy at turn 1, repeats itself afterwards.

    Args:
      problems: the problems it will be asked (looked up by their first prompt).
      search: the search whose prompts it answers (prompt form, tests shown).
      p_correct, kind_weights: `toy.noisy_solution`'s.
    """

    def __init__(
        self,
        problems: Sequence[Problem],
        search: rollout.SearchConfig,
        *,
        p_correct: float,
        kind_weights: Mapping[str, float] | None = None,
    ):
        self._by_prompt: dict[str, Problem] = {}
        for p in problems:
            first = rollout.P.first_turn_messages(
                p, system=search.system, show_tests=search.show_tests, form=search.prompt_form
            )
            self._by_prompt[first[-1]["content"]] = p
        self._p_correct = p_correct
        self._weights = dict(kind_weights) if kind_weights else None

    def complete(
        self, conversations: Sequence[list[Message]], *, seeds: Sequence[int]
    ) -> list[rollout.Completion]:
        out = []
        for conv, seed in zip(conversations, seeds, strict=True):
            said = [m["content"] for m in conv if m["role"] == "assistant"]
            if said:  # after feedback: the same answer again
                out.append(rollout.Completion(said[-1]))
                continue
            user = next(m["content"] for m in conv if m["role"] == "user")
            problem = self._by_prompt.get(user)
            if problem is None:
                raise ValueError("NoisyScript was asked a prompt of a problem it was not given.")
            code, _, _ = toy.noisy_solution(
                problem, random.Random(seed), self._p_correct, self._weights
            )
            out.append(rollout.Completion(fenced(code)))
        return out


def fenced(code: str) -> str:
    """An assistant message holding ``code`` in a ```` ```python ```` block."""
    return f"```python\n{code}\n```"


def conversations(
    problems: Sequence[Problem],
    executor: Any,
    search: rollout.SearchConfig,
    output: str | Path,
    *,
    samples_per_problem: int,
    max_turns: int,
    p_correct: float,
    kind_weights: Mapping[str, float] | None = None,
) -> list[list[Message]]:
    """π_0's SFT conversations: ``samples_per_problem`` scripted searches per problem.

    Each search runs the rollout engine with `NoisyScript` for up to ``max_turns`` turns
    (stopping when the public tests pass), so a wrong first answer that fails the public
    tests is followed by its real feedback and the same answer again. The trajectories are
    written to ``output`` (JSONL, resumable like any rollout file).

    Returns:
      One message list per search, ending with its last assistant message.
    """
    if samples_per_problem < 1 or max_turns < 1:
        raise ValueError(
            f"warm_start needs samples_per_problem >= 1 and turns >= 1, got "
            f"{samples_per_problem} and {max_turns}."
        )
    scripted = dict(
        zip(SCRIPTED_FIELDS, (samples_per_problem, 1, max_turns, "random"), strict=True)
    )
    cfg = rollout.SearchConfig(**{**_fields(search), **scripted})
    script = NoisyScript(problems, cfg, p_correct=p_correct, kind_weights=kind_weights)
    trajectories = rollout.run_search(problems, script, executor, cfg, output)
    return [t.messages for t in trajectories]


def _fields(search: rollout.SearchConfig) -> dict[str, Any]:
    import dataclasses

    return {f.name: getattr(search, f.name) for f in dataclasses.fields(search)}
