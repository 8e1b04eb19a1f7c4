"""Chat messages, rendering through the tokenizer's own chat template, and code extraction.

Pure Python (plus NumPy for the loss mask). Everything the model reads is built here:

* first-turn user prompts per dataset (the official μCode / RLEF wording);
* feedback turns: μCode's ``"Feedback: {text}"`` and RLEF's ``"{text} Give it another try."``
  (the feedback *text* itself comes from `mucode_jax.execution.feedback` as a plain string);
  `Feedback` names a body and a wrapper, exactly what a rollout shows the model;
* `render_verifier_input`: the learned verifier's input ``[user x, assistant y]``;
* Zheng et al.'s reasoning / instruction prompts and CoT-retry suffixes (texts ours, names the
  paper's), `PromptRegistry` (replaceable texts) and `PromptStrategy` (what a search uses);
* `render` / `render_with_mask`: token ids through ``tokenizer.apply_chat_template`` and the
  per-token mask of assistant tokens that the SFT trainer uses as its loss mask;
* `extract_code`: the program inside a completion, or ``None`` (the executor's ``no_code``).

A message is a plain ``{"role": "user" | "assistant" | "system", "content": str}`` dict, the
format every HF chat template takes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mucode_jax.execution import feedback as F
from mucode_jax.execution.results import ExecResult
from mucode_jax.types import Problem

Message = dict[str, str]

# ---------------------------------------------------------------------------------------------
# First turn.
# ---------------------------------------------------------------------------------------------

# Official μCode (commit0 `generate_prompt`), used for MBPP, MBPP+ and HumanEval.
FUNCTION_PROMPT = """Write a Python function implementation for the following prompt:

{statement}

Your code should satisfy these tests:

{tests}

Return only the implementation code, no tests or explanations. Be sure to include the relevant \
import statements:
```python
code
```
"""

# Official μCode variant without tests (the "POMDP" ablation of the μCode rebuttal): used when a
# problem has no rendered public tests.
FUNCTION_PROMPT_NO_TESTS = """Write a Python function implementation for the following prompt:

{statement}

