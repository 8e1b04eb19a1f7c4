"""The trusted/untrusted split of assert tests (`split_assert`).

An ``assert`` is cut into *holes* — maximal subexpressions that mention a name the trusted side
does not know (the program's functions, the setup's variables) — which the sandboxed child
evaluates and reports as raw values, and a *skeleton* the service evaluates over those values
with real built-ins (``==``, ``set``, ``sorted``, ``math.isclose``, ``not``, ...). ``assert f(x)
== [1, 2]`` sends only ``f(x)`` to the child; ``[1, 2]`` never leaves the service. Known gaps:
both operands of ``and``/``or`` are evaluated (no short-circuit), and a hole that mentions only
setup names is still evaluated in the child (no shipped dataset has one).

Used by the service only (it needs `ast`); the client's validation (`suites`) does not import it.
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
