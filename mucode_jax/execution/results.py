"""Verdicts and the frozen result records the executor hands back (JSON round-trippable).

A program's verdict is decided on the trusted side (the executor service), never by the
sandboxed program. Verdicts, from the point of view of one test:

* ``passed``: the test's check held.
* ``wrong_answer``: the program ran to completion on the test but the check failed
  (a wrong value, a value of a type that cannot be compared, wrong stdout).
* ``runtime_error``: the program raised, exited early (in any form), or was killed by a signal.
* ``timeout``: the CPU-time limit (or the wall-clock backstop) was hit. ``TestResult.confirmed``
  says whether load can be ruled out as the cause (see `TestResult`).
* ``memory_limit``: the address-space limit was hit (``MemoryError`` or a kill at the limit).
* ``output_limit``: stdout/stderr or the returned value exceeded its cap.
* ``syntax_error``: the program does not compile.
* ``no_code``: there was no program (empty, or no code block extracted).
* ``internal_error``: the executor itself failed (a bug or a broken sandbox); never expected.

Program-level precedence (``ExecResult.verdict``): ``no_code`` > ``syntax_error`` > the verdict of
the first failed test, in test order > ``passed``. ``passed`` requires every test to pass.
"""

from __future__ import annotations

import dataclasses
from typing import Any

PASSED = "passed"
WRONG_ANSWER = "wrong_answer"
RUNTIME_ERROR = "runtime_error"
TIMEOUT = "timeout"
MEMORY_LIMIT = "memory_limit"
OUTPUT_LIMIT = "output_limit"
SYNTAX_ERROR = "syntax_error"
NO_CODE = "no_code"
INTERNAL_ERROR = "internal_error"

VERDICTS = (
    PASSED,
    WRONG_ANSWER,
    RUNTIME_ERROR,
    TIMEOUT,
    MEMORY_LIMIT,
    OUTPUT_LIMIT,
    SYNTAX_ERROR,
    NO_CODE,
    INTERNAL_ERROR,
)


@dataclasses.dataclass(frozen=True)
class TestResult:
    """The verdict of one public or private test, with what feedback needs to describe it.

    Attributes:
      index: position of the test in its suite.
      verdict: one of `VERDICTS`.
      input: the test as shown to a reader: the assert line, the call ``f(1, 2)``, or stdin.
      expected: the expected value / output as text, when the test has one.
      got: what the program produced (repr of the returned value, or its stdout), if anything.
      error: one line: ``"ZeroDivisionError: division by zero"``, ``"time limit exceeded"``, ...
      traceback: the traceback trimmed to the program's own frames (``File "<solution>"``).
      trace: an LDB-style trace of this test (only when requested and the test failed).
      confirmed: for a ``timeout`` only (else None): True when load cannot explain it — a
        re-run timed out again, the limit was far above the reference's cost, or the program
        was idle (sleeping or blocked) at the wall-clock backstop; False when it might be an
        artefact of load and was not re-run (``Limits.timeout_reruns=0``).
    """

    __test__ = False  # not a pytest class

    index: int
    verdict: str
    input: str = ""
    expected: str | None = None
    got: str | None = None
    error: str | None = None
    traceback: str | None = None
    trace: str | None = None
    confirmed: bool | None = None

    @property
    def passed(self) -> bool:
        return self.verdict == PASSED

    def to_json(self) -> dict[str, Any]:
        d = {"index": self.index, "verdict": self.verdict, "input": self.input}
        for key in ("expected", "got", "error", "traceback", "trace", "confirmed"):
            value = getattr(self, key)
            if value is not None:
                d[key] = value
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TestResult:
        names = _TEST_FIELDS
        return cls(**{k: v for k, v in d.items() if k in names})


_TEST_FIELDS = frozenset(f.name for f in dataclasses.fields(TestResult))


@dataclasses.dataclass(frozen=True)
class ExecResult:
    """The outcome of running one program against one test suite.

    Attributes:
      verdict: program-level verdict (see the module docstring for the precedence).
      tests: one `TestResult` per test, in suite order.
      error: a program-level error (syntax error or an exception while loading), if any.
      stdout: the program's stdout (assert/function suites; truncated), for feedback.
      stderr: the program's stderr (truncated).
      cpu_seconds: CPU time used by all runs of the program (children included).
      wall_seconds: wall time from accepting the job to the verdict.
      cpu_limit: the CPU limit applied per run (after deriving it from the reference).
      sandbox: ``"bwrap"`` or ``"fallback"``.
      id: the caller's id (CLI), if any.
      reference_cpu: the reference solution's CPU seconds for this suite (what `cpu_limit` was
        derived from), or None when the suite has no reference.
      reruns: runs of this program that timed out in a way load could explain and were run
        again (their first outcome is discarded; `cpu_seconds` counts both).
    """

    verdict: str
    tests: tuple[TestResult, ...] = ()
    error: str | None = None
    stdout: str = ""
    stderr: str = ""
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    cpu_limit: float = 0.0
    sandbox: str = ""
    id: str | None = None
    reference_cpu: float | None = None
    reruns: int = 0

    @property
    def passed(self) -> bool:
        return self.verdict == PASSED

    @property
    def num_passed(self) -> int:
        return sum(t.passed for t in self.tests)

    @property
    def failed_tests(self) -> tuple[TestResult, ...]:
        return tuple(t for t in self.tests if not t.passed)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id} if self.id is not None else {}
        d.update(
            verdict=self.verdict,
            passed=self.num_passed,
            total=len(self.tests),
            tests=[t.to_json() for t in self.tests],
            cpu_seconds=round(self.cpu_seconds, 4),
            wall_seconds=round(self.wall_seconds, 4),
            cpu_limit=self.cpu_limit,
            sandbox=self.sandbox,
            reruns=self.reruns,
        )
        if self.reference_cpu is not None:
            d["reference_cpu"] = round(self.reference_cpu, 4)
        for key in ("error", "stdout", "stderr"):
            if getattr(self, key):
                d[key] = getattr(self, key)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ExecResult:
        return cls(
            verdict=d["verdict"],
            tests=tuple(TestResult.from_json(t) for t in d.get("tests", ())),
            error=d.get("error"),
            stdout=d.get("stdout", ""),
            stderr=d.get("stderr", ""),
            cpu_seconds=float(d.get("cpu_seconds", 0.0)),
            wall_seconds=float(d.get("wall_seconds", 0.0)),
            cpu_limit=float(d.get("cpu_limit", 0.0)),
            sandbox=d.get("sandbox", ""),
            id=d.get("id"),
            reference_cpu=d.get("reference_cpu"),
            reruns=int(d.get("reruns", 0)),
        )


def program_verdict(tests: tuple[TestResult, ...] | list[TestResult]) -> str:
    """``passed`` iff every test passed, else the verdict of the first failed test."""
    for t in tests:
        if t.verdict != PASSED:
            return t.verdict
    return PASSED
