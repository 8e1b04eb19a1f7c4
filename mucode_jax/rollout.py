"""The multi-turn rollout engine: generation, execution, feedback, and Best-of-N search.

One engine serves both uses of a generator in μCode:

* **Rollouts** (training data): ``num_searches = N`` independent trajectories per problem,
  one candidate per turn (``num_candidates = 1``), temperature 0.7.
* **Multi-turn Best-of-N** (inference): ``num_searches`` repeated searches (different seeds)
  per problem, ``num_candidates = N`` per turn, one chosen by the learned verifier (``lv``),
  the public tests (``pt``), public tests x 100 + verifier (``pt_lv``) or at random.

Per turn, every candidate's code runs on the public tests (its feedback) and on the private
tests (the oracle label = public and private pass). The selected candidate's feedback
(`prompts.Feedback`: a body inside a wrapper) becomes the next user message; a search stops
when its selected program passes the public tests, or after ``max_turns``.

Execution overlaps generation (`_Scheduler`): candidates are submitted to the executor
service as soon as they are generated, and the engine generates for other searches while
they run. Each finished search is appended to a JSONL file as one `types.Trajectory`
(`mucode_jax.records`); a restarted run reads that file, skips finished searches and redoes
only the others. On several processes each runs its share of the searches with its own
executor, in lock-step with the others for the collective policy and scorer calls
(`run_search`).
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
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import jax

from mucode_jax import multihost, records
from mucode_jax import prompts as P
from mucode_jax.types import Candidate, Message, Problem, SearchSettings, Trajectory, Turn

SELECT_MODES = ("random", "pt", "lv", "pt_lv")


@dataclasses.dataclass(frozen=True)
class Completion:
    """One generated assistant message, with what the sampler returned for it.

    Attributes:
      text: the message (decoded tokens, end id dropped).
      prompt_ids: int [P], the prompt the policy sampled from (empty for a scripted policy).
      tokens: int [L], the sampled ids, end id included (see `Candidate.tokens`).
      logprobs: float [L], per-token log-probabilities under the model (temperature 1).
      sampling_logprobs: float [L], the same under the sampling distribution.
    """

    text: str
    prompt_ids: tuple[int, ...] = ()
    tokens: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()
    sampling_logprobs: tuple[float, ...] = ()


class Policy(Protocol):
    """Anything that answers conversations: a model + tokenizer + sampler, or a script."""

    def complete(
        self, conversations: Sequence[list[dict[str, str]]], *, seeds: Sequence[int]
    ) -> list[Completion]:
        """One completion per conversation; ``seeds[i]`` alone decides conversation ``i``'s
        random draws (whatever else is in the call), so a search replays exactly."""
        ...


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
      feedback: what the model is shown after a turn (a `prompts.Feedback`, or the dict of
        its fields, as configs give it).
      stop_on_public_pass: end a search once its selected program passes the public tests.
      stop_on_correct: end a search once its selected program is correct (public and
        private tests pass): the official rollout script's stop, used for the multi-turn
        Pass@T metrics (with ``stop_on_public_pass=False``).
      show_tests: put the public tests into the first prompt (None: the dataset's default).
      prompt_form: the first prompt's text, ``"stripped"`` or ``"official"`` (the official
        pipeline's character for character; see `prompts.first_turn_prompt`).
      extraction: how a completion becomes a program, ``"fenced"`` (`prompts.extract_code`:
        no fenced block is ``no_code``) or ``"official"`` (`prompts.extract_code_official`:
        the first ```` ```python ```` block, else the raw text).
      prompt: Zheng et al.'s prompt strategy (a `prompts.PromptStrategy` or the dict of its
        fields): a reasoning turn before the code, an instruction prompt, CoT-retry.
      system: a system message before the first prompt (None: none, as the official runs).
      skip_failed: never select a candidate whose program this search already submitted and
        saw fail its public tests, unless every candidate is one (the official search may
        resubmit it; a selector with a fixed preference then spends its later turns on it).
      batch_size: conversations per policy call.
      seed: base seed; each search and turn derive theirs from it.
    """

    num_searches: int = 1
    num_candidates: int = 1
    max_turns: int = 3
    select: str = "random"
    feedback: P.Feedback = P.Feedback()
    stop_on_public_pass: bool = True
    stop_on_correct: bool = False
    show_tests: bool | None = None
    prompt_form: str = "stripped"
    extraction: str = "fenced"
    system: str | None = None
    prompt: P.PromptStrategy = P.PromptStrategy()
    skip_failed: bool = False
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.feedback, Mapping):
            object.__setattr__(self, "feedback", P.Feedback(**self.feedback))
        if isinstance(self.prompt, Mapping):
            object.__setattr__(self, "prompt", P.PromptStrategy(**self.prompt))
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, got {self.max_turns}; set it to 1..T.")
        if self.num_searches < 1 or self.num_candidates < 1:
            raise ValueError(
                f"num_searches and num_candidates must be at least 1, got {self.num_searches} "
                f"and {self.num_candidates}."
            )
        if self.select not in SELECT_MODES:
            raise ValueError(f"Unknown selection mode {self.select!r}; use one of {SELECT_MODES}.")
        if self.prompt_form not in P.PROMPT_FORMS:
            raise ValueError(
                f"Unknown prompt form {self.prompt_form!r}; use one of {P.PROMPT_FORMS}."
            )
        if self.extraction not in P.EXTRACTION_MODES:
            raise ValueError(
                f"Unknown code extraction mode {self.extraction!r}; use one of "
                f"{P.EXTRACTION_MODES}."
            )

    def extract(self, completion: str) -> str | None:
        """The program in a completion, by `extraction`."""
        return P.extract(completion, self.extraction)

    @property
    def settings(self) -> SearchSettings:
        prompt = "official" if self.show_tests is None else f"official/show_tests={self.show_tests}"
        if self.prompt_form != "stripped":
            prompt += f"/form={self.prompt_form}"
        if self.extraction != "fenced":
            prompt += f"/extract={self.extraction}"
        if self.system is not None:
            prompt += "/system"
        if not self.prompt.plain:
            prompt += f"/{self.prompt.name}"
        if self.skip_failed:
            prompt += "/skip_failed"
        return SearchSettings(self.select, self.num_candidates, self.feedback.name, prompt)


