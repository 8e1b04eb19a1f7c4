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

Assert splitting: an ``assert`` is cut into *holes* — maximal subexpressions that mention a name
the trusted side does not know (the program's functions, the setup's variables) — which the
sandboxed child evaluates and reports as raw values, and a *skeleton* the service evaluates
over those values with real built-ins (``==``, ``set``, ``sorted``, ``math.isclose``, ``not``,
...). ``assert f(x) == [1, 2]`` sends only ``f(x)`` to the child; ``[1, 2]`` never leaves the
service. Known gaps: both operands of ``and``/``or`` are evaluated (no short-circuit), and a
hole that mentions only setup names is still evaluated in the child (no shipped dataset has one).
"""

from __future__ import annotations

import ast
import builtins
import cmath
import dataclasses
import functools
import math
import sys
import types
import warnings
from typing import Any

from mucode_jax.execution import serial

KINDS = ("assert", "stdio", "function", "check")
COMPARE_MODES = ("exact", "set", "not_none")

_SAFE_BUILTIN_NAMES = (
    "abs all any ascii bin bool bytes chr complex dict divmod enumerate filter float format "
    "frozenset hex int isinstance issubclass len list map max min oct ord range repr reversed "
    "round set slice sorted str sum tuple type zip"
).split()
_SAFE_SYS = types.SimpleNamespace(getsizeof=sys.getsizeof, maxsize=sys.maxsize)
_MODULE_ATTRS = {"math": None, "cmath": None, "sys": {"getsizeof", "maxsize"}}
_HOST_NAMESPACE: dict[str, Any] = {
    "__builtins__": {name: getattr(builtins, name) for name in _SAFE_BUILTIN_NAMES},
    "math": math,
    "cmath": cmath,
    "sys": _SAFE_SYS,
}
_TRUSTED_NAMES = frozenset(_SAFE_BUILTIN_NAMES) | frozenset(_MODULE_ATTRS)
_HOLES = "__h"


def _trusted_attribute(node: ast.Attribute) -> bool:
    if not (isinstance(node.value, ast.Name) and node.value.id in _MODULE_ATTRS):
        return False
    allowed = _MODULE_ATTRS[node.value.id]
    if node.attr.startswith("_"):
        return False
    return allowed is None or node.attr in allowed


def _untrusted(
    node: ast.AST, program_names: frozenset[str] = frozenset(), memo: dict | None = None
) -> bool:
    """Does `node` mention anything the trusted side cannot evaluate by itself?

    `memo` (id(node) -> bool) makes repeated questions about subtrees O(1).
    """
    if memo is not None and id(node) in memo:
        return memo[id(node)]
    if isinstance(node, ast.Name):
        out = node.id not in _TRUSTED_NAMES or node.id in program_names
    elif (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in _MODULE_ATTRS
    ):
        out = not _trusted_attribute(node)
    elif isinstance(node, ast.Lambda | ast.NamedExpr | ast.Await | ast.Yield | ast.YieldFrom):
        out = True
    else:
        out = False
        for child in ast.iter_child_nodes(node):  # no short-cut: fill the memo for every node
            out = _untrusted(child, program_names, memo) or out
    if memo is not None:
        memo[id(node)] = out
    return out


_TRANSPARENT = (
    ast.Compare,
    ast.BoolOp,
    ast.UnaryOp,
    ast.BinOp,
    ast.IfExp,
    ast.Tuple,
    ast.List,
    ast.Set,
    ast.Dict,
    ast.Subscript,
    ast.Starred,
    ast.keyword,
    ast.Slice,
)


def _trusted_call(node: ast.AST, program_names: frozenset[str] = frozenset()) -> bool:
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    if isinstance(f, ast.Name):
        return f.id in _SAFE_BUILTIN_NAMES and f.id not in program_names
    return isinstance(f, ast.Attribute) and _trusted_attribute(f)


def _text(source: bytes, node: ast.AST) -> str:
    """The source text of a node of a one-line statement (UTF-8 offsets), else `ast.unparse`."""
    if getattr(node, "lineno", 0) == 1 and getattr(node, "end_lineno", 0) == 1:
        return source[node.col_offset : node.end_col_offset].decode("utf-8", "replace")
    return ast.unparse(node)


class _Splitter(ast.NodeTransformer):
    def __init__(self, program_names: frozenset[str], source: bytes, memo: dict):
        self.holes: list[str] = []
        self.names = program_names
        self.source = source
        self.memo = memo

    def visit(self, node):
        if not isinstance(node, ast.expr | ast.keyword) or not _untrusted(
            node, self.names, self.memo
        ):
            return node
        if isinstance(node, _TRANSPARENT) or _trusted_call(node, self.names):
            return self.generic_visit(node)
        if isinstance(node, ast.GeneratorExp):  # report the items, not a generator object
            self.holes.append(ast.unparse(ast.ListComp(elt=node.elt, generators=node.generators)))
        else:
            self.holes.append(_text(self.source, node))
        loc = {
            k: getattr(node, k) for k in ("lineno", "col_offset", "end_lineno", "end_col_offset")
        }
        return ast.Subscript(
            value=ast.Name(id=_HOLES, ctx=ast.Load(), **loc),
            slice=ast.Constant(value=len(self.holes) - 1, **loc),
            ctx=ast.Load(),
            **loc,
        )


@dataclasses.dataclass(frozen=True)
class SplitAssert:
    """One assert, split: `holes` run in the child, `skeleton` runs on the trusted side."""

    source: str
    holes: tuple[str, ...]
    skeleton: types.CodeType
    shown_input: str
    shown_expected: str | None

    def judge(self, values: list) -> tuple[bool, str | None]:
        """Evaluate the skeleton over the decoded hole values: (held, error text)."""
        namespace = dict(_HOST_NAMESPACE)
        namespace[_HOLES] = values
        try:
            return bool(eval(self.skeleton, namespace)), None  # noqa: S307 - trusted skeleton
        except Exception as e:  # noqa: BLE001 - e.g. comparing incomparable values
            return False, f"{type(e).__name__}: {e}"[:300]


def _shown(test: ast.expr, names: frozenset[str], src: bytes, memo: dict) -> tuple[str, str | None]:
    """How feedback names the test: (input expression, expected text)."""

    def bad(node):
        return _untrusted(node, names, memo)

    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        left, right = test.left, test.comparators[0]
        if bad(left) and not bad(right):
            return _text(src, left), _text(src, right)
        if bad(right) and not bad(left):
            return _text(src, right), _text(src, left)
    if _trusted_call(test, names) and len(test.args) >= 2:
        a, b = test.args[0], test.args[1]
        if bad(a) and not bad(b):
            return _text(src, a), _text(src, b)
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return _text(src, test.operand), "a falsy value"
    return _text(src, test), "a truthy value" if bad(test) else None


@functools.lru_cache(maxsize=1 << 16)
@functools.lru_cache(maxsize=1 << 14)
def split_assert(source: str, entry_point: str | None = None) -> SplitAssert:
    """Split one ``assert`` statement; raises ValueError naming the problem.

    Cached (the service needs each test's split for every program it judges on it: to
    validate the suite, to send the holes, to judge and to show it); a `SplitAssert` is
    immutable, and its skeleton runs in a fresh namespace each time.

    Args:
      source: the assert statement.
      entry_point: the function under test, when its name is also a built-in's (MBPP/126
        defines ``sum``): that name is then evaluated in the child. Every other built-in name
        in a test is evaluated on the trusted side with the *real* built-in, even if the
        program defines a global of that name — so ``def set(x): return 0`` cannot make
        ``set(f(x)) == set((4, 5))`` hold.
    """
    names = frozenset([entry_point]) if entry_point else frozenset()
    source = source.strip()
    try:
        with warnings.catch_warnings():  # e.g. "invalid escape sequence" in MBPP's regex tests
            warnings.simplefilter("ignore")
            module = ast.parse(source)
    except SyntaxError as e:
        raise ValueError(f"the test {source[:80]!r} is not valid Python ({e.msg})") from None
    if len(module.body) != 1 or not isinstance(module.body[0], ast.Assert):
        raise ValueError(
            f"the test {source[:80]!r} is not a single assert statement; "
            "write one `assert ...` per test, or use a 'check' suite"
        )
    test = module.body[0].test
    raw, memo = source.encode("utf-8"), {}
    shown_input, shown_expected = _shown(test, names, raw, memo)  # before the tree is rewritten
    splitter = _Splitter(names, raw, memo)
    skeleton = splitter.visit(test)
    expr = ast.Expression(body=skeleton)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = compile(expr, "<assert>", "eval")
    return SplitAssert(
        source=source,
        holes=tuple(splitter.holes),
        skeleton=code,
        shown_input=shown_input,
        shown_expected=shown_expected,
    )


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
        for i, t in enumerate(tests if parse_tests else ()):
            try:
                split_assert(t, entry)
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
    parts = [serial.short_repr(a, limit) for a in args]
    parts += [f"{k}={serial.short_repr(v, limit)}" for k, v in (kwargs or {}).items()]
    text = f"{entry_point}({', '.join(parts)})"
    return text if len(text) <= limit else text[: limit - 15] + "... [truncated]"
