"""Plain frozen records passed between the stages of the pipeline.

problems -> prompts -> sampler -> executor -> verifier -> relabel -> trainer.

Test suites travel as JSON-compatible dicts in the executor's schema (see
`mucode_jax/execution/README` section of the top-level README):

* ``{"kind": "assert", "setup": str, "tests": [str, ...]}`` — assert-style function tests.
* ``{"kind": "stdio", "cases": [{"input": str, "output": str}, ...]}`` — stdin/stdout tests.
* further kinds defined by `mucode_jax.execution` (e.g. MBPP+ input/output comparisons).
"""

from __future__ import annotations

import dataclasses
from typing import Any

TestSuite = dict[str, Any]


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