def _seed(*parts: Any) -> int:
    h = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).digest()
    return int.from_bytes(h[:4], "little")


def _select(mode: str, cands: Sequence[Candidate], rng: random.Random) -> int:
    """Index of the chosen candidate (ties broken at random).

    ``pt`` ranks by the fraction of public tests passed (1 when all pass), ``lv`` by the
    verifier score, ``pt_lv`` by ``pt x 100 + score``; ``random`` ties every candidate.
    """

    def key(c: Candidate) -> float:
        pt = 1.0 if c.public_passed else c.public.num_passed / max(1, len(c.public.tests))
        if mode == "random":
            return 0.0
        if mode == "pt":
            return pt
        if mode == "lv":
            return c.score
        return pt * 100.0 + c.score

    keys = [key(c) for c in cands]
    best = max(keys)
    tied = [i for i, k in enumerate(keys) if k == best]
    return rng.choice(tied)


@dataclasses.dataclass
class _Search:
    """A search in flight: the conversation so far and its finished turns."""

    problem: Problem
    index: int
    messages: list[Message]
    turns: list[Turn] = dataclasses.field(default_factory=list)
    done: bool = False
    plain: str | None = None  # the plain form of the last user message (Turn.plain)
    code_turn: str | None = None  # after a pending reasoning turn: the code turn's user text
    preamble: tuple[Message, ...] = ()


def _start(problem: Problem, index: int, config: SearchConfig) -> _Search:
    """A new search: its first user message (a reasoning turn if the strategy has one)."""
    messages = P.first_turn_messages(
        problem, system=config.system, show_tests=config.show_tests, form=config.prompt_form
    )
    reasoning, code, plain = config.prompt.opening(problem, messages[-1]["content"])
    messages[-1] = {"role": "user", "content": reasoning if reasoning is not None else code}
    return _Search(
        problem, index, messages, plain=plain, code_turn=code if reasoning is not None else None
    )