Return only the implementation code, no tests or explanations. Be sure to include the relevant \
import statements:
```python
code
```
"""

# RLEF / official μCode CodeContests prompt (stdin/stdout programs).
CODECONTESTS_PROMPT = """Provide a Python solution for the following competitive programming \
question: {statement}
Your code should be enclosed in triple backticks like so: ```python YOUR CODE HERE```. Use the \
backticks for your code only."""

# The official μCode CodeContests prompt, character for character: a leading newline, a literal
# backslash-dollar before the statement, a full stop after it and a trailing newline.
CODECONTESTS_PROMPT_OFFICIAL = (
    "\nProvide a Python solution for the following competitive programming question: "
    "\\${statement}.\nYour code should be enclosed in triple backticks like so: ```python YOUR "
    "CODE HERE```. Use the backticks for your code only.\n"
)
PROMPT_FORMS = ("official", "stripped")

# The CPU demo's synthetic tasks: short, so a few-million-parameter model learns the format. The
# public test is deliberately not shown (see `mucode_jax.data.toy`): it comes back as feedback.
TOY_PROMPT = "{statement}\nAnswer with ```python code```."
TOY_PROMPT_WITH_TESTS = "{statement}\nTests:\n{tests}\nAnswer with ```python code```."

# Problem.dataset values with a prompt (loader names such as mbpp_sanitized map onto these).
_PROMPTED = ("mbpp", "mbpp_plus", "humaneval", "codecontests", "toy")
_FUNCTION_DATASETS = ("mbpp", "mbpp_plus", "humaneval")


def first_turn_prompt(
    problem: Problem, *, show_tests: bool | None = None, form: str = "stripped"
) -> str:
    """The first user message's text for ``problem``, in its dataset's official wording.

    Args:
      problem: any `Problem`; uses ``dataset``, ``statement`` and ``public_tests_text``.
      show_tests: include ``public_tests_text`` in the prompt. Default: yes for MBPP, MBPP+ and
        HumanEval when the text is non-empty (as the official code); for ``toy``, what
        ``metadata["show_tests"]`` says (the demo's ``"shown"`` variant: yes; otherwise the
        public test is revealed only through execution feedback); CodeContests statements
        already contain their examples, so the flag is ignored there.
      form: ``"stripped"`` (statement and tests stripped of surrounding whitespace; the
        CodeContests prompt without the official quirks) or ``"official"`` (the official
        pipeline's text exactly: statement and tests as the dataset has them, e.g. MBPP's
        ``test_setup_code`` line before the asserts, and CodeContests'
        `CODECONTESTS_PROMPT_OFFICIAL`).

    Returns:
      The prompt text.

    Raises:
      ValueError: for an unknown ``problem.dataset``.
    """
    if form not in PROMPT_FORMS:
        raise ValueError(f"Unknown prompt form {form!r}; use one of {', '.join(PROMPT_FORMS)}.")
    dataset = problem.dataset
    tests = problem.public_tests_text.strip()
    statement = problem.statement.strip()
    official = form == "official"
    if dataset in _FUNCTION_DATASETS:
        if show_tests is None:
            show_tests = bool(tests)
        if official:
            statement, tests = problem.statement, problem.public_tests_text
        if show_tests:
            return FUNCTION_PROMPT.format(statement=statement, tests=tests)
        return FUNCTION_PROMPT_NO_TESTS.format(statement=statement)
    if dataset == "codecontests":
        if official:
            return CODECONTESTS_PROMPT_OFFICIAL.format(statement=problem.statement)
        return CODECONTESTS_PROMPT.format(statement=statement)
    if dataset == "toy":
        if show_tests is None:  # the "shown" variant's problems say so in their metadata
            show_tests = bool(problem.metadata.get("show_tests", False))
        if show_tests and tests:
            return TOY_PROMPT_WITH_TESTS.format(statement=statement, tests=tests)
        return TOY_PROMPT.format(statement=statement)
    raise ValueError(
        f"Unknown dataset {dataset!r} for problem {problem.id!r}; "
        f"use one of {', '.join(_PROMPTED)} as Problem.dataset."
    )


def first_turn_messages(
    problem: Problem,
    *,
    system: str | None = None,
    show_tests: bool | None = None,
    form: str = "stripped",
) -> list[Message]:
    """The conversation before the first assistant turn: ``[system?, user]``.

    Args:
      problem: the problem.
      system: optional system message (the official runs use none).
      show_tests, form: see `first_turn_prompt`.
    """
    messages = [] if system is None else [{"role": "system", "content": system}]
    text = first_turn_prompt(problem, show_tests=show_tests, form=form)
    messages.append({"role": "user", "content": text})
    return messages


# ---------------------------------------------------------------------------------------------
# Feedback turns.
# ---------------------------------------------------------------------------------------------

RLEF_RETRY = "Give it another try."
RLEF_FORMAT_REMINDER = (
    "Your code should be enclosed in triple backticks like so: ```python YOUR CODE HERE```. "
    "Use the backticks for your code only."
)


def _check_feedback(feedback: str) -> str:
    if not isinstance(feedback, str):
        raise TypeError(
            f"Feedback must be the feedback text (str), got {type(feedback).__name__}; "
            "render it with mucode_jax.execution.feedback first."
        )
    return feedback.strip()


def mucode_feedback_message(feedback: str) -> Message:
    """μCode's feedback turn: ``"Feedback: {text}"`` (official `generate_rollouts_script`).

    Args:
      feedback: the public-test result as text: an error / traceback / failed-test report, or
        `mucode_jax.execution.feedback.PASSED_TEXT`.
    """
    return {"role": "user", "content": f"Feedback: {_check_feedback(feedback)}"}


def rlef_feedback_message(feedback: str, *, remind_format: bool = True) -> Message:
    """RLEF's feedback turn: the failed-test report, then "Give it another try.".

    Args:
      feedback: the report, e.g. "Your code failed the following tests: - input `…` failed: …".
      remind_format: repeat the code-fence instruction of the first prompt (RLEF does, so that
        the model keeps answering with a single fenced block).
    """
    content = f"{_check_feedback(feedback)}\n\n{RLEF_RETRY}"
    if remind_format:
        content += f"\n{RLEF_FORMAT_REMINDER}"
    return {"role": "user", "content": content}


def feedback_message(feedback: str, style: Literal["mucode", "rlef"] = "mucode") -> Message:
    """The feedback turn in a style: `mucode_feedback_message` or `rlef_feedback_message`."""
    if style == "mucode":
        return mucode_feedback_message(feedback)
    if style == "rlef":
        return rlef_feedback_message(feedback)
    raise ValueError(f"Unknown feedback style {style!r}; use 'mucode' or 'rlef'.")


FEEDBACK_BODIES = (*F.GRANULARITIES, "mucode", "rlef", "official")
FEEDBACK_WRAPPERS = ("mucode", "rlef")


@dataclasses.dataclass(frozen=True)
class Feedback:
    """Exactly what the model is shown after a turn: a body inside a wrapper.

    Attributes:
      body: how the public-test result becomes text: a granularity of
        `mucode_jax.execution.feedback.render` (``binary``, ``failed``, ``failed_and_passed``,
        ``trace``), ``official`` (the official μCode pipeline's body: the raw stderr of the
        public-test script, `mucode_jax.execution.feedback.official`), ``mucode`` (our reading
        of it: the failing assert and the value the code returned) or ``rlef`` (RLEF's
        failed-test template).
      wrapper: the user turn around the body: ``mucode`` (``"Feedback: {body}"``) or ``rlef``
        (``"{body}\n\nGive it another try."`` and the format reminder).
      max_chars: the body's character budget (head and tail kept).
    """

    body: str = "failed"
    wrapper: str = "mucode"
    max_chars: int = 2000

    def __post_init__(self):
        if self.body not in FEEDBACK_BODIES:
            raise ValueError(
                f"Unknown feedback body {self.body!r}; use one of {', '.join(FEEDBACK_BODIES)}."
            )
        if self.wrapper not in FEEDBACK_WRAPPERS:
            raise ValueError(f"Unknown feedback wrapper {self.wrapper!r}; use 'mucode' or 'rlef'.")

    @property
    def name(self) -> str:
        """``body/wrapper/max_chars``, stored in every trajectory's settings."""
        return f"{self.body}/{self.wrapper}/{self.max_chars}"

    @property
    def needs_trace(self) -> bool:
        """Whether the executor must record a line trace (``submit(..., trace=True)``)."""
        return self.body == "trace"

    def text(
        self,
        result: ExecResult,
        *,
        code: str | None = None,
        tests: Mapping[str, Any] | None = None,
    ) -> str:
        """The body for a public-test result.

        Args:
          code, tests: the program and the public suite it ran on; the ``official`` body needs
            them for the script's line numbers and asserts (the other bodies ignore them).
        """
        if self.body == "official":
            return F.official(result, code, tests, max_chars=self.max_chars)
        if self.body == "mucode":
            return F.mucode(result, max_chars=self.max_chars)
        if self.body == "rlef":
            return F.rlef(result, max_chars=self.max_chars)
        return F.render(result, self.body, max_chars=self.max_chars)

    def message(self, text: str) -> Message:
        """The user turn that carries a body."""
        return feedback_message(text, self.wrapper)


