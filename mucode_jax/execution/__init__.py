"""Sandboxed execution of generated programs, judged on the trusted side.

Pure Python, standard library only: this package never imports JAX (its service and workers
run in processes of their own, started with fork+exec). Public API:

* `Executor` — the context-managed client: ``submit(code, tests) -> Future[ExecResult]``.
* `Limits` — per-run resource limits; `ExecResult` / `TestResult` — verdict records.
* `feedback` — feedback text at the four granularities of SPEC §4, μCode and RLEF templates.
* `validate_suite` — check a test-suite dict (schema in `mucode_jax.execution.suites`).

See docs/execution.md for the schema, verdicts, sandbox and threat model.
"""

from mucode_jax.execution import feedback
from mucode_jax.execution.executor import Executor, ExecutorError
from mucode_jax.execution.limits import Limits
from mucode_jax.execution.results import (
    INTERNAL_ERROR,
    MEMORY_LIMIT,
    NO_CODE,
    OUTPUT_LIMIT,
    PASSED,
    RUNTIME_ERROR,
    SYNTAX_ERROR,
    TIMEOUT,
    VERDICTS,
    WRONG_ANSWER,
    ExecResult,
    TestResult,
)
from mucode_jax.execution.suites import validate_suite

__all__ = [
    "INTERNAL_ERROR",
    "MEMORY_LIMIT",
    "NO_CODE",
    "OUTPUT_LIMIT",
    "PASSED",
    "RUNTIME_ERROR",
    "SYNTAX_ERROR",
    "TIMEOUT",
    "VERDICTS",
    "WRONG_ANSWER",
    "ExecResult",
    "Executor",
    "ExecutorError",
    "Limits",
    "TestResult",
    "feedback",
    "validate_suite",
]
