"""Execution feedback as text (pure Python): four granularities and templates.

Granularities (Zheng et al.):

* ``binary`` — pass/fail only;
* ``failed`` — each failed test: input, expected, got, error (the default);
* ``failed_and_passed`` — the failed tests, then the passed ones;
* ``trace`` — ``failed`` plus an LDB-style trace of the first failed test (local variables line
  by line); needs ``submit(..., trace=True)``, otherwise it is ``failed``.

Templates: `mucode` gives the *body* of μCode's feedback turn (``prompts.mucode_feedback_message``
adds ``"Feedback: "``): the first failing test's error/traceback, or ``"Code passed all tests"``.
`rlef` gives the body of RLEF's turn (``prompts.rlef_feedback_message`` adds "Give it another
try."). Every function takes a character budget; `truncate_tokens` fits a token budget.
"""

from __future__ import annotations

from collections.abc import Callable

from mucode_jax.execution import results as R
from mucode_jax.execution.results import ExecResult, TestResult

GRANULARITIES = ("binary", "failed", "failed_and_passed", "trace")
PASSED_TEXT = "Code passed all tests"

_WHY = {
    R.TIMEOUT: "took too long",
    R.MEMORY_LIMIT: "ran out of memory",
    R.OUTPUT_LIMIT: "printed or returned too much output",
    R.SYNTAX_ERROR: "has a syntax error",
    R.NO_CODE: "contains no code",
}


def truncate(text: str, max_chars: int | None) -> str:
    """Keep the head and the tail of `text` within `max_chars` characters."""
    if max_chars is None or len(text) <= max_chars:
        return text
    marker = "\n... [{} characters truncated] ...\n"
    room = max_chars - len(marker.format(len(text)))
    if room <= 0:
        return text[:max_chars]
    head = room * 2 // 3
    tail = room - head
    return text[:head] + marker.format(len(text) - room) + (text[-tail:] if tail else "")


def truncate_tokens(text: str, max_tokens: int, count_tokens: Callable[[str], int]) -> str:
    """The longest `truncate(text, n)` whose token count is at most `max_tokens`.

    Args:
      count_tokens: e.g. ``lambda s: len(tokenizer.encode(s, add_special_tokens=False))``.
    """
    if count_tokens(text) <= max_tokens:
        return text
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(truncate(text, mid)) <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    return truncate(text, lo)


def _block(text: str, limit: int = 600) -> str:
    return truncate(text.rstrip("\n"), limit)


def describe_test(t: TestResult, *, with_trace: bool = False) -> str:
    """One test as text: what ran, what was expected, what came out, and the error."""
    lines = [f"Test {t.index}: {_block(t.input, 400)}"]
    if t.passed:
        return lines[0] + " -> passed"
    if t.expected is not None:
        lines.append(f"  Expected: {_block(t.expected, 300)}")
    if t.got is not None:
        lines.append(f"  Got: {_block(t.got, 300)}")
    if t.verdict in _WHY:
        lines.append(f"  The code {_WHY[t.verdict]}.")
    if t.traceback:
        lines.append("  " + _block(t.traceback, 1200).replace("\n", "\n  "))
    elif t.error:
        lines.append(f"  Error: {_block(t.error, 400)}")
    if with_trace and t.trace:
        lines.append("  Trace of this test (line: local variables):")
        lines.append("    " + _block(t.trace, 1500).replace("\n", "\n    "))
    return "\n".join(lines)


def render(result: ExecResult, granularity: str = "failed", *, max_chars: int | None = 4000) -> str:
    """Feedback text at one of `GRANULARITIES`, truncated to `max_chars`."""
    if granularity not in GRANULARITIES:
        raise ValueError(
            f"Unknown feedback granularity {granularity!r}; use one of {GRANULARITIES}."
        )
    if result.passed:
        return PASSED_TEXT
    if granularity == "binary":
        return "Code failed the tests"
    if result.verdict in (R.SYNTAX_ERROR, R.NO_CODE):
        body = f"The code {_WHY[result.verdict]}."
        if result.error:
            body += "\n" + _block(result.error, 1500)
        return truncate(body, max_chars)
    failed = result.failed_tests
    parts = [f"{len(failed)} of {len(result.tests)} tests failed:"]
    parts += [describe_test(t, with_trace=granularity == "trace") for t in failed]
    if granularity == "failed_and_passed":
        passed = [t for t in result.tests if t.passed]
        if passed:
            parts.append("Passed tests:")
            parts += [describe_test(t) for t in passed]
    return truncate("\n".join(parts), max_chars)


def binary(result: ExecResult) -> str:
    return render(result, "binary")


def failed(result: ExecResult, max_chars: int | None = 4000) -> str:
    return render(result, "failed", max_chars=max_chars)


def failed_and_passed(result: ExecResult, max_chars: int | None = 4000) -> str:
    return render(result, "failed_and_passed", max_chars=max_chars)


def trace(result: ExecResult, max_chars: int | None = 4000) -> str:
    return render(result, "trace", max_chars=max_chars)


def mucode(result: ExecResult, *, max_chars: int | None = 2000) -> str:
    """Body of μCode's feedback turn: the error/traceback of the first failure, or a pass.

    The official code executes the program followed by the public asserts and reports the
    exception; this mirrors it: the failing assert line and ``AssertionError`` (with the value
    the code returned), or the program's traceback, time-out or memory message.
    """
    if result.passed:
        return PASSED_TEXT
    if result.verdict in (R.SYNTAX_ERROR, R.NO_CODE):
        return truncate(result.error or f"The code {_WHY[result.verdict]}.", max_chars)
    t = result.failed_tests[0]
    if t.verdict == R.WRONG_ANSWER:
        text = f"{t.input}\nAssertionError"
        if t.got is not None:
            text += f" (the code returned {t.got})"
    elif t.traceback:
        text = f"{t.input}\n{t.traceback.rstrip()}"
    else:
        text = f"{t.input}\n{t.error or t.verdict}"
    return truncate(text, max_chars)


def rlef(result: ExecResult, *, max_chars: int | None = 2500) -> str:
    """Body of RLEF's feedback turn (the caller appends "Give it another try.")."""
    if result.passed:
        return PASSED_TEXT
    if result.verdict in (R.SYNTAX_ERROR, R.NO_CODE):
        msg = result.error or ""
        return truncate(f"Your code {_WHY[result.verdict]}:\n```\n{msg.strip()}\n```", max_chars)
    lines = ["Your code failed the following tests:"]
    for t in result.failed_tests:
        lines.append(f"\n- input `{_block(t.input, 300)}` failed:")
        if t.verdict == R.TIMEOUT:
            lines.append("Timeout: the code took too long.")
        elif t.verdict == R.MEMORY_LIMIT:
            lines.append("Out of memory: the code used too much memory.")
        elif t.verdict == R.OUTPUT_LIMIT:
            lines.append("The code printed or returned too much output.")
        elif t.verdict == R.RUNTIME_ERROR:
            tb = (t.traceback or t.error or "").strip()
            lines.append(f"The code raised an error:\n```\n{_block(tb, 800)}\n```")
        else:
            exp = _block(t.expected or "", 300)
            got = _block(t.got or "", 300)
            lines.append(f"Expected output `{exp}` but got `{got}`")
    return truncate("\n".join(lines), max_chars)
