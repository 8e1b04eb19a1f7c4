"""Trusted-side comparisons: stdin/stdout tokens and function outputs (evalplus semantics).

Everything here runs in the service over plain decoded data (`serial.decode`), never inside the
sandbox, so a program cannot influence how its output is judged.
"""

from __future__ import annotations

import math
import re

from mucode_jax.execution.serial import ExpectedError

_FLOAT_TOKEN = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")


def _is_float_literal(token: str) -> bool:
    return bool(_FLOAT_TOKEN.fullmatch(token)) and any(c in token for c in ".eE")


def stdout_matches(got: str, expected: str, *, tol: float = 1e-6) -> bool:
    """Whitespace-token comparison; a token written as a float in `expected` may differ by `tol`.

    Tokens must be equal as strings, except where both are numbers and at least one is written
    as a float (contains ``.`` or an exponent): then they match when
    ``|got - expected| <= tol * max(1, |expected|)`` (absolute or relative 1e-6, the usual
    CodeContests checker). Two integers are compared exactly.
    """
    got_tokens, exp_tokens = got.split(), expected.split()
    if len(got_tokens) != len(exp_tokens):
        return False
    for g, e in zip(got_tokens, exp_tokens):
        if g == e:
            continue
        if not (_FLOAT_TOKEN.fullmatch(g) and _FLOAT_TOKEN.fullmatch(e)):
            return False
        if not (_is_float_literal(e) or _is_float_literal(g)):
            return False
        a, b = float(g), float(e)
        if not abs(a - b) <= tol * max(1.0, abs(b)):
            return False
    return True


def _is_number(x) -> bool:
    return type(x) in (int, float, bool)


def is_floats(x) -> bool:
    """evalplus: a float, or a non-empty list/tuple of floats."""
    if type(x) is float:
        return True
    if type(x) in (list, tuple) and x:
        return all(type(i) is float for i in x)
    return False


def allclose(out, exp, *, atol: float, rtol: float = 1e-7) -> bool:
    """``numpy.allclose(out, exp, rtol, atol)`` for numbers and nested lists/tuples of them."""
    if _is_number(out) and _is_number(exp):
        if math.isnan(out) or math.isnan(exp):
            return False
        if math.isinf(out) or math.isinf(exp):
            return out == exp
        return abs(out - exp) <= atol + rtol * abs(exp)
    if type(out) in (list, tuple) and type(exp) in (list, tuple):
        return len(out) == len(exp) and all(
            allclose(o, e, atol=atol, rtol=rtol) for o, e in zip(out, exp)
        )
    return False


def outputs_match(out, exp, *, atol: float = 0.0, compare: str = "exact") -> bool:
    """Does a function's output `out` match the reference output `exp`? (evalplus rules).

    Args:
      out: the candidate's decoded return value.
      exp: the reference's decoded return value (or `ExpectedError` when the reference raised;
        the caller handles candidates that raised).
      atol: absolute tolerance; floats (or lists of floats) get ``1e-6`` when it is 0.
      compare: ``"exact"``; ``"set"`` (compare ``set(out) == set(exp)``, evalplus'
        MBPP_OUTPUT_SET_EQ_TASKS); ``"not_none"`` (a bool output means "the reference returned
        something other than None", evalplus' MBPP_OUTPUT_NOT_NONE_TASKS).
    """
    if isinstance(exp, ExpectedError):
        return False
    try:
        if compare == "set":
            return set(out) == set(exp)
        if compare == "not_none" and type(out) is bool:
            return out == (exp is not None)
        if out == exp:
            return True
        if atol == 0 and is_floats(exp):
            atol = 1e-6
        if atol == 0:
            return False
        if type(out) is not type(exp):
            return False
        return allclose(out, exp, atol=atol)
    except (TypeError, ValueError, RecursionError, OverflowError):
        return False
