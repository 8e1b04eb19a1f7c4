"""The multi-turn rollout engine: generation, execution, feedback, and Best-of-N search.

One engine serves both uses of SPEC §2:

* **Rollouts** (training data): ``num_searches = N`` independent trajectories per problem,
  one candidate per turn (``num_candidates = 1``), temperature 0.7.
* **Multi-turn Best-of-N** (inference): ``num_searches`` repeated searches (different seeds)
  per problem, ``num_candidates = N`` per turn, one chosen by the learned verifier (``lv``),
  the public tests (``pt``), public tests x 100 + verifier (``pt_lv``) or at random.

Per turn, every candidate's code runs on the public tests (its feedback) and on the private
tests (the oracle label = public and private pass). The selected candidate's feedback
becomes the next user message; a search stops when its selected program passes the public
tests, or after ``max_turns``.

Execution overlaps generation: candidates are submitted to the executor service as soon as
they are generated, and the engine generates for other searches while they run. Finished
searches are appended to a JSONL file one line each as they finish; a restarted run reads
that file, skips finished searches and redoes only the others.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import hashlib
import json
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from mucode_jax import prompts as P
from mucode_jax.types import Problem

SELECT_MODES = ("random", "pt", "lv", "pt_lv")


@dataclasses.dataclass(frozen=True)
class Completion:
    """One generated assistant message."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Policy(Protocol):
    """Anything that answers conversations: a model + tokenizer + sampler, or a script."""

    def complete(
        self, conversations: Sequence[list[dict[str, str]]], *, seed: int
    ) -> list[Completion]: ...


class Scorer(Protocol):
    """The learned verifier: scores (first user prompt, assistant message) pairs."""

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]: ...


class Executor(Protocol):
    """The execution service's asynchronous API (see `mucode_jax.execution`)."""

    def submit(self, code: str | None, tests: dict[str, Any], **kw: Any) -> cf.Future: ...


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """How to search.

    Attributes:
      num_searches: independent searches per problem (rollouts: N = 15; BoN: repeats).
      num_candidates: candidates sampled per turn (1 for rollouts; N for BoN).
      max_turns: T (>= 1).
      select: ``random``, ``pt`` (public tests), ``lv`` (learned verifier) or ``pt_lv``
        (public tests x 100 + verifier), used when ``num_candidates > 1``.
      feedback_style: ``mucode`` ("Feedback: ...") or ``rlef``.
      granularity: feedback text granularity (``binary``, ``failed``, ``failed_and_passed``,
        ``trace``).
      feedback_chars: truncation budget of a feedback message.
      stop_on_public_pass: end a search once its selected program passes the public tests.
      show_tests: put the public tests into the first prompt (None: the dataset's default).
      batch_size: conversations per policy call.
      seed: base seed; each search and turn derive theirs from it.
    """

    num_searches: int = 1
    num_candidates: int = 1
    max_turns: int = 3
    select: str = "random"
    feedback_style: str = "mucode"
    granularity: str = "failed"
    feedback_chars: int = 2000
    stop_on_public_pass: bool = True
    show_tests: bool | None = None
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self):
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, got {self.max_turns}; set it to 1..T.")
        if self.num_searches < 1 or self.num_candidates < 1:
            raise ValueError("num_searches and num_candidates must be at least 1.")
        if self.select not in SELECT_MODES:
            raise ValueError(f"Unknown selection mode {self.select!r}; use one of {SELECT_MODES}.")
        if self.feedback_style not in ("mucode", "rlef"):
            raise ValueError(
                f"feedback_style must be 'mucode' or 'rlef', got {self.feedback_style!r}."
            )


@dataclasses.dataclass
class _Search:
    problem: Problem
    index: int
    messages: list[dict[str, str]]
    turns: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    done: bool = False


def _seed(*parts: Any) -> int:
    h = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).digest()
    return int.from_bytes(h[:4], "little")


def _candidate_record(c: Completion, code: str | None, public, private) -> dict[str, Any]:
    return {
        "completion": c.text,
        "code": code,
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "public": public.to_json(),
        "private": private.to_json(),
        "public_passed": bool(public.passed),
        "label": bool(public.passed and private.passed),
    }


def _select(mode: str, cands: list[dict[str, Any]], rng: random.Random) -> int:
    """Index of the chosen candidate (ties broken at random).

    ``pt`` ranks by the fraction of public tests passed (1 when all pass), ``lv`` by the
    verifier score, ``pt_lv`` by ``pt x 100 + score``; ``random`` ties every candidate.
    """

    def key(c):
        pub = c["public"]
        total = pub.get("total", len(pub.get("tests", ())))
        pt = 1.0 if c["public_passed"] else pub.get("passed", 0) / max(1, total)
        if mode == "random":
            return 0.0
        if mode == "pt":
            return pt
        if mode == "lv":
            return c["score"]
        return pt * 100.0 + c["score"]

    keys = [key(c) for c in cands]
    best = max(keys)
    tied = [i for i, k in enumerate(keys) if k == best]
    return rng.choice(tied)


