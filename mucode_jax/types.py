"""Frozen records passed between the stages of the pipeline.

problems -> prompts -> sampler -> executor -> verifier -> relabel -> trainer.

* `Problem`: one task with its public and private test suites.
* `Candidate`, `Turn`, `Trajectory`: what one search of the rollout engine produced — exactly
  what the model saw (the user messages and the prompt token ids) and sampled (completion
  text, token ids and their log-probabilities), what the executor said, and which candidate
  was chosen. `mucode_jax.rollout.run_search` writes them; relabeling, verifier data, metrics
  and the driver read them; `mucode_jax.records` stores them as versioned JSONL.

Test suites travel as JSON-compatible dicts in the executor's schema (see the "Executing
programs" section of the README):

* ``{"kind": "assert", "setup": str, "tests": [str, ...]}`` — assert-style function tests.
* ``{"kind": "stdio", "cases": [{"input": str, "output": str}, ...]}`` — stdin/stdout tests.
* further kinds defined by `mucode_jax.execution` (e.g. MBPP+ input/output comparisons).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mucode_jax.execution.results import ExecResult

TestSuite = dict[str, Any]
Message = dict[str, str]


@dataclasses.dataclass(frozen=True)
class Problem:
    """One programming problem D = (x, public_tests, private_tests).

    Attributes:
      id: unique id within its dataset, e.g. ``"mbpp/601"``.
      dataset: ``"mbpp"``, ``"humaneval"``, ``"mbpp_plus"``, ``"codecontests"`` or ``"toy"``.
      statement: the natural-language task as shown to the model (without tests).
      public_tests: tests the model sees and receives feedback on.
      private_tests: tests that decide correctness (the oracle label needs public AND private).
      public_tests_text: the public tests rendered for the prompt (e.g. the assert lines).
      entry_point: the function the tests call, when the task is function-writing.
      reference: a known-correct solution, when the dataset has one. It is also put into
        each suite that has none (``suite["reference"]``), so that wherever the suites run
        (rollouts, evaluation, the CLI) the executor derives their CPU limits from the
        reference's measured cost: ``max(cpu_seconds, cpu_factor x reference CPU)``.
      metadata: anything else from the source row (difficulty, tags, split, ...).
    """

    id: str
    dataset: str
    statement: str
    public_tests: TestSuite
    private_tests: TestSuite
    public_tests_text: str = ""
    entry_point: str | None = None
    reference: str | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.reference is None:
            return
        for name in ("public_tests", "private_tests"):
            suite = getattr(self, name)
            if isinstance(suite, dict) and suite.get("reference") is None:
                object.__setattr__(self, name, {**suite, "reference": self.reference})


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One sampled assistant message of a turn and what the executor made of it.

    L is the number of sampled tokens. A policy that is not a model (a script, a test double)
    leaves the token fields empty.

    Attributes:
      completion: the assistant message's text (the decoded tokens, end id dropped).
      code: the program extracted from it (`prompts.extract_code`), None when it has none.
      tokens: int [L], the sampled token ids as the sampler returned them, including the end
        id that stopped the row (if it stopped on one).
      logprobs: float [L], log-probability of each token under the model's unmodified
        distribution (temperature 1): what a trainer recomputes from a forward pass.
      sampling_logprobs: float [L], the same under the distribution sampled from (after
        temperature / top-k / top-p): the behaviour policy of an importance ratio.
      public: the result on the public tests (what feedback describes).
      private: the result on the private tests.
      score: the learned verifier's R(x, y) when the search had a scorer, else None
        (later scores live in their own artifact, `records.read_scores`).
    """

    completion: str
    code: str | None
    public: ExecResult
    private: ExecResult
    tokens: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()
    sampling_logprobs: tuple[float, ...] = ()
    score: float | None = None

    @property
    def public_passed(self) -> bool:
        return self.public.passed

    @property
    def label(self) -> bool:
        """The oracle label: the program passes the public and the private tests."""
        return self.public.passed and self.private.passed

    def to_json(self) -> dict[str, Any]:
        return {
            "completion": self.completion,
            "code": self.code,
            "tokens": list(self.tokens),
            "logprobs": list(self.logprobs),
            "sampling_logprobs": list(self.sampling_logprobs),
            "public": self.public.to_json(),
            "private": self.private.to_json(),
            "score": self.score,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Candidate:
        return cls(
            completion=d["completion"],
            code=d["code"],
            public=ExecResult.from_json(d["public"]),
            private=ExecResult.from_json(d["private"]),
            tokens=tuple(d["tokens"]),
            logprobs=tuple(d["logprobs"]),
            sampling_logprobs=tuple(d["sampling_logprobs"]),
            score=d["score"],
        )


@dataclasses.dataclass(frozen=True)
class Turn:
    """One turn of a search: the user message, the candidates sampled for it, the choice.

    Attributes:
      user: the user message's content (turn 1: the first prompt x; later turns: the wrapped
        feedback on the previous turn's selected program).
      prompt_ids: int [P], the token ids the policy was given (the whole conversation so far,
        rendered with the open assistant header); empty for a policy that is not a model.
      candidates: the N candidates sampled from that prompt.
      selected: the index of the candidate that continues the conversation.
      feedback: the feedback body sent after this turn (wrapped, it is the next turn's
        ``user``); None when the search ended here.
      plain: ``user`` without what a Zheng et al. prompt strategy added to it (an instruction
        prompt, a CoT-retry addition; after a reasoning turn: the plain first prompt); None
        when ``user`` is already plain. What multi-turn RFT trains on (`algorithms.rft`).
    """

    user: str
    candidates: tuple[Candidate, ...]
    selected: int = 0
    prompt_ids: tuple[int, ...] = ()
    feedback: str | None = None
    plain: str | None = None

    @property
    def chosen(self) -> Candidate:
        return self.candidates[self.selected]

    @property
    def label(self) -> bool:
        return self.chosen.label

    def to_json(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "prompt_ids": list(self.prompt_ids),
            "candidates": [c.to_json() for c in self.candidates],
            "selected": self.selected,
            "feedback": self.feedback,
            "plain": self.plain,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Turn:
        return cls(
            user=d["user"],
            candidates=tuple(Candidate.from_json(c) for c in d["candidates"]),
            selected=d["selected"],
            prompt_ids=tuple(d["prompt_ids"]),
            feedback=d["feedback"],
            plain=d.get("plain"),
        )


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """The settings that produced a trajectory (what the model was shown and how it chose).

    Attributes:
      select: the selection mode (``random``, ``pt``, ``lv``, ``pt_lv``).
      num_candidates: N, candidates per turn.
      feedback: the feedback's name (`prompts.Feedback.name`: body, wrapper, budget).
      prompt: the prompt strategy (``official``, ``/show_tests=…``, ``/system``, then the Zheng
        et al. `prompts.PromptStrategy.name` when not plain; `rollout.SearchConfig.settings`).
    """

    select: str = "random"
    num_candidates: int = 1
    feedback: str = ""
    prompt: str = ""


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """One finished search of one problem.

    Attributes:
      problem_id: the `Problem.id`.
      dataset: the `Problem.dataset`.
      search: the search index (0..num_searches-1).
      seed: the base seed of the search config (each turn's draws derive from it).
      turns: the turns, in order (at least one).
      settings: what produced it.
      system: the system message before x, if any (the official runs use none).
      preamble: messages between the system message and the first turn's user message: a
        Zheng et al. reasoning turn ``(user: reasoning prompt, assistant: prose)``; empty
        otherwise. Its prose is sampled once per search and never executed.
    """

    problem_id: str
    dataset: str
    search: int
    seed: int
    turns: tuple[Turn, ...]
    settings: SearchSettings = SearchSettings()
    system: str | None = None
    preamble: tuple[Message, ...] = ()

    @property
    def key(self) -> tuple[str, int]:
        return (self.problem_id, self.search)

    @property
    def prompt(self) -> str:
        """The first user prompt x: what the verifier conditions on."""
        return self.turns[0].user

    @property
    def labels(self) -> tuple[bool, ...]:
        """The oracle label of each turn's selected program."""
        return tuple(t.label for t in self.turns)

    @property
    def success(self) -> bool:
        """The final label: the last selected program is correct."""
        return self.turns[-1].label

    def context(self, t: int) -> list[Message]:
        """The conversation before assistant turn ``t`` (0-based): system?, user, ..., user."""
        out = [] if self.system is None else [{"role": "system", "content": self.system}]
        out.extend(dict(m) for m in self.preamble)
        for turn in self.turns[:t]:
            out.append({"role": "user", "content": turn.user})
            out.append({"role": "assistant", "content": turn.chosen.completion})
        out.append({"role": "user", "content": self.turns[t].user})
        return out

    @property
    def messages(self) -> list[Message]:
        """The whole conversation, ending with the last selected assistant message."""
        last = self.turns[-1]
        return [*self.context(len(self.turns) - 1), _assistant(last.chosen.completion)]

    def to_json(self) -> dict[str, Any]:
        return {
            "problem_id": self.problem_id,
            "dataset": self.dataset,
            "search": self.search,
            "seed": self.seed,
            "system": self.system,
            "settings": dataclasses.asdict(self.settings),
            "turns": [t.to_json() for t in self.turns],
            "preamble": [dict(m) for m in self.preamble],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Trajectory:
        return cls(
            problem_id=d["problem_id"],
            dataset=d["dataset"],
            search=d["search"],
            seed=d["seed"],
            turns=tuple(Turn.from_json(t) for t in d["turns"]),
            settings=SearchSettings(**d["settings"]),
            system=d["system"],
            preamble=tuple(dict(m) for m in d.get("preamble", ())),
        )


def _assistant(content: str) -> Message:
    return {"role": "assistant", "content": content}