@dataclasses.dataclass
class _Generated:
    """One search's turn after generation: its completions and their executor futures."""

    search: _Search
    completions: list[Completion]
    futures: list[tuple[cf.Future, cf.Future]]  # (public, private) per completion

    def ready(self) -> bool:
        return all(f.done() for pair in self.futures for f in pair)


class _Scheduler:
    """Runs searches to completion, overlapping generation with execution.

    Scheduling invariant: after every generation call, whatever turns have finished
    executing are drained (scored, selected, fed back) *without blocking*, so their searches
    rejoin the queue for the next generation call; the scheduler blocks on the executor only
    when no search is waiting to be generated for.

    On several processes (`mucode_jax.multihost`) each runs the searches it owns, with its
    own executor, and all of them move in lock-step rounds, because the policy and the scorer
    are collective (every process must call them equally, with the same inputs). A round:

    1. every process takes its next searches and `multihost.all_gather` exchanges their
       conversations (and whether it still has any search in flight); when no process has,
       all stop together;
    2. if any process has conversations, every process calls the policy once on all of them
       (in process order) and keeps its own slice; its candidates go to its own executor;
    3. every process drains its finished turns (blocking on its executor only when no
       process generated this round), and, with a scorer, the candidates to score are
       exchanged and scored by one collective call.

    Every choice of whether to call the policy or the scorer is made from exchanged values,
    so all processes make the same calls; the only local waits are on a process's own
    executor, which finishes every program within its limits, and every exchange has a
    timeout. With one process the exchange is free and the rounds are the loop above.
    """

    def __init__(self, problems, policy, executor, config, out, scorer, progress, finished,
                 owned=None):  # fmt: skip
        self.policy, self.executor, self.config = policy, executor, config
        self.out, self.scorer, self.progress = out, scorer, progress
        self.waiting = collections.deque(
            _start(p, i, config)
            for p in problems
            for i in range(config.num_searches)
            if (p.id, i) not in finished and (owned is None or (p.id, i) in owned)
        )
        self.running: list[_Generated] = []
        self.results: list[Trajectory] = list(finished.values())
        self.total = len(problems) * config.num_searches
        self.samples = 0
        self.start = time.monotonic()
        self.processes = jax.process_count()
        self.rank = jax.process_index()

    def run(self) -> list[Trajectory]:
        while True:
            batch = self.take()
            c, per = self.config, self.config.num_candidates
            # A pending reasoning turn (Zheng et al.) is one prose completion per search,
            # sampled in the same call as other searches' code turns, and never executed.
            thinking = [s for s in batch if s.code_turn is not None]
            batch = [s for s in batch if s.code_turn is None]
            convs = [s.messages for s in thinking] + [s.messages for s in batch for _ in range(per)]
            # One seed per candidate, from the search alone: its samples do not depend on
            # which other searches share the batch (that depends on the executors' timing).
            seeds = [_seed(c.seed, s.problem.id, s.index, "reasoning") % 2**31 for s in thinking]
            seeds += [
                _seed(c.seed, s.problem.id, s.index, len(s.turns), j) % 2**31
                for s in batch
                for j in range(per)
            ]
            active = bool(thinking or batch or self.waiting or self.running)
            mine = {"convs": convs, "seeds": seeds, "active": active,
                    "done": len(self.results), "samples": self.samples}  # fmt: skip
            peers = multihost.all_gather(mine, "the conversations of a generation round")
            self.report(peers)
            if not any(p["active"] for p in peers):
                return self.results
            everyone = [conv for p in peers for conv in p["convs"]]
            if everyone:
                comps = self.policy.complete(everyone, seeds=[x for p in peers for x in p["seeds"]])
                first = sum(len(p["convs"]) for p in peers[: self.rank])
                self.submit(thinking, batch, comps[first : first + len(convs)])
            self.drain(block=not everyone and bool(self.running))

    def take(self) -> list[_Search]:
        """The searches of this process's share of the next policy call."""
        take = max(1, self.config.batch_size // self.config.num_candidates // self.processes)
        return [self.waiting.popleft() for _ in range(min(take, len(self.waiting)))]

    def submit(
        self, thinking: list[_Search], batch: list[_Search], comps: list[Completion]
    ) -> None:
        """This process's share of one policy call: the reasoning turns of ``thinking`` (their
        searches go back to the front of the queue) and every candidate's code of ``batch``."""
        c = self.config
        per = c.num_candidates
        self.samples += len(comps)
        for s, comp in zip(thinking, comps):
            s.messages.append({"role": "assistant", "content": comp.text})
            s.preamble = tuple(dict(m) for m in s.messages[-2:])
            s.messages.append({"role": "user", "content": s.code_turn})
            s.code_turn = None
            self.waiting.appendleft(s)
        comps = comps[len(thinking) :]
        for j, s in enumerate(batch):
            mine = comps[j * per : (j + 1) * per]
            futures = []
            for comp in mine:
                code = c.extract(comp.text)
                public = self.executor.submit(
                    code, s.problem.public_tests, trace=c.feedback.needs_trace
                )
                futures.append((public, self.executor.submit(code, s.problem.private_tests)))
            self.running.append(_Generated(s, mine, futures))

    def drain(self, block: bool) -> None:
        """Finishes every turn whose programs have all run (waiting for one if ``block``)."""
        if block:
            cf.wait(
                [f for g in self.running for pair in g.futures for f in pair],
                return_when=cf.FIRST_COMPLETED,
            )
        ready, still = [], []
        for g in self.running:  # one pass: a future finishing meanwhile waits for the next
            (ready if g.ready() else still).append(g)
        self.running = still
        scores = self.score(ready)
        for g, sc in zip(ready, scores):
            self.finish_turn(g, sc)
            if g.search.done:
                self.write(g.search)
            else:
                self.waiting.append(g.search)

    def score(self, ready: list[_Generated]) -> list[list[float] | None]:
        """One verifier call for every candidate of every ready turn (of every process)."""
        if self.scorer is None:
            return [None] * len(ready)
        xs = [_first_prompt(g.search.messages) for g in ready for _ in g.completions]
        ys = [c.text for g in ready for c in g.completions]
        peers = multihost.all_gather([xs, ys], "the verifier inputs of a rollout round")
        everyone = [pair for p in peers for pair in zip(*p)]
        flat = self.scorer.score(*map(list, zip(*everyone))) if everyone else []
        first = sum(len(p[0]) for p in peers[: self.rank])
        flat = flat[first : first + len(xs)]
        out, pos = [], 0
        for g in ready:
            out.append(flat[pos : pos + len(g.completions)])
            pos += len(g.completions)
        return out

    def finish_turn(self, g: _Generated, scores: list[float] | None) -> None:
        """Selects a candidate, appends it and (unless the search ends) its feedback."""
        c, s = self.config, g.search
        cands = []
        for k, (comp, (pub, priv)) in enumerate(zip(g.completions, g.futures)):
            cands.append(
                Candidate(
                    completion=comp.text,
                    code=c.extract(comp.text),
                    public=pub.result(),
                    private=priv.result(),
                    tokens=comp.tokens,
                    logprobs=comp.logprobs,
                    sampling_logprobs=comp.sampling_logprobs,
                    score=None if scores is None else float(scores[k]),
                )
            )
        t = len(s.turns)
        rng = random.Random(_seed(c.seed, s.problem.id, s.index, t, "select"))
        eligible = list(range(len(cands)))
        if c.skip_failed:
            picked = [t.candidates[t.selected] for t in s.turns]
            failed = {program_key(x) for x in picked if not x.public_passed}
            eligible = [k for k in eligible if program_key(cands[k]) not in failed] or eligible
        chosen = (
            eligible[0]
            if len(eligible) == 1
            else eligible[_select(c.select, [cands[k] for k in eligible], rng)]
        )
        sel = cands[chosen]
        user = s.messages[-1]["content"]
        s.messages.append({"role": "assistant", "content": sel.completion})
        s.done = (
            (c.stop_on_public_pass and sel.public_passed)
            or (c.stop_on_correct and sel.label)
            or t + 1 >= c.max_turns
        )
        feedback = (
            None
            if s.done
            else c.feedback.text(sel.public, code=sel.code, tests=s.problem.public_tests)
        )
        prompt_ids = g.completions[0].prompt_ids if g.completions else ()
        s.turns.append(Turn(user, tuple(cands), chosen, prompt_ids, feedback, plain=s.plain))
        if feedback is not None:
            content, s.plain = c.prompt.retry(c.feedback.message(feedback)["content"], t + 2)
            s.messages.append({"role": "user", "content": content})

    def write(self, s: _Search) -> None:
        system = s.messages[0]["content"] if s.messages[0]["role"] == "system" else None
        traj = Trajectory(
            problem_id=s.problem.id,
            dataset=s.problem.dataset,
            search=s.index,
            seed=self.config.seed,
            turns=tuple(s.turns),
            settings=self.config.settings,
            system=system,
            preamble=s.preamble,
        )
        records.append_trajectory(self.out, traj)
        self.results.append(traj)

    def report(self, peers: list[dict[str, Any]]) -> None:
        """Calls ``progress`` with the counters of every process (on process 0 only)."""
        if self.progress is None or self.rank != 0:
            return
        elapsed = time.monotonic() - self.start
        samples = sum(p["samples"] for p in peers)
        self.progress(
            {
                "done": sum(p["done"] for p in peers),
                "total": self.total,
                "samples": samples,
                "samples_per_s": samples / max(elapsed, 1e-9),
                "elapsed_s": elapsed,
            }
        )


def program_key(c: Candidate) -> str | None:
    """A candidate's program up to surrounding whitespace (None: no code): what `skip_failed`
    compares."""
    return None if c.code is None else c.code.strip()


def _first_prompt(messages: Sequence[Message]) -> str:
    return next(m["content"] for m in messages if m["role"] == "user")


def read_finished(path: str | os.PathLike) -> dict[tuple[str, int], Trajectory]:
    """Finished searches in a rollout JSONL, keyed by (problem id, search index).

    A last line cut short by a crash is dropped (and cut from the file), so a restarted run
    appends after the last complete search.
    """
    return {t.key: t for t in records.read_trajectories(path, repair=True)}


def run_search(
    problems: Sequence[Problem],
    policy: Policy,
    executor: Executor,
    config: SearchConfig,
    output: str | os.PathLike,
    *,
    scorer: Scorer | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> list[Trajectory]:
    """Runs every search of every problem; returns all finished trajectories, in problem
    and search order (then those of other problems the file held).

    On several processes every process calls it with the same arguments (its own executor):
    the searches are dealt round-robin over the processes, each process appends the ones it
    finishes to its own file beside ``output`` (``NAME.process<i>.jsonl``; process 0 to
    ``output`` itself), the policy and the scorer are called in lock-step (`_Scheduler`),
    and at the end process 0 merges everything into ``output`` while the others wait; every
    process returns all trajectories. ``output`` must be on a filesystem all processes share.

    Args:
      problems: the problems.
      policy: answers conversations.
      executor: runs programs (``submit(code, tests) -> Future[ExecResult]``).
      config: the search settings.
      output: JSONL file; finished searches already in it are kept and skipped.
      scorer: the learned verifier, needed for the ``lv`` / ``pt_lv`` modes (and, when
        given, recorded for every candidate).
      progress: called after each policy call with counters (searches done, samples/s),
        on process 0 only.
    """
    if config.select in ("lv", "pt_lv") and scorer is None:
        raise ValueError(f"Selection mode {config.select!r} needs a verifier scorer.")
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise ValueError("Problem ids are not unique; each problem needs its own id.")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    n, rank = jax.process_count(), jax.process_index()
    keys = [(p.id, i) for p in problems for i in range(config.num_searches)]
    owned = {k for j, k in enumerate(keys) if j % n == rank}  # round-robin over processes
    finished: dict[tuple[str, int], Trajectory] = {}
    for path in [output, *_shards(output)]:  # shards: from a run on several processes
        finished.update(read_finished(path))
    multihost.barrier(f"{output.name} read")  # before any process appends to its file
    mine = output if rank == 0 else _shard(output, rank)
    with open(mine, "a", encoding="utf-8") as out:
        sched = _Scheduler(
            problems,
            policy,
            executor,
            config,
            out,
            scorer,
            progress,
            {k: t for k, t in finished.items() if k in owned},
            owned,
        )
        sched.run()
    return _merge(output, keys)


def _shard(output: Path, rank: int) -> Path:
    """The file process ``rank`` (> 0) appends its finished searches to, beside ``output``."""
    return output.with_name(f"{output.stem}.process{rank}{output.suffix}")


def _shards(output: Path) -> list[Path]:
    return sorted(output.parent.glob(f"{output.stem}.process*{output.suffix}"))


def _merge(output: Path, keys: Sequence[tuple[str, int]]) -> list[Trajectory]:
    """Every process's finished searches, in problem and search order; process 0 rewrites
    ``output`` in that order and removes the shards (the others wait at a barrier).

    The order makes the file, and every stage that reads it, independent of which search
    finished first and of how many processes ran them.
    """
    multihost.barrier(f"{output.name} searched")
    found: dict[tuple[str, int], Trajectory] = {}
    for path in [output, *_shards(output)]:
        found.update(read_finished(path))
    wanted = set(keys)
    records_ = [found[k] for k in keys if k in found]
    records_ += [t for k, t in found.items() if k not in wanted]  # other problems': kept
    multihost.barrier(f"{output.name} read back")  # before process 0 rewrites the files
    if multihost.is_main():
        records.write_trajectories(output, records_)
        for path in _shards(output):
            path.unlink()
    multihost.barrier(f"{output.name} merged")
    return records_


def turn_labels_by_problem(
    trajectories: Iterable[Trajectory], problem_ids: Sequence[str], num_searches: int
) -> list[list[list[int]]]:
    """``[search][problem][turn]`` oracle labels of the selected programs, for `metrics`."""
    table = {t.key: t.labels for t in trajectories}
    missing = [(p, s) for s in range(num_searches) for p in problem_ids if (p, s) not in table]
    if missing:
        raise ValueError(
            f"{len(missing)} searches are missing from the records, e.g. {missing[0]}."
        )
    return [[[int(x) for x in table[(p, s)]] for p in problem_ids] for s in range(num_searches)]


# --------------------------------------------------------------------------------------
# A policy backed by our sampler.


class ModelPolicy:
    """Chat conversations -> completions with a tokenizer's chat template and a `Sampler`.

    Each `Completion` keeps what the sampler returned (prompt ids, sampled ids, log-probs),
    so the trajectories can be trained on without encoding their text again.
    """

    def __init__(self, sampler: Any, tokenizer: Any, *, method: Any = None, max_new_tokens=None):
        self.sampler = sampler
        self.tokenizer = tokenizer
        self.method = method
        self.max_new_tokens = max_new_tokens

    def complete(self, conversations, *, seeds: Sequence[int]) -> list[Completion]:
        """Samples one assistant message per conversation (``seeds``: one per conversation,
        the sampler's row seeds).

        A conversation longer than the sampler's largest prompt bucket cannot be continued:
        it gets an empty completion (no code, so its search fails that turn) instead of
        failing the whole batch.
        """
        prompts = [
            P.render(self.tokenizer, conv, add_generation_prompt=True) for conv in conversations
        ]
        limit = max(getattr(self.sampler, "prompt_buckets", (float("inf"),)))
        fits = [i for i, p in enumerate(prompts) if len(p) <= limit]
        comps = [Completion("", tuple(p)) for p in prompts]
        if not fits:
            return comps
        out = self.sampler.sample(
            [prompts[i] for i in fits],
            seed=0,
            row_seeds=[seeds[i] for i in fits],
            method=self.method,
            max_new_tokens=self.max_new_tokens,
        )
        eos = set(self.sampler.eos_ids)
        for j, i in enumerate(fits):
            toks = out.tokens[j]
            body = [t for t in toks if t not in eos]
            comps[i] = Completion(
                text=self.tokenizer.decode(body, skip_special_tokens=True),
                prompt_ids=tuple(prompts[i]),
                tokens=tuple(int(t) for t in toks),
                logprobs=tuple(float(x) for x in out.logprobs[j]),
                sampling_logprobs=tuple(float(x) for x in out.sampling_logprobs[j]),
            )
        return comps