def read_finished(path: str | os.PathLike) -> dict[tuple[str, int], dict[str, Any]]:
    """Finished searches in a rollout JSONL, keyed by (problem id, search index).

    A last line cut short by a crash is dropped (and cut from the file), so a restarted run
    appends after the last complete search.
    """
    path = Path(path)
    out: dict[tuple[str, int], dict[str, Any]] = {}
    if not path.exists():
        return out
    data = path.read_bytes()
    good_end = 0
    pos = 0
    for raw in data.splitlines(keepends=True):
        pos += len(raw)
        if not raw.endswith(b"\n"):
            break
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError:
            break
        out[(rec["problem_id"], int(rec["search"]))] = rec
        good_end = pos
    if good_end != len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return out


def run_search(
    problems: Sequence[Problem],
    policy: Policy,
    executor: Executor,
    config: SearchConfig,
    output: str | os.PathLike,
    *,
    scorer: Scorer | None = None,
    feedback_fn: Callable[..., str] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Runs every search of every problem; returns all finished search records.

    Args:
      problems: the problems.
      policy: answers conversations.
      executor: runs programs (``submit(code, tests) -> Future[ExecResult]``).
      config: the search settings.
      output: JSONL file; finished searches already in it are kept and skipped.
      scorer: the learned verifier, needed for the ``lv`` / ``pt_lv`` modes (and, when
        given, recorded for every candidate).
      feedback_fn: ``feedback_fn(result, granularity=..., max_chars=...) -> str`` renders the
        public-test result as text (default: `mucode_jax.execution.feedback.render`).
      progress: called after each policy call with counters (searches done, samples/s).
    """
    if config.select in ("lv", "pt_lv") and scorer is None:
        raise ValueError(f"Selection mode {config.select!r} needs a verifier scorer.")
    if feedback_fn is None:
        from mucode_jax.execution.feedback import render as feedback_fn  # noqa: N813
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise ValueError("Problem ids are not unique; each problem needs its own id.")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    finished = read_finished(output)
    searches = collections.deque(
        _Search(p, i, P.first_turn_messages(p, show_tests=config.show_tests))
        for p in problems
        for i in range(config.num_searches)
        if (p.id, i) not in finished
    )
    total = len(problems) * config.num_searches
    results = list(finished.values())
    pending: list[tuple[_Search, list[Completion], list[tuple[cf.Future, cf.Future]]]] = []
    n_samples = 0
    start = time.monotonic()

    with open(output, "a", encoding="utf-8") as out:

        def first_prompt(search):
            return next(m["content"] for m in search.messages if m["role"] == "user")

        def finish_turn(search, comps, futures, scores):
            cands = []
            for c, (fpub, fpriv) in zip(comps, futures):
                code = P.extract_code(c.text)
                cands.append(_candidate_record(c, code, fpub.result(), fpriv.result()))
            if scores is not None:
                for cand, s in zip(cands, scores):
                    cand["score"] = float(s)
            t = len(search.turns)
            rng = random.Random(_seed(config.seed, search.problem.id, search.index, t, "select"))
            chosen = 0 if len(cands) == 1 else _select(config.select, cands, rng)
            sel = cands[chosen]
            turn = {
                "turn": t + 1,
                "prompt": search.messages[-1]["content"],
                "candidates": cands,
                "selected": chosen,
                "label": sel["label"],
                "public_passed": sel["public_passed"],
            }
            search.turns.append(turn)
            search.messages.append({"role": "assistant", "content": sel["completion"]})
            last = t + 1 >= config.max_turns
            if (config.stop_on_public_pass and sel["public_passed"]) or last:
                search.done = True
                return
            from mucode_jax.execution.results import ExecResult

            text = feedback_fn(
                ExecResult.from_json(sel["public"]),
                granularity=config.granularity,
                max_chars=config.feedback_chars,
            )
            turn["feedback"] = text
            search.messages.append(P.feedback_message(text, style=config.feedback_style))

        def write(search):
            rec = {
                "problem_id": search.problem.id,
                "dataset": search.problem.dataset,
                "search": search.index,
                "num_candidates": config.num_candidates,
                "select": config.select,
                "messages": search.messages,
                "turns": search.turns,
                "labels": [t["label"] for t in search.turns],
                "success": search.turns[-1]["label"],
                "num_turns": len(search.turns),
            }
            out.write(json.dumps(rec) + "\n")
            out.flush()
            results.append(rec)

        def drain(block: bool):
            nonlocal pending
            if not pending:
                return
            if block:
                cf.wait(
                    [f for _, _, fs in pending for pair in fs for f in pair],
                    return_when=cf.FIRST_COMPLETED,
                )
            ready, still = [], []
            for item in pending:
                done = all(f.done() for pair in item[2] for f in pair)
                (ready if done else still).append(item)
            pending = still
            # One verifier call for every candidate of every search whose turn is ready.
            scores: list[Any] = [None] * len(ready)
            if scorer is not None and ready:
                flat = scorer.score(
                    [first_prompt(s) for s, comps, _ in ready for _ in comps],
                    [c.text for _, comps, _ in ready for c in comps],
                )
                pos = 0
                for k, (_, comps, _) in enumerate(ready):
                    scores[k] = flat[pos : pos + len(comps)]
                    pos += len(comps)
            for (search, comps, futures), sc in zip(ready, scores):
                finish_turn(search, comps, futures, sc)
                if search.done:
                    write(search)
                else:
                    searches.append(search)

        while searches or pending:
            if searches:
                per = config.num_candidates
                take = max(1, config.batch_size // per)
                batch = [searches.popleft() for _ in range(min(take, len(searches)))]
                convs = [s.messages for s in batch for _ in range(per)]
                seed = _seed(config.seed, [(s.problem.id, s.index, len(s.turns)) for s in batch])
                comps = policy.complete(convs, seed=seed)
                n_samples += len(comps)
                for j, s in enumerate(batch):
                    mine = comps[j * per : (j + 1) * per]
                    futures = []
                    for c in mine:
                        code = P.extract_code(c.text)
                        futures.append(
                            (
                                executor.submit(
                                    code,
                                    s.problem.public_tests,
                                    trace=config.granularity == "trace",
                                ),
                                executor.submit(code, s.problem.private_tests),
                            )
                        )
                    pending.append((s, mine, futures))
                drain(block=False)
            else:
                drain(block=True)
            if progress is not None:
                elapsed = time.monotonic() - start
                progress(
                    {
                        "done": len(results),
                        "total": total,
                        "samples": n_samples,
                        "samples_per_s": n_samples / max(elapsed, 1e-9),
                        "elapsed_s": elapsed,
                    }
                )
    return results


def turn_labels_by_problem(
    records: Iterable[dict[str, Any]], problem_ids: Sequence[str], num_searches: int
) -> list[list[list[int]]]:
    """``[search][problem][turn]`` oracle labels of the selected programs, for `metrics`."""
    table = {(r["problem_id"], r["search"]): r["labels"] for r in records}
    missing = [(p, s) for s in range(num_searches) for p in problem_ids if (p, s) not in table]
    if missing:
        raise ValueError(
            f"{len(missing)} searches are missing from the records, e.g. {missing[0]}."
        )
    return [[[int(x) for x in table[(p, s)]] for p in problem_ids] for s in range(num_searches)]


# --------------------------------------------------------------------------------------
# A policy backed by our sampler.


class ModelPolicy:
    """Chat conversations -> completions with a tokenizer's chat template and a `Sampler`."""

    def __init__(self, sampler: Any, tokenizer: Any, *, method: Any = None, max_new_tokens=None):
        self.sampler = sampler
        self.tokenizer = tokenizer
        self.method = method
        self.max_new_tokens = max_new_tokens

    def complete(self, conversations, *, seed: int) -> list[Completion]:
        """Samples one assistant message per conversation.

        A conversation longer than the sampler's largest prompt bucket cannot be continued:
        it gets an empty completion (no code, so its search fails that turn) instead of
        failing the whole batch.
        """
        prompts = [
            P.render(self.tokenizer, conv, add_generation_prompt=True) for conv in conversations
        ]
        limit = max(getattr(self.sampler, "prompt_buckets", (float("inf"),)))
        fits = [i for i, p in enumerate(prompts) if len(p) <= limit]
        comps = [Completion("", len(p), 0) for p in prompts]
        if not fits:
            return comps
        out = self.sampler.sample(
            [prompts[i] for i in fits],
            seed=seed,
            method=self.method,
            max_new_tokens=self.max_new_tokens,
        )
        eos = set(self.sampler.eos_ids)
        for i, toks in zip(fits, out.tokens):
            body = [t for t in toks if t not in eos]
            text = self.tokenizer.decode(body, skip_special_tokens=True)
            comps[i] = Completion(text, len(prompts[i]), len(toks))
        return comps