# ---------------------------------------------------------------------------------------------
# Zheng et al. (ICLR 2025): reasoning prompts (NL -> NL), instruction prompts (NL -> code),
# CoT-retry. The paper's exact wording is not available offline: these texts are ours, written
# from the paper's one-line descriptions; the names are the paper's strategies. Any text can be
# replaced per run (`PromptRegistry.with_overrides`, `PromptStrategy(texts=...)`: a dict or a
# JSON file). The default texts are also part of the demo tokenizer's corpus
# (`mucode_jax.data.toy.toy_corpus`): editing them here changes the demo's tokenizer.
# ---------------------------------------------------------------------------------------------

REASONING_PROMPTS: dict[str, str] = {
    "self_reflection": (
        "Reflect on the problem and describe it in your own words, in bullet points. Pay "
        "attention to small details, nuances, notes and examples in the problem statement."
    ),
    "explain_io": (
        "Explain, for each of the given input/output examples, why the input leads to that output."
    ),
    "problem_tag": (
        "Name the algorithmic topics this problem belongs to (for example: greedy, dynamic "
        "programming, graphs, combinatorics, math, strings, data structures)."
    ),
    "difficulty": (
        "Estimate the difficulty of this problem and list the edge cases a correct solution "
        "must handle."
    ),
    "nl_solution": (
        "Describe a naive solution in natural language, then explain how to improve it into an "
        "efficient one that fits the constraints."
    ),
    "multiple_solutions": (
        "Propose several different ways to solve the problem, with their time complexity, and "
        "say which one you would choose."
    ),
    "helper_docstrings": (
        "List the helper functions you will need: for each, its signature and a docstring that "
        "says what it does. Do not implement them yet."
    ),
    "intermediate_variables": (
        "List the intermediate variables you will need: for each, its name, its type and what "
        "it holds."
    ),
}

