"""Test-suite schema, validation, and the trusted/untrusted split of assert tests.

Suites are JSON-compatible dicts (`mucode_jax.types.TestSuite`):

* ``{"kind": "assert", "setup": str, "tests": ["assert f(1) == 2", ...], "reference"?: str,
  "entry_point"?: str}`` MBPP / HumanEval-public style. Each test is one ``assert`` statement;
  ``setup`` runs after the program (MBPP's ``test_setup_code`` uses the program's classes).
* ``{"kind": "stdio", "cases": [{"input": str, "output": str}, ...], "reference"?: str}``
  CodeContests style: the program reads stdin; stdout is compared token by token.
* ``{"kind": "function", "entry_point": str, "inputs": [[arg, ...], ...], "outputs"?: [...],
  "reference"?: str, "atol"?: float, "compare"?: "exact" | "set" | "not_none", "setup"?: str}``
  MBPP+ style: ``entry_point(*args)`` for each input, compared with the reference's outputs
  (computed in the sandbox, or given as ``outputs`` in `serial`'s tagged encoding).
* ``{"kind": "check", "entry_point": str, "check": "def check(candidate): ...",
  "reference": str, "setup"?: str}``
  HumanEval style: the reference's ``check(candidate)`` run is recorded once (each call of
  ``candidate``: its arguments and the reference's result); the candidate is then judged on
  those calls like a ``function`` suite.

A ``reference`` on an ``assert``/``stdio`` suite only sets the CPU limit (`Limits.with_reference`).

Every kind also takes ``"preamble": str`` — code placed before the program and compiled with it
as one source (the official μCode import block; the program's line numbers then count the
preamble's lines, as in the official script) — and ``"script": bool`` — run the program as a
script (``__name__ == "__main__"``, so an ``if __name__ == "__main__":`` block runs), as the
official pipeline's ``python3 file.py`` does. stdio programs always run as scripts.

Assert splitting (holes run in the child, the skeleton on the trusted side) lives in `asserts`;
`split_assert` here imports it on first use, so the client, which validates suites without
parsing their tests, never imports `ast`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mucode_jax.execution.asserts import SplitAssert

KINDS = ("assert", "stdio", "function", "check")
COMPARE_MODES = ("exact", "set", "not_none")


def split_assert(source: str, entry_point: str | None = None) -> SplitAssert:
    """`asserts.split_assert` (cached there): the holes and skeleton of one assert test."""
    from mucode_jax.execution import asserts

    return asserts.split_assert(source, entry_point)


# ---------------------------------------------------------------------------------------------
# Validation.
# ---------------------------------------------------------------------------------------------


def _require(cond: bool, message: str):
    if not cond:
        raise ValueError(message)


def _opt_str(suite: dict, key: str, kind: str) -> str:
    value = suite.get(key, "")
    if not isinstance(value, str):  # (messages are built only when raised: this runs per job)
        raise ValueError(
            f"Field {key!r} of a {kind!r} suite must be a string of Python code, "
            f"got {type(value).__name__}."
        )
    return value


def _identifier(suite: dict, kind: str) -> str:
    name = suite.get("entry_point")
    if not (isinstance(name, str) and name.isidentifier()):
        raise ValueError(
            f"A {kind!r} suite needs 'entry_point': the name of the function to call "
            f"(got {name!r})."
        )
    return name


def validate_suite(suite: Any, *, parse_tests: bool = True) -> dict[str, Any]:
    """Check a suite dict and return it normalized; raises ValueError with one clear sentence.

    Args:
      parse_tests: also parse and split every assert (the service always does; the client skips
        it for speed, and a bad assert then comes back as the future's ValueError).
    """
    if not isinstance(suite, dict):
        raise ValueError(
            f"A test suite must be an object with a 'kind', got {type(suite).__name__}."
        )
    kind = suite.get("kind")
    if kind not in KINDS:
        raise ValueError(
            f"Test suite kind {kind!r} is unknown; use one of {', '.join(map(repr, KINDS))}."
        )
    out: dict[str, Any] = {"kind": kind}
    if suite.get("preamble"):
        out["preamble"] = _opt_str(suite, "preamble", kind)
    if "script" in suite:
        if not isinstance(suite["script"], bool):
            raise ValueError(
                f"Field 'script' of a {kind!r} suite must be true or false, "
                f"got {type(suite['script']).__name__}."
            )
        if suite["script"]:
            out["script"] = True
    if "reference" in suite and suite["reference"] is not None:
        out["reference"] = _opt_str(suite, "reference", kind)
    if kind == "assert":
        tests = suite.get("tests")
        _require(
            isinstance(tests, list) and tests and all(isinstance(t, str) for t in tests),
            "An 'assert' suite needs 'tests': a non-empty list of assert statements (strings).",
        )
        entry = suite.get("entry_point")
        if entry is not None:
            out["entry_point"] = _identifier(suite, kind)
        if parse_tests:
            from mucode_jax.execution.asserts import split_assert as split
        for i, t in enumerate(tests if parse_tests else ()):
            try:
                split(t, entry)
            except ValueError as e:
                raise ValueError(f"Test {i} of the 'assert' suite is unusable: {e}.") from None
        out.update(setup=_opt_str(suite, "setup", kind), tests=list(tests))
    elif kind == "stdio":
        cases = suite.get("cases")
        _require(
            isinstance(cases, list)
            and cases
            and all(
                isinstance(c, dict)
                and isinstance(c.get("input"), str)
                and isinstance(c.get("output"), str)
                for c in cases
            ),
            "A 'stdio' suite needs 'cases': a non-empty list of "
            '{"input": str, "output": str} objects.',
        )
        out["cases"] = [{"input": c["input"], "output": c["output"]} for c in cases]
    elif kind == "function":
        out["entry_point"] = _identifier(suite, kind)
        inputs = suite.get("inputs")
        _require(
            isinstance(inputs, list) and inputs and all(isinstance(a, list) for a in inputs),
            "A 'function' suite needs 'inputs': a non-empty list of argument lists.",
        )
        out["inputs"] = inputs
        outputs = suite.get("outputs")
        if outputs is not None:
            _require(
                isinstance(outputs, list) and len(outputs) == len(inputs),
                "'outputs' of a 'function' suite must be a list as long as 'inputs' "
                "(tagged encoding of mucode_jax.execution.serial).",
            )
            from mucode_jax.execution import serial

            try:
                out["outputs"] = (
                    [serial.from_jsonable(o) for o in outputs] if parse_tests else outputs
                )
            except serial.DecodeError as e:
                raise ValueError(
                    f"'outputs' of a 'function' suite are not in the tagged encoding ({e}); "
                    "see mucode_jax.execution.serial."
                ) from None
        else:
            _require(
                "reference" in out,
                "A 'function' suite needs 'outputs' or a 'reference' solution to compute them.",
            )
        atol = suite.get("atol", 0)
        if not (isinstance(atol, int | float) and not isinstance(atol, bool) and atol >= 0):
            raise ValueError(f"'atol' of a 'function' suite must be a number >= 0, got {atol!r}.")
        compare = suite.get("compare", "exact")
        if compare not in COMPARE_MODES:
            raise ValueError(
                f"'compare' of a 'function' suite is {compare!r}; use one of {COMPARE_MODES}."
            )
        out.update(atol=float(atol), compare=compare, setup=_opt_str(suite, "setup", kind))
    else:  # check
        import ast

        out["entry_point"] = _identifier(suite, kind)
        check = _opt_str(suite, "check", kind)
        try:
            tree = ast.parse(check)
        except SyntaxError as e:
            raise ValueError(
                f"The 'check' code of a 'check' suite does not parse ({e.msg})."
            ) from None
        _require(
            any(isinstance(n, ast.FunctionDef) and n.name == "check" for n in tree.body),
            "The 'check' field of a 'check' suite must define `def check(candidate): ...`.",
        )
        _require(
            "reference" in out,
            "A 'check' suite needs a 'reference' solution (its calls of `candidate` are recorded).",
        )
        out.update(check=check, setup=_opt_str(suite, "setup", kind))
    return out


def num_tests(suite: dict[str, Any]) -> int | None:
    """Number of tests of a validated suite (None for 'check': known after recording)."""
    kind = suite["kind"]
    if kind == "assert":
        return len(suite["tests"])
    if kind == "stdio":
        return len(suite["cases"])
    if kind == "function":
        return len(suite["inputs"])
    return None


def call_text(entry_point: str, args: list, kwargs: dict | None = None, limit: int = 300) -> str:
    """``f(1, [2])`` for feedback, truncated."""
    from mucode_jax.execution import serial

    parts = [serial.short_repr(a, limit) for a in args]
    parts += [f"{k}={serial.short_repr(v, limit)}" for k, v in (kwargs or {}).items()]
    text = f"{entry_point}({', '.join(parts)})"
    return text if len(text) <= limit else text[: limit - 15] + "... [truncated]"
