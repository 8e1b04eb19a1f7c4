"""Generator SFT examples from chat conversations.

A conversation is a list of ``{"role", "content"}`` messages, a dict with a
``"messages"`` list plus any metadata, or a `types.Trajectory` (its messages). Each becomes one or more tokenized examples::

  {"inputs": int32 [n], "targets": int32 [n], "weights": float32 [n]}

where ``targets`` are the next tokens (``ids[1:]`` for ``inputs = ids[:-1]``) and
``weights`` marks the assistant tokens the loss is on (content and end-of-turn
token; see `mucode_jax.prompts.render_with_mask`). Shifting here, per example,
makes packed and unpacked batches see exactly the same (input, target) pairs.

μCode's *prefix expansion*: a trajectory ``u1 a1 u2 a2 u3 a3`` gives one example per
conversation prefix ending in an assistant turn (``u1 a1``; ``u1 a1 u2 a2``; the
whole), each with the loss on its final assistant message (``target="final"``) or on
every assistant message in it (``target="all"``).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from mucode_jax import prompts
from mucode_jax.execution.results import ExecResult
from mucode_jax.types import Candidate, Trajectory, Turn

Example = dict[str, np.ndarray]


def _messages(row: Any, index: int) -> list[Mapping[str, Any]]:
    """The messages of conversation `index` (0-based; messages say "row index + 1", the line of
    a JSONL file)."""
    n = index + 1
    if isinstance(row, Trajectory):
        return row.messages
    if isinstance(row, Mapping):
        if "messages" not in row:
            raise ValueError(
                f"SFT row {n} is a dict without a 'messages' list; pass "
                "{'messages': [{'role': ..., 'content': ...}, ...]} or the list itself."
            )
        row = row["messages"]
    if isinstance(row, str) or not isinstance(row, Sequence):
        raise ValueError(
            f"SFT row {n} is a {type(row).__name__}, not a list of "
            "{'role': ..., 'content': ...} messages."
        )
    for j, m in enumerate(row):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise ValueError(
                f"SFT row {n}, message {j + 1} is not a {{'role': ..., 'content': ...}} dict: "
                f"{m!r:.60}."
            )
        if not isinstance(m["content"], str | list):  # a list: a template's content parts
            raise ValueError(
                f"SFT row {n}, message {j + 1} has content of type "
                f"{type(m['content']).__name__}; give the text as a string."
            )
    return list(row)


def sft_examples_from_conversations(
    conversations: Iterable[Any],
    tokenizer: Any,
    *,
    prefix_expansion: bool = True,
    target: str = "final",
    max_length: int | None = None,
    overflow: str = "truncate",
    train_eos: bool = True,
) -> tuple[list[Example], dict[str, int]]:
    """Tokenizes conversations into SFT examples.

    Args:
      conversations: message lists, or dicts with a ``"messages"`` list.
      tokenizer: a Hugging Face tokenizer with a chat template.
      prefix_expansion: one example per prefix ending in an assistant turn (μCode);
        otherwise one example per conversation, up to its last assistant turn.
      target: ``"final"`` (loss on the last assistant message of each example) or
        ``"all"`` (every assistant message).
      max_length: the longest example, in (input, target) pairs; None for no limit.
      overflow: for longer examples, ``"truncate"`` (keep the first ``max_length``
        tokens; dropped if no target token is left) or ``"drop"``.
      train_eos: keep the end-of-turn token (the tokenizer's eos, ``<|eot_id|>`` for Llama 3
        Instruct) as a target. False reproduces the official TRL run, whose
        ``pad_token = eos_token`` masks every eos token out of the labels.

    Returns:
      ``(examples, stats)``; stats counts ``rows``, ``examples``,
      ``skipped_no_assistant``, ``truncated``, ``dropped_too_long``.

    Raises:
      ValueError: for a malformed row or message (naming it), or bad ``target`` / ``overflow``.
    """
    if target not in ("final", "all"):
        raise ValueError(f"target must be 'final' or 'all', got {target!r}.")
    if overflow not in ("truncate", "drop"):
        raise ValueError(f"overflow must be 'truncate' or 'drop', got {overflow!r}.")
    stats: dict[str, int] = collections.Counter(
        rows=0, examples=0, skipped_no_assistant=0, truncated=0, dropped_too_long=0
    )
    out: list[Example] = []
    for index, row in enumerate(conversations):
        stats["rows"] += 1
        messages = _messages(row, index)
        assistant = [i for i, m in enumerate(messages) if m["role"] == "assistant" and i > 0]
        if not assistant:
            stats["skipped_no_assistant"] += 1
            continue
        ends = assistant if prefix_expansion else assistant[-1:]
        for end in ends:
            ids, mask = prompts.render_with_mask(tokenizer, messages[: end + 1], train_on=target)
            ex = {
                "inputs": np.asarray(ids[:-1], np.int32),
                "targets": np.asarray(ids[1:], np.int32),
                "weights": np.asarray(mask[1:], np.float32),
            }
            if not train_eos and tokenizer.eos_token_id is not None:
                ex["weights"][ex["targets"] == tokenizer.eos_token_id] = 0.0
            n = len(ex["inputs"])
            if max_length is not None and n > max_length:
                if overflow == "drop":
                    stats["dropped_too_long"] += 1
                    continue
                ex = {k: v[:max_length] for k, v in ex.items()}
                if not ex["weights"].any():
                    stats["dropped_too_long"] += 1
                    continue
                stats["truncated"] += 1
            out.append(ex)
            stats["examples"] += 1
    return out, dict(stats)


def token_examples(trajectories: Iterable[Trajectory]) -> list[Example]:
    """Training examples from the token ids a `ModelPolicy` rollout stored: no text encoded.

    One example per candidate of every turn: ``ids = turn.prompt_ids + candidate.tokens``,
    ``inputs = ids[:-1]``, ``targets = ids[1:]``, ``weights`` 1 on the sampled tokens, and
    ``logprobs`` (float32, aligned with ``targets``, 0 on the prompt) the sampler's per-token
    log-probabilities under the model: what a policy-gradient loss needs as old log-probs.
    Candidates without stored tokens (scripted policies) are skipped.
    """
    out = []
    for traj in trajectories:
        for turn in traj.turns:
            for cand in turn.candidates:
                if not cand.tokens:
                    continue
                ids = np.asarray(turn.prompt_ids + cand.tokens, np.int32)
                n = len(turn.prompt_ids) - 1  # targets before the first sampled token
                weights = np.zeros(len(ids) - 1, np.float32)
                weights[n:] = 1.0
                logprobs = np.zeros(len(ids) - 1, np.float32)
                logprobs[n:] = cand.logprobs
                out.append(
                    {
                        "inputs": ids[:-1],
                        "targets": ids[1:],
                        "weights": weights,
                        "logprobs": logprobs,
                    }
                )
    return out


def describe_stats(stats: Mapping[str, int]) -> str:
    """One line for the log: what was kept, skipped, truncated and dropped."""
    return ", ".join(f"{k}={v}" for k, v in stats.items())


def toy_trajectories(
    n: int, *, seed: int = 0, per_problem: int = 1, p_correct: float = 0.5
) -> list[Trajectory]:
    """Built-in tiny multi-turn data from the toy task family (no downloads, no execution).

    Each trajectory starts with a noisy first answer (the reference with probability
    ``p_correct``, else a wrong program); a wrong answer gets a feedback turn quoting the
    public test and a corrected second answer (the reference). Used by the CPU configs.

    Returns:
      Trajectories (search index = the draw per problem) whose execution results are made
      up from the known labels (passed, or wrong_answer on both suites).
    """
    import random

    from mucode_jax.data import toy

    rng = random.Random(f"toy-trajectories/{seed}")
    passed, failed = ExecResult("passed"), ExecResult("wrong_answer")

    def candidate(code: str, ok: bool) -> Candidate:
        res = passed if ok else failed
        return Candidate(f"```python\n{code}```", code, res, res)

    out = []
    for problem in toy.toy_problems("train", n, seed=seed):
        x = prompts.first_turn_prompt(problem)
        for k in range(per_problem):
            code, ok, _ = toy.noisy_solution(problem, rng, p_correct)
            if ok:
                turns = (Turn(x, (candidate(code, True),)),)
            else:
                feedback = f"The public test failed: {problem.public_tests_text}"
                retry = prompts.feedback_message(feedback)["content"]
                turns = (
                    Turn(x, (candidate(code, False),), feedback=feedback),
                    Turn(retry, (candidate(problem.reference, True),)),
                )
            out.append(Trajectory(problem.id, problem.dataset, k, seed, turns))
    return out
