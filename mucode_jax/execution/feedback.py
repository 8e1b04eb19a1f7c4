"""Execution feedback as text (pure Python): four granularities and templates.

Granularities (Zheng et al.):

* ``binary`` — pass/fail only;
* ``failed`` — each failed test: input, expected, got, error (the default);
* ``failed_and_passed`` — the failed tests, then the passed ones;
* ``trace`` — ``failed`` plus an LDB-style trace of the first failed test (local variables line
  by line); needs ``submit(..., trace=True)``, otherwise it is ``failed``.

`official` is the official μCode pipeline's body: the raw stderr of the public-test script
(traceback ending in ``AssertionError``), ``Code execution timed out`` or ``Code passed all
tests``; CodeContests' ``[Error] ...`` lines.

Templates: `mucode` gives the *body* of μCode's feedback turn (``prompts.mucode_feedback_message``
adds ``"Feedback: "``): the first failing test's error/traceback, or ``"Code passed all tests"``.
`rlef` gives the body of RLEF's turn (``prompts.rlef_feedback_message`` adds "Give it another
try."). Every function takes a character budget; `truncate_tokens` fits a token budget.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

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


# ---------------------------------------------------------------------------------------------
# The official μCode body: what ``python3 script.py`` prints on stderr.
# ---------------------------------------------------------------------------------------------

SCRIPT_NAME = "solution.py"  # the script's name in tracebacks: fixed, so replays are identical
TIMED_OUT_TEXT = "Code execution timed out"
_TEST_FRAME = re.compile(r'  File "<test (\d+)>", line (\d+), in <module>\n')


def _script_lines(text: str) -> int:
    return text.count("\n") + 1


def _test_lines(code: str | None, tests: Mapping[str, Any]) -> list[int]:
    """The line of each assert in the official script: preamble, program, setup, the asserts."""
    first = (
        tests.get("preamble", "").count("\n")
        + _script_lines(code or "")
        + tests.get("setup", "").count("\n")
        + 1
    )
    out = []
    for t in tests.get("tests", ()):
        out.append(first)
        first += _script_lines(t)
    return out


def _in_script(text: str) -> str:
    return text.replace('"<solution>"', f'"{SCRIPT_NAME}"').replace(
        "<solution>:", SCRIPT_NAME + ":"
    )


def _assert_traceback(source: str, line: int, last: str) -> str:
    head = source.strip().splitlines()[0] if source.strip() else source
    return f'Traceback (most recent call last):\n  File "{SCRIPT_NAME}", line {line}, in <module>\n    {head}\n{last}\n'


def _official_stdio(result: ExecResult) -> str:
    """CodeContests' official body: ``[Error] <exception>: <message>`` of the first failed case."""
    if result.verdict == R.SYNTAX_ERROR:
        err = next((t.error for t in result.tests if t.error), None) or "SyntaxError"
        return "[Error] " + err.replace("<solution>", "<string>")
    t = result.failed_tests[0] if result.failed_tests else None
    if t is None or t.verdict == R.TIMEOUT:
        return "[Error] TimeoutError: " + TIMED_OUT_TEXT
    if t.verdict in (R.WRONG_ANSWER, R.NO_CODE):
        exp = (t.expected or "").strip("\n")
        got = (t.got or "").strip("\n")
        return (
            f"[Error] AssertionError: Expected output={exp} for input={t.input}, "
            f"but got actual_output={got}"
        )
    return "[Error] " + (t.error or t.verdict).replace("<solution>", "<string>")


def official(
    result: ExecResult,
    code: str | None = None,
    tests: Mapping[str, Any] | None = None,
    *,
    max_chars: int | None = 2000,
) -> str:
    """The official μCode feedback body: what running the program as a script printed on stderr.

    The official pipeline writes preamble + program + setup + public asserts to a file, runs
    ``python3`` on it, and shows its raw stderr: the program's own stderr output, then the
    traceback of the first failing statement (``AssertionError`` for a wrong answer), or
    ``Code execution timed out``; ``Code passed all tests`` on success. This rebuilds that text
    on the trusted side from the verdicts (the sandboxed child never sees the asserts' expected
    values), deterministically: the script is called `SCRIPT_NAME` (no host or sandbox path),
    frames outside the program are left out, and the line numbers are the script's (the suite's
    ``preamble`` counts, see `mucode_jax.execution.suites`). stdio suites (CodeContests) get
    their official ``[Error] <exception>: <message>`` form. Bounded by `max_chars`.

    Args:
      result: the public-test result.
      code: the program that ran (for the line numbers); None when none was extracted.
      tests: the public suite it ran on (its preamble, setup and asserts).
    """
    if result.passed:
        return PASSED_TEXT
    tests = tests or {}
    if tests.get("kind") == "stdio":
        return truncate(_official_stdio(result), max_chars)
    lines = _test_lines(code, tests) if tests.get("kind") == "assert" else []
    sources = list(tests.get("tests", ()))
    if result.verdict == R.SYNTAX_ERROR:
        return truncate(_in_script(result.stderr + (result.error or "")), max_chars)
    if result.verdict == R.NO_CODE:  # the official script runs the empty program: NameError
        entry = tests.get("entry_point")
        if lines and entry:
            text = _assert_traceback(
                sources[0], lines[0], f"NameError: name {entry!r} is not defined"
            )
            return truncate(text, max_chars)
        return ""
    t = result.failed_tests[0]
    if t.verdict == R.TIMEOUT:
        return TIMED_OUT_TEXT
    prefix = _in_script(result.stderr)
    if t.verdict == R.WRONG_ANSWER and t.index < len(lines):
        body = _assert_traceback(sources[t.index], lines[t.index], t.error or "AssertionError")
    elif t.verdict == R.WRONG_ANSWER:  # a function/check suite: no assert line to show
        body = (t.error or "AssertionError") + "\n"
    elif t.traceback:
        tb = t.traceback
        if t.index < len(lines):
            src = sources[t.index].strip().splitlines() or [""]

            def frame(m: re.Match) -> str:
                k = int(m.group(2))
                return (
                    f'  File "{SCRIPT_NAME}", line {lines[t.index] + k - 1}, in <module>\n'
                    f"    {src[min(k, len(src)) - 1].strip()}\n"
                )

            tb = _TEST_FRAME.sub(frame, tb)
        if tb.rstrip().splitlines()[-1].startswith("SystemExit"):
            tb = ""  # sys.exit(): the script ends quietly, the success line is never printed
        body = _in_script(tb)
    else:
        body = ""  # killed (a signal, the memory limit): nothing on stderr
    return truncate(prefix + body, max_chars)


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
