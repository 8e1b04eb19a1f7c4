"""Sandboxed execution of generated programs, judged on the trusted side.

Pure Python, standard library only: this package never imports JAX (its service and workers
run in processes of their own, started with fork+exec). Public API:

* `Executor` — the context-managed client: ``submit(code, tests) -> Future[ExecResult]``.
* `Limits` — per-run resource limits; `ExecResult` / `TestResult` — verdict records.
* `feedback` — feedback text at four granularities (Zheng et al.), μCode and RLEF templates.
* `validate_suite` — check a test-suite dict (schema in `mucode_jax.execution.suites`).

See docs/execution.md for the schema, verdicts, sandbox and threat model.
"""

from __future__ import annotations

import importlib

# Lazy exports: the sandbox workers import `mucode_jax.execution.worker` only, and must not pull
# in threading/logging/subprocess (their at-fork hooks would slow every fork down).
_EXPORTS = {
    "Executor": "executor",
    "ExecutorError": "executor",
    "Limits": "limits",
    "ExecResult": "results",
    "TestResult": "results",
    "PASSED": "results",
    "WRONG_ANSWER": "results",
    "RUNTIME_ERROR": "results",
    "TIMEOUT": "results",
    "MEMORY_LIMIT": "results",
    "OUTPUT_LIMIT": "results",
    "SYNTAX_ERROR": "results",
    "NO_CODE": "results",
    "INTERNAL_ERROR": "results",
    "VERDICTS": "results",
    "validate_suite": "suites",
}


def __getattr__(name: str):
    if name == "feedback":
        return importlib.import_module("mucode_jax.execution.feedback")
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"mucode_jax.execution.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'mucode_jax.execution' has no attribute {name!r}")


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