INSTRUCTION_PROMPTS: dict[str, str] = {
    "none": "",
    "helper_functions": (
        "Split your code into helper functions with meaningful names and short bodies."
    ),
    "check_constraints": (
        "Check the input constraints carefully and initialise every variable before using it."
    ),
    "comment_lines": "Add a comment to every line of your code.",
    "docstrings": "Write a docstring for every function you define.",
    "weak_solution": (
        "First write a simple, possibly slow solution, then improve it into an efficient algorithm "
        "and give only the improved code."
    ),
}

# CoT-retry: turn 1 has no reasoning prompt; the retry turns add these (keyed by turn, 1-based).
COT_RETRY_SUFFIXES: dict[int, str] = {
    1: "",
    2: (
        "Write a code solution with guidelines: first give short guidelines for a correct "
        "approach, then the code."
    ),
    3: (
        "Generate a naive solution: write the simplest correct solution first, even if it is "
        "slow, then the code."
    ),
}

# A reasoning prompt is its own NL -> NL turn: the first prompt, the reasoning prompt and this
# note; the model answers in prose, then the code turn asks for the program.
REASONING_NOTE = "Answer in natural language only; do not write the code yet."
CODE_TURN = "Now write the code that solves the problem."
# The answer format the code turn repeats, per dataset (the first prompt's own wording).
CODE_FORMATS: dict[str, str] = {
    "mbpp": (
        "Return only the implementation code, no tests or explanations. Be sure to include the "
        "relevant import statements:\n```python\ncode\n```"
    ),
    "codecontests": RLEF_FORMAT_REMINDER,
    "toy": "Answer with ```python code```.",
}
CODE_FORMATS["mbpp_plus"] = CODE_FORMATS["humaneval"] = CODE_FORMATS["mbpp"]


def _join(*parts: str) -> str:
    return "\n\n".join(p.strip() for p in parts if p and p.strip())


@dataclasses.dataclass(frozen=True)
class PromptRegistry:
    """The texts of Zheng et al.'s prompts, by name (defaults: the module constants).

    Attributes:
      reasoning: the 8 reasoning prompts (`REASONING_PROMPTS`' names).
      instruction: the 6 instruction prompts (`INSTRUCTION_PROMPTS`' names; ``none`` is empty).
      cot_retry: the CoT-retry additions by 1-based turn (turn 1: empty; turns past the last key
        reuse the last one).
      reasoning_note: closes the reasoning turn (asks for prose, no code).
      code_turn: the code turn's request after a reasoning turn.
      code_formats: the answer format the code turn repeats, by dataset.
    """

    reasoning: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: dict(REASONING_PROMPTS)
    )
    instruction: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: dict(INSTRUCTION_PROMPTS)
    )
    cot_retry: Mapping[int, str] = dataclasses.field(
        default_factory=lambda: dict(COT_RETRY_SUFFIXES)
    )
    reasoning_note: str = REASONING_NOTE
    code_turn: str = CODE_TURN
    code_formats: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(CODE_FORMATS))

    def with_overrides(self, overrides: Mapping[str, Any] | str | os.PathLike | None):
        """A copy with some texts replaced (names stay the paper's; none can be added).

        Args:
          overrides: ``{"reasoning": {name: text}, "instruction": {name: text}, "cot_retry":
            {turn: text}, "reasoning_note": text, "code_turn": text, "code_formats": {dataset:
            text}}`` (any subset), or the path of a JSON file holding that object; ``None`` or
            ``{}``: no change.

        Raises:
          ValueError: an unreadable file, an unknown section or name, or a non-string text.
        """
        if overrides is None:
            return self
        if isinstance(overrides, (str, os.PathLike)):
            path = Path(overrides)
            try:
                overrides = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                raise ValueError(
                    f"Cannot read the prompt texts file {str(path)!r} ({e}); give a JSON object "
                    'such as {"reasoning": {"self_reflection": "..."}}.'
                ) from None
        if not isinstance(overrides, Mapping):
            raise ValueError(
                f"Prompt overrides must be a dict or a JSON file path, got {type(overrides).__name__}."
            )
        fields = {f.name for f in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        for section, value in overrides.items():
            if section not in fields:
                raise ValueError(
                    f"Unknown prompt section {section!r}; use one of {', '.join(sorted(fields))}."
                )
            current = getattr(self, section)
            if isinstance(current, str):
                if not isinstance(value, str):
                    raise ValueError(f"Prompt text {section!r} must be a string.")
                changes[section] = value
                continue
            if not isinstance(value, Mapping):
                raise ValueError(f"Prompt section {section!r} must map names to texts.")
            merged = dict(current)
            for name, text in value.items():
                key = int(name) if section == "cot_retry" else name
                if key not in current:
                    raise ValueError(
                        f"Unknown {section} prompt {name!r}; replace one of "
                        f"{', '.join(str(k) for k in current)} (the names are the paper's)."
                    )
                if not isinstance(text, str):
                    raise ValueError(f"The text of {section} prompt {name!r} must be a string.")
                merged[key] = text
            changes[section] = merged
        return dataclasses.replace(self, **changes)

    def retry_text(self, turn: int) -> str:
        """The CoT-retry addition of 1-based ``turn`` (later turns reuse the last one)."""
        return self.cot_retry[min(turn, max(self.cot_retry))]


@dataclasses.dataclass(frozen=True)
class PromptStrategy:
    """How a search prompts the model, in Zheng et al.'s terms (default: the plain prompts).

    Attributes:
      reasoning: a reasoning prompt's name, or None. It is its own NL -> NL turn before the
        code turn: ``[user: first prompt + reasoning prompt + note, assistant: prose, user: code
        request + instruction + answer format]``, then the code turns as usual.
      instruction: an instruction prompt's name (``none``: nothing), added to the code turn.
      cot_retry: CoT-retry: turn 1 plain, turn 2's feedback adds the "write code solution with
        guidelines" text, turn 3's the "generate a naive solution" text.
      texts: replacements of prompt texts (`PromptRegistry.with_overrides`: a dict or the path
        of a JSON file).
    """

    reasoning: str | None = None
    instruction: str = "none"
    cot_retry: bool = False
    texts: Mapping[str, Any] | str = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.reasoning == "none" or self.reasoning == "":
            object.__setattr__(self, "reasoning", None)
        reg = self.registry
        if self.reasoning is not None and self.reasoning not in reg.reasoning:
            raise ValueError(
                f"Unknown reasoning prompt {self.reasoning!r}; use None or one of "
                f"{', '.join(reg.reasoning)}."
            )
        if self.instruction not in reg.instruction:
            raise ValueError(
                f"Unknown instruction prompt {self.instruction!r}; use one of "
                f"{', '.join(reg.instruction)}."
            )
        if self.cot_retry and (self.reasoning is not None or self.instruction != "none"):
            raise ValueError(
                "CoT-retry's first turn is the plain prompt; set reasoning=None and "
                "instruction='none' with cot_retry=True."
            )

    @property
    def registry(self) -> PromptRegistry:
        return PromptRegistry().with_overrides(self.texts or None)

    @property
    def plain(self) -> bool:
        return self.reasoning is None and self.instruction == "none" and not self.cot_retry

    @property
    def name(self) -> str:
        """E.g. ``reasoning=explain_io/instruction=docstrings`` or ``cot_retry``; ``""`` if plain."""
        parts = []
        if self.reasoning is not None:
            parts.append(f"reasoning={self.reasoning}")
        if self.instruction != "none":
            parts.append(f"instruction={self.instruction}")
        if self.cot_retry:
            parts.append("cot_retry")
        if self.texts:
            blob = json.dumps(
                self.texts if isinstance(self.texts, str) else dict(self.texts), sort_keys=True
            )
            parts.append(f"texts={hashlib.sha256(blob.encode()).hexdigest()[:8]}")
        return "/".join(parts)

    def opening(self, problem: Problem, first_prompt: str) -> tuple[str | None, str, str | None]:
        """The user messages before the first code turn.

        Args:
          problem: the problem (its dataset picks the code turn's answer format).
          first_prompt: the plain first prompt (`first_turn_prompt`).

        Returns:
          ``(reasoning_turn, code_turn, plain)``: the reasoning turn's text (None without a
          reasoning prompt), the first code turn's user text, and the plain first prompt that
          stripping the strategy leaves (None when the code turn already is it).
        """
        reg = self.registry
        instruction = reg.instruction[self.instruction]
        if self.reasoning is None:
            if not instruction.strip():
                return None, first_prompt, None
            return None, _join(first_prompt, instruction), first_prompt
        reasoning = _join(first_prompt, reg.reasoning[self.reasoning], reg.reasoning_note)
        fmt = reg.code_formats.get(problem.dataset, "")
        return reasoning, _join(reg.code_turn, instruction, fmt), first_prompt

    def retry(self, feedback_content: str, turn: int) -> tuple[str, str | None]:
        """The user text before 1-based ``turn`` (>= 2) and its plain form (None if the same)."""
        if not self.cot_retry:
            return feedback_content, None
        return _join(feedback_content, self.registry.retry_text(turn)), feedback_content


def compose_turn(text: str, *, reasoning: str | None = None, instruction: str | None = None) -> str:
    """Appends a Zheng et al. reasoning and/or instruction prompt to a user turn's text.

    A one-message shortcut; the rollout engine runs the reasoning prompt as its own turn before
    the code turn (`PromptStrategy`), as the paper does.

    Args:
      text: the base text (a first-turn prompt or a feedback turn's content).
      reasoning: a key of `REASONING_PROMPTS` or ``None``.
      instruction: a key of `INSTRUCTION_PROMPTS` or ``None`` / ``"none"``.
    """
    parts = [text.rstrip()]
    if reasoning is not None:
        if reasoning not in REASONING_PROMPTS:
            raise ValueError(
                f"Unknown reasoning prompt {reasoning!r}; use one of {sorted(REASONING_PROMPTS)}."
            )
        parts.append(REASONING_PROMPTS[reasoning])
    if instruction is not None:
        if instruction not in INSTRUCTION_PROMPTS:
            raise ValueError(
                f"Unknown instruction prompt {instruction!r}; use one of "
                f"{sorted(INSTRUCTION_PROMPTS)}."
            )
        if INSTRUCTION_PROMPTS[instruction]:
            parts.append(INSTRUCTION_PROMPTS[instruction])
    return "\n\n".join(parts)


def cot_retry_message(
    feedback: str, turn: int, style: Literal["mucode", "rlef"] = "mucode"
) -> Message:
    """The user message before turn ``turn`` (2, 3, …) of a CoT-retry episode.

    The feedback turn of the given style, followed by the turn's CoT-retry suffix; turns past 3
    reuse turn 3's ("generate naive solution").

    Raises:
      ValueError: for ``turn < 2`` (turn 1 is the first prompt, which has no feedback).
    """
    if turn < 2:
        raise ValueError(
            f"CoT-retry feedback turns start at turn 2, got turn={turn}; "
            "turn 1 is first_turn_messages(problem)."
        )
    message = feedback_message(feedback, style)
    content, _ = PromptStrategy(cot_retry=True).retry(message["content"], turn)
    return {"role": "user", "content": content}


# ---------------------------------------------------------------------------------------------
# Rendering and loss masks.
# ---------------------------------------------------------------------------------------------


def _check_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if not messages:
        raise ValueError(
            "The conversation is empty; pass at least one {'role', 'content'} message."
        )
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise ValueError(
                f"Message {i} is not a {{'role': ..., 'content': ...}} dict: {m!r:.80}; "
                "build messages with mucode_jax.prompts."
            )
        out.append(dict(m))
    return out


def render(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    add_generation_prompt: bool = True,
    *,
    sanitize: bool = True,
    **template_kwargs: Any,
) -> list[int]:
    """Token ids of a conversation through the tokenizer's own chat template.

    Args:
      tokenizer: a Hugging Face tokenizer with a ``chat_template`` (Meta's Llama 3 or
        `mucode_jax.data.tokenizer.build_tokenizer`'s).
      messages: the conversation.
      add_generation_prompt: append the open assistant header, for sampling the next turn.
      sanitize: encode special-token strings that appear inside message contents as plain text
        (``sanitize_control_tokens``), so executed programs cannot forge turn boundaries by
        printing ``<|eot_id|>``. Use the same setting for training and sampling.
      **template_kwargs: passed to the template (e.g. ``date_string`` for Llama 3.1+ templates,
        whose system header otherwise contains today's date).

    Returns:
      The ids, BOS included (the template writes it), shape [T].
    """
    messages = _check_messages(messages)
    ids = tokenizer.apply_chat_template(
        messages,
        add_generation_prompt=add_generation_prompt,
        tokenize=True,
        return_dict=False,
        sanitize_control_tokens=sanitize,
        **template_kwargs,
    )
    return [int(i) for i in ids]


def render_verifier_input(tokenizer: Any, prompt: str, response: str) -> list[int]:
    """The learned verifier's input: ``[user: x, assistant: y]`` through the chat template.

    The one definition that verifier training (`data.verifier_data`) and scoring
    (`scoring.VerifierScorer`) share: the verifier sees the first prompt x and one program y,
    never the history between them.
    """
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    return render(tokenizer, messages, add_generation_prompt=False)


def render_with_mask(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    *,
    train_on: Literal["final", "all"] = "final",
    sanitize: bool = True,
    **template_kwargs: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of a whole conversation and the mask of the assistant tokens to train on.

    The SFT loss mask. An assistant span is the tokens of its content *and* the end-of-turn
    token that closes it (``<|eot_id|>`` for Llama 3): the model must learn to stop. The
    assistant header (``<|start_header_id|>assistant<|end_header_id|>\\n\\n``) is prompt, as it
    is what `render(..., add_generation_prompt=True)` feeds the sampler. Tokens that a template
    writes after the end-of-turn token (e.g. Qwen's newline) are not targets.

    Spans come from re-rendering each prefix of the conversation: the span of assistant message
    i is ``render(messages[:i], add_generation_prompt=True)`` .. ``render(messages[:i+1],
    add_generation_prompt=False)``, and each such prefix must be a token prefix of the whole
    rendering (checked; a template that rewrites earlier turns, such as one that drops past
    reasoning, raises instead of producing a silently shifted mask).

    Args:
      tokenizer: a Hugging Face tokenizer with a chat template.
      messages: the conversation; at least one assistant message, not first.
      train_on: ``"final"``: only the last assistant message (μCode / official SFT);
        ``"all"``: every assistant message (multi-turn RFT on whole trajectories).
      sanitize: see `render`.
      **template_kwargs: see `render`.

    Returns:
      ``(ids, mask)``: int32 [T] and bool [T]; ``mask[t]`` says whether ``ids[t]`` is a target.
      Trainers predicting ``ids[t]`` from ``ids[:t]`` use ``mask[1:]`` against ``logits[:-1]``.

    Raises:
      ValueError: for an empty conversation, no assistant message, an assistant message first,
        an unknown ``train_on``, or a template whose renderings of prefixes are not prefixes.
    """
    messages = _check_messages(messages)
    if train_on not in ("final", "all"):
        raise ValueError(f"train_on must be 'final' or 'all', got {train_on!r}.")
    assistant = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not assistant:
        raise ValueError(
            "The conversation has no assistant message, so nothing to train on; "
            "append the completion as {'role': 'assistant', 'content': ...}."
        )
    if assistant[0] == 0:
        raise ValueError(
            "The conversation starts with an assistant message; put the user prompt first."
        )
    kw = dict(sanitize=sanitize, **template_kwargs)
    full = render(tokenizer, messages, add_generation_prompt=False, **kw)
    mask = np.zeros(len(full), dtype=bool)
    eos = tokenizer.eos_token_id
    for i in assistant[-1:] if train_on == "final" else assistant:
        prompt = render(tokenizer, messages[:i], add_generation_prompt=True, **kw)
        through = render(tokenizer, messages[: i + 1], add_generation_prompt=False, **kw)
        if through[: len(prompt)] != prompt or full[: len(through)] != through:
            raise ValueError(
                f"The chat template of {type(tokenizer).__name__} does not render message {i}'s "
                "prefix as a token prefix of the whole conversation, so assistant spans cannot "
                "be located; use a template that only appends (e.g. Llama 3's)."
            )
        start, end = len(prompt), len(through)
        if eos is not None and eos in through[start:end]:
            end = start + (len(through[start:end]) - through[start:end][::-1].index(eos))
        mask[start:end] = True
    return np.asarray(full, dtype=np.int32), mask


# ---------------------------------------------------------------------------------------------
# Code extraction.
# ---------------------------------------------------------------------------------------------

# An opening fence: ``` plus an optional language tag, then a newline (anywhere, like the
# official regex, so "Here it is: ```python" on one line counts).
_OPEN_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[ \t]*\r?\n")
# The closing fence: the next ``` (the official lazy regex), also right after code on the same
# line ("...return x```", which small models write).
_CLOSE_FENCE = re.compile(r"```")
_PYTHON_TAGS = ("python", "python3", "py", "py3")


EXTRACTION_MODES = ("official", "fenced")
_OFFICIAL_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def extract_code_official(completion: str) -> str:
    """The official μCode rule: the first ```` ```python\n ... ``` ```` block, stripped; after
    an opening ```` ```python\n ```` that is never closed, the empty program; without such a
    fence, the raw completion (which then runs as it is). Never ``None``."""
    if not isinstance(completion, str):
        raise TypeError(f"extract_code takes the completion text, got {type(completion).__name__}.")
    m = _OFFICIAL_BLOCK.search(completion)
    if m is not None:
        return m.group(1).strip()
    if "```python\n" in completion:
        return ""
    return completion


def extract(completion: str, mode: str = "fenced") -> str | None:
    """The program in a completion by an extraction mode: ``"fenced"`` (`extract_code`) or
    ``"official"`` (`extract_code_official`)."""
    if mode == "official":
        return extract_code_official(completion)
    if mode == "fenced":
        return extract_code(completion)
    raise ValueError(
        f"Unknown code extraction mode {mode!r}; use one of {', '.join(EXTRACTION_MODES)}."
    )


def extract_code(completion: str) -> str | None:
    """The program in a model completion, or ``None`` when it contains no fenced code.

    Rule (the official μCode one, made explicit): take the **first** fenced block tagged
    ``python`` (or ``py`` / ``python3``), i.e. ```` ```python\\n ... ``` ````, and strip it. The
    official environment also falls back to an unterminated ```` ```python ```` fence; we take
    everything after such a fence. Only when there is no Python-tagged block do we take the
    first block without a tag (```` ```\\n ... ``` ````); blocks tagged with another language
    (```` ```text ````) are skipped. No usable fence → ``None``, which the executor reports as
    ``no_code`` (the official code would execute the raw text instead, see
    `extract_code_official`; RLEF penalises a turn without code, so we keep the distinction).

    Args:
      completion: the assistant message's text.

    Returns:
      The stripped code, or ``None``. An empty fenced block gives ``""`` (executable, fails).
    """
    if not isinstance(completion, str):
        raise TypeError(f"extract_code takes the completion text, got {type(completion).__name__}.")
    pos, untagged = 0, None
    while (opening := _OPEN_FENCE.search(completion, pos)) is not None:
        closing = _CLOSE_FENCE.search(completion, opening.end())
        body = completion[opening.end() : len(completion) if closing is None else closing.start()]
        tag = opening.group(1).lower()
        if tag in _PYTHON_TAGS:
            return body.strip()
        if not tag and untagged is None:
            untagged = body.strip()
        if closing is None:
            break
        pos = closing.end()
    return untagged
