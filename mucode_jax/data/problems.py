"""Benchmark loaders: MBPP, sanitized MBPP, HumanEval, MBPP+ and CodeContests → `Problem`.

Each loader reads a local JSONL file when `path` is given (the files in ``shared/data`` beside
the repository), or the Hugging Face hub copy through `datasets.load_dataset` otherwise. Test
suites are in the executor's schema (`mucode_jax.execution.suites`):

* ``mbpp`` / ``mbpp_sanitized``: the first assert is public, the rest (plus MBPP's challenge
  tests) private; ``test_setup_code`` / ``test_imports`` are the suites' setup. Splits by task id
  (the standard split): prompt 1-10, test 11-510, validation 511-600, train 601-974.
  ``public_tests="all"`` is the official ``mbpp_train`` environment: every assert of
  ``test_list`` is public (shown, fed back, deciding the stop) and the private suite is the same;
  ``challenge_tests=False`` leaves the challenge tests out (the official code never runs them).
* ``humaneval``: public = the first example of the docstring, as an assert (its inputs are
  judged against the canonical solution's output, because a few docstrings are wrong, e.g.
  HumanEval/116); when the docstring has no usable example, the first assert of ``check``.
  Private = the ``check`` function (a 'check' suite: the canonical solution's calls are recorded).
* ``mbpp_plus``: public = the first assert of the ``assertion`` field (the prompt's assert with
  MBPP+'s corrected expected value; 11 prompts keep a stale one); private = base + plus inputs
  against the canonical solution's outputs with the task's ``atol`` (evalplus semantics, incl.
  its set-equality and not-None tasks).
* ``humanevalpack``: HumanEvalPack's Python split (the official μCode HumanEval): the prompt
  shows the whole ``example_test`` block; public = its second assert (its only one when it has
  one); private = the rest of the example check, then ``test``.
* ``codecontests``: public/private stdin/stdout tests (plus generated tests when present and
  ``generated_tests``); the first Python 3 solution is the reference (it also sets the CPU
  limit, evalplus-style). ``cc_1k``: the official μCode training set (``rl-llm-coders/cc_1k``,
  the CodeContests schema). Hub loads of both skip problems without public tests, as the
  official code does.

``preamble="official"`` puts `OFFICIAL_PREAMBLE` (HumanEval: and the prompt's header, the lines
before its ``def``) before every program, and lays the suites and the prompt's test block out
as the official script does (MBPP: the ``test_setup_code`` line before the asserts).
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import doctest
import json
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mucode_jax.types import Problem, TestSuite

DATASETS = (
    "mbpp",
    "mbpp_sanitized",
    "humaneval",
    "humanevalpack",
    "mbpp_plus",
    "codecontests",
    "cc_1k",
)
HUB = {
    "mbpp": ("google-research-datasets/mbpp", "full"),
    "mbpp_sanitized": ("google-research-datasets/mbpp", "sanitized"),
    "humaneval": ("openai/openai_humaneval", None),
    "humanevalpack": ("bigcode/humanevalpack", "python"),
    "mbpp_plus": ("evalplus/mbppplus", None),
    "codecontests": ("deepmind/code_contests", None),
    "cc_1k": ("rl-llm-coders/cc_1k", None),
}
PUBLIC_TESTS = ("first", "all")
PREAMBLES = ("none", "official")
# The official μCode pipeline's import block, one statement a line, placed before every program
# (from DeepSeek-Coder's HumanEval harness).
OFFICIAL_IMPORTS = (
    "import math",
    "import re",
    "import copy",
    "import datetime",
    "import itertools",
    "import collections",
    "import heapq",
    "import functools",
    "import hashlib",
    "import numpy",
    "import numpy as np",
    "import string",
    "from typing import *",
    "from collections import *",
    "import os",
    "import sys",
)
OFFICIAL_PREAMBLE = "\n".join(OFFICIAL_IMPORTS) + "\n"
MBPP_SPLITS = {
    "prompt": range(1, 11),
    "test": range(11, 511),
    "validation": range(511, 601),
    "train": range(601, 975),
}
# evalplus (evalplus/eval/__init__.py): tasks judged by set equality, and tasks whose bool
# output means "the reference returns something other than None".
MBPP_PLUS_SET_EQ = {
    "similar_elements",
    "find_char_long",
    "common_in_nested_lists",
    "extract_singly",
    "larg_nnum",
    "intersection_array",
    "find_dissimilar",
    "Diff",
}
MBPP_PLUS_NOT_NONE = {"check_str", "text_match_three", "text_starta_endb"}
# 5 canonical MBPP+ solutions that fail their own asserts (Mbpp/120, 164, 295,
# 442, 574). Here only Mbpp/295 does: its canonical `sum_div` counts the number itself
# (sum_div(8) == 15.0, the assert says 7). 120, 442 and 574 pass because `math.isclose` in their
# asserts is evaluated on the trusted side, where `math` is available without an import; 164's
# first assert agrees with its rewritten canonical solution.
MBPP_PLUS_KNOWN_FAILURES = ("Mbpp/295",)


class RowError(ValueError):
    """A malformed dataset row (the message names the file, line and field)."""


# ---------------------------------------------------------------------------------------------
# Reading rows.
# ---------------------------------------------------------------------------------------------


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    try:
        f = open(path, encoding="utf-8")  # noqa: SIM115
    except OSError as e:
        raise FileNotFoundError(
            f"Cannot read dataset file {str(path)!r} ({e.strerror}); pass the path of the JSONL file."
        ) from None
    with f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise RowError(f"{path}:{lineno}: the line is not valid JSON ({e.msg}).") from None
            if not isinstance(row, dict):
                raise RowError(f"{path}:{lineno}: expected a JSON object per line.")
            yield lineno, row


def _hub_rows(name: str, split: str | None) -> Iterator[tuple[int, dict]]:
    import datasets  # heavy; only for hub loads

    repo, config = HUB[name]
    hub_split = {
        "mbpp": "train+validation+test+prompt",
        "mbpp_sanitized": "train+validation+test+prompt",
    }
    if name in hub_split:
        ds = datasets.load_dataset(repo, config, split=hub_split[name])
    elif name == "cc_1k":
        ds = datasets.load_dataset(repo, split=split or "train")
    elif name == "codecontests":
        ds = datasets.load_dataset(repo, split={"validation": "valid"}.get(split, split or "train"))
    else:
        ds = datasets.load_dataset(repo, config, split="test")
    for i, row in enumerate(ds, start=1):
        yield i, dict(row)


class _Row:
    """Field access that names the file, line and field in its errors."""

    def __init__(self, source: str, lineno: int, row: dict):
        self.source, self.lineno, self.row = source, lineno, row

    def fail(self, field: str, what: str):
        raise RowError(f"{self.source}:{self.lineno}: field {field!r} {what}.")

    def get(self, field: str, kind: type | tuple, *, default: Any = ..., what: str = "") -> Any:
        if field not in self.row or self.row[field] is None:
            if default is not ...:
                return default
            self.fail(field, f"is missing{what and ' (expected ' + what + ')'}")
        value = self.row[field]
        if not isinstance(value, kind):
            self.fail(field, f"has type {type(value).__name__}{what and ', expected ' + what}")
        return value

    def str_list(self, field: str, *, default: Any = ..., nonempty: bool = False) -> list[str]:
        value = self.get(field, list, default=default, what="a list of strings")
        if not all(isinstance(v, str) for v in value):
            self.fail(field, "must be a list of strings")
        if nonempty and not value:
            self.fail(field, "is empty (expected at least one test)")
        return value


# ---------------------------------------------------------------------------------------------
# Rendering.
# ---------------------------------------------------------------------------------------------


def public_tests_text(tests: TestSuite, entry_point: str | None = None) -> str:
    """A suite's tests as prompt text: assert lines, or Input/Output examples for stdio."""
    kind = tests.get("kind")
    if kind == "assert":
        return "\n".join(t.strip() for t in tests["tests"])
    if kind == "stdio":
        blocks = []
        for c in tests["cases"]:
            blocks.append(f"Input:\n{c['input'].rstrip()}\nOutput:\n{c['output'].rstrip()}")
        return "\n\n".join(blocks)
    if kind == "function" and "shown" in tests:
        return "\n".join(tests["shown"])
    if kind == "function":
        ep = tests["entry_point"]
        return "\n".join(f"{ep}({', '.join(map(repr, args))})" for args in tests["inputs"])
    return ""


def _parse(source: str, **kw) -> ast.AST:
    with warnings.catch_warnings():  # "invalid escape sequence" in MBPP regex tests
        warnings.simplefilter("ignore")
        return ast.parse(source, **kw)


def _entry_point(test: str, reference: str | None = None) -> str | None:
    """The function a test calls: a top-level def of the reference (even one named like a
    built-in, e.g. MBPP/126's ``sum``), else the first called name that is not a built-in."""
    try:
        node = _parse(test.strip())
    except SyntaxError:
        return None
    called = [
        sub.func.id
        for sub in ast.walk(node)
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name)
    ]
    if reference:
        try:
            defined = {n.name for n in _parse(reference).body if isinstance(n, ast.FunctionDef)}
        except SyntaxError:
            defined = set()
        for name in called:
            if name in defined:
                return name
    return next((name for name in called if not hasattr(builtins, name)), None)


def _crlf(text: str) -> str:
    return text.replace("\r\n", "\n")


# ---------------------------------------------------------------------------------------------
# MBPP.
# ---------------------------------------------------------------------------------------------


def _mbpp_split(task_id: int) -> str:
    for name, ids in MBPP_SPLITS.items():
        if task_id in ids:
            return name
    return "extra"


def _mbpp_problem(r: _Row, variant: str, opts: dict) -> Problem:
    task_id = r.get("task_id", int, what="an integer")
    if variant == "full":
        statement = r.get("text", str, what="a string")
        tests = r.str_list("test_list", nonempty=True)
        challenge = r.str_list("challenge_test_list", default=[])
        setup = _crlf(r.get("test_setup_code", str, default=""))
        dataset_id = f"mbpp/{task_id}"
    else:
        statement = r.get("prompt", str, what="a string")
        tests = r.str_list("test_list", nonempty=True)
        challenge = []
        setup = "\n".join(r.str_list("test_imports", default=[]))
        dataset_id = f"mbpp_sanitized/{task_id}"
    code = _crlf(r.get("code", str, what="a string"))
    tests = [_crlf(t).strip() for t in tests]
    challenge = [_crlf(t).strip() for t in challenge]
    entry = _entry_point(tests[0], code)
    if not opts["challenge_tests"]:
        challenge = []
    official = opts["preamble"] == "official"
    # The official script: program, then the setup line (even when empty), then the asserts.
    layout_setup = setup + "\n" if official else setup
    if opts["public_tests"] == "all":  # the official mbpp_train environment
        public: TestSuite = {"kind": "assert", "setup": layout_setup, "tests": list(tests)}
        private: TestSuite = {"kind": "assert", "setup": layout_setup, "tests": tests + challenge}
    else:
        public = {"kind": "assert", "setup": layout_setup, "tests": tests[:1]}
        private = {"kind": "assert", "setup": layout_setup, "tests": tests[1:] + challenge}
    if not private["tests"]:
        private = dict(public)
    if entry is not None:
        public["entry_point"] = private["entry_point"] = entry
    text = public_tests_text(public)
    if official:  # the prompt's test block is the script's: the setup line, then the asserts
        text = f"{setup}\n{text}"
    return Problem(
        id=dataset_id,
        dataset="mbpp",
        statement=statement if official else statement.strip(),
        public_tests=public,
        private_tests=private,
        public_tests_text=text,
        entry_point=entry,
        reference=code,
        metadata={
            "task_id": task_id,
            "split": _mbpp_split(task_id),
            "variant": variant,
            "public_tests": opts["public_tests"],
        },
    )


# ---------------------------------------------------------------------------------------------
# HumanEval.
# ---------------------------------------------------------------------------------------------

_EXAMPLE_ARROW = r"\s*(?:==|➞|=>|->|→|should return|returns?)\s*"


def _literal(text: str) -> Any:
    text = text.strip().rstrip(".,")
    text = {"true": "True", "false": "False"}.get(text, text)
    return ast.literal_eval(text)


def _docstring_example(prompt: str, entry_point: str) -> tuple[list, Any, str] | None:
    """The first docstring example ``f(args) -> value`` with literal args: (args, value, text)."""
    candidates: list[tuple[str, str]] = []
    for ex in doctest.DocTestParser().get_examples(prompt):
        if ex.want.strip():
            candidates.append((ex.source.strip(), ex.want.strip()))
    pattern = re.compile(
        r"^\s*(?:>>>\s*)?(" + re.escape(entry_point) + r"\(.*\))" + _EXAMPLE_ARROW + r"(.+?)\s*$"
    )
    for line in prompt.splitlines():
        m = pattern.match(line)
        if m:
            candidates.append((m.group(1), m.group(2)))
    for call, want in candidates:
        try:
            node = _parse(call, mode="eval").body
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id != entry_point or node.keywords:
                continue
            args = [ast.literal_eval(a) for a in node.args]
            value = _literal(want)
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
            continue
        return args, value, f"assert {call} == {value!r}"
    return None


class _Rename(ast.NodeTransformer):
    def __init__(self, old: str, new: str):
        self.old, self.new = old, new

    def visit_Name(self, node):
        return ast.Name(id=self.new, ctx=node.ctx) if node.id == self.old else node


def _first_check_assert(check: str, entry_point: str) -> str | None:
    tree = _parse(check)
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
    if fn is None:
        return None
    arg = fn.args.args[0].arg if fn.args.args else "candidate"
    for stmt in fn.body:
        if not isinstance(stmt, ast.Assert):
            continue
        names = {n.id for n in ast.walk(stmt.test) if isinstance(n, ast.Name)}
        if arg in names and names <= {
            arg,
            "True",
            "False",
            "None",
            "abs",
            "set",
            "sorted",
            "len",
            "round",
        }:
            stmt = ast.Assert(test=_Rename(arg, entry_point).visit(stmt.test), msg=None)
            return ast.unparse(stmt)
    return None


def _humaneval_fields(r: _Row, task_example: str) -> tuple[str, str, str, str, str]:
    """The fields HumanEval and HumanEvalPack share: task id, prompt, entry point, test code
    and the reference (prompt + canonical solution)."""
    task_id = r.get("task_id", str, what=f"a string like {task_example!r}")
    prompt = r.get("prompt", str, what="a string")
    entry = r.get("entry_point", str, what="a function name")
    canonical = r.get("canonical_solution", str, what="a string")
    test = r.get("test", str, what="the check(candidate) code")
    return task_id, prompt, entry, test, prompt + canonical


def _humaneval_problem(r: _Row) -> Problem:
    task_id, prompt, entry, check, reference = _humaneval_fields(r, "HumanEval/0")
    try:
        check_tree = _parse(check)
    except SyntaxError as e:
        r.fail("test", f"does not parse ({e.msg})")
    if not any(isinstance(n, ast.FunctionDef) and n.name == "check" for n in check_tree.body):
        r.fail("test", "does not define check(candidate)")
    example = _docstring_example(prompt, entry)
    if example is not None:
        args, _, shown = example
        public: TestSuite = {
            "kind": "function",
            "entry_point": entry,
            "inputs": [args],
            "reference": reference,
            "shown": [shown],
        }
    private: TestSuite = {
        "kind": "check",
        "entry_point": entry,
        "check": check,
        "reference": reference,
    }
    text = None
    if example is None:
        first = _first_check_assert(check, entry)
        if first is not None:
            public = {"kind": "assert", "setup": "", "tests": [first], "entry_point": entry}
        else:  # e.g. HumanEval/32: only loops in check(); the docstring's >>> lines are shown
            public = dict(private)
            text = "\n".join(
                ln.strip() for ln in prompt.splitlines() if ln.strip().startswith(">>>")
            )
    return Problem(
        id=task_id.replace("HumanEval/", "humaneval/"),
        dataset="humaneval",
        statement=prompt,
        public_tests=public,
        private_tests=private,
        public_tests_text=text if text is not None else public_tests_text(public),
        entry_point=entry,
        reference=reference,
        metadata={"task_id": task_id},
    )


# ---------------------------------------------------------------------------------------------
# HumanEvalPack (Python).
# ---------------------------------------------------------------------------------------------

_ASSERT_LINE = re.compile(r"assert .+?(?=\n)")


def _check_function(r: _Row, field: str, code: str, name: str) -> list[ast.stmt]:
    """The statements of a ``def check(x): ...`` block without its top-level ``check(...)``
    call, with the function renamed to `name`."""
    try:
        tree = _parse(code)
    except SyntaxError as e:
        r.fail(field, f"does not parse ({e.msg})")
    body = []
    found = False
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            func = node.value.func
            if isinstance(func, ast.Name) and func.id == "check":
                continue  # the script's own call; the check suite calls it with the candidate
        if isinstance(node, ast.FunctionDef) and node.name == "check":
            node.name, found = name, True
        body.append(node)
    if not found:
        r.fail(field, "does not define check(candidate)")
    return body


def _combined_check(parts: list[list[ast.stmt]], names: list[str]) -> str:
    """One ``check(candidate)`` that runs the named check functions in order."""
    calls = "\n".join(f"    {n}(candidate)" for n in names)
    head = ast.unparse(ast.Module(body=[s for p in parts for s in p], type_ignores=[]))
    return f"{head}\n\n\ndef check(candidate):\n{calls}\n"


def _humanevalpack_problem(r: _Row) -> Problem:
    task_id, prompt, entry, test, reference = _humaneval_fields(r, "Python/0")
    example = r.get("example_test", str, what="the example check(candidate) code")
    # The official split: of the example block's asserts the second is public (the first is
    # often a debugging `assert True`), the rest of the block and `test` are private.
    block = example.strip()
    found = _ASSERT_LINE.findall(block)
    tests_body = _check_function(r, "test", test, "_check_test")
    example_whole = _check_function(r, "example_test", block, "_check_example")  # validates
    if found:
        shown = found[min(1, len(found) - 1)]
        rest = block.replace(shown, "", 1).strip()
        public: TestSuite = {
            "kind": "assert",
            "setup": "",
            "tests": [shown.strip()],
            "entry_point": entry,
        }
    else:  # no assert line: the whole example check is public
        rest = ""
        public = {
            "kind": "check",
            "entry_point": entry,
            "check": _combined_check([example_whole], ["_check_example"]),
            "reference": reference,
        }
    parts, names = [tests_body], ["_check_test"]
    empty_example = False
    if rest:
        try:
            example_body = _check_function(r, "example_test", rest, "_check_example")
        except RowError:  # only the public assert was in the block: its check is now empty
            example_body, empty_example = [], True
        if example_body:
            parts, names = [example_body, tests_body], ["_check_example", "_check_test"]
    private: TestSuite = {
        "kind": "check",
        "entry_point": entry,
        "check": _combined_check(parts, names),
        "reference": reference,
    }
    number = task_id.split("/")[-1]
    return Problem(
        id=f"humanevalpack/{number}",
        dataset="humaneval",
        statement=prompt,
        public_tests=public,
        private_tests=private,
        public_tests_text=example,
        entry_point=entry,
        reference=reference,
        metadata={"task_id": task_id, "empty_example_check": empty_example},
    )


def _humaneval_header(problem: Problem) -> str:
    """The prompt's lines before its ``def`` (imports, helper functions), as the official
    script puts them before the program."""
    marker = f"def {problem.entry_point}"
    cut = problem.statement.find(marker)
    return problem.statement[:cut] if cut >= 0 else ""


# ---------------------------------------------------------------------------------------------
# MBPP+.
# ---------------------------------------------------------------------------------------------


def _mbpp_plus_problem(r: _Row) -> Problem:
    task_id = r.get("task_id", str, what="a string like 'Mbpp/2'")
    prompt = r.get("prompt", str, what="a string")
    entry = r.get("entry_point", str, what="a function name")
    canonical = r.get("canonical_solution", str, what="a string")
    if "base_input" not in r.row:
        r.fail(
            "base_input",
            "is missing: this is not the MBPP+ v0.1.0 schema (the hub copy 'evalplus/mbppplus' "
            "changed it); pass path= to MbppPlus-v0.1.0.jsonl",
        )
    base = r.get("base_input", list, what="a list of argument lists")
    plus = r.get("plus_input", (list, dict), default=[])
    if plus == {}:  # Mbpp/793 stores "no plus inputs" as {}
        plus = []
    if not isinstance(plus, list):
        r.fail("plus_input", "must be a list of argument lists")
    atol = r.get("atol", (int, float), default=0)
    inputs = base + plus
    if not all(isinstance(a, list) for a in inputs):
        r.fail("plus_input", "must be a list of argument lists")
    body = prompt.strip().strip('"').strip()
    lines = body.splitlines()
    statement = "\n".join(ln for ln in lines if not ln.strip().startswith("assert ")).strip()
    # The public test: the first assert of `assertion` (the prompt's assert with the expected
    # value MBPP+ corrected; 11 prompts still carry the stale MBPP value, e.g. Mbpp/295).
    assertion = r.get("assertion", str, default="")
    asserts = [ln.strip() for ln in assertion.splitlines() if ln.strip().startswith("assert ")]
    asserts = asserts or [ln.strip() for ln in lines if ln.strip().startswith("assert ")]
    if not asserts:
        r.fail("assertion", "has no assert line (expected the v0.1.0 format)")
    compare = (
        "set"
        if entry in MBPP_PLUS_SET_EQ
        else "not_none"
        if entry in MBPP_PLUS_NOT_NONE
        else "exact"
    )
    public: TestSuite = {"kind": "assert", "setup": "", "tests": asserts[:1], "entry_point": entry}
    private: TestSuite = {
        "kind": "function",
        "entry_point": entry,
        "inputs": inputs,
        "reference": canonical,
        "atol": float(atol),
        "compare": compare,
    }
    return Problem(
        id=task_id.replace("Mbpp/", "mbpp_plus/"),
        dataset="mbpp_plus",
        statement=statement,
        public_tests=public,
        private_tests=private,
        public_tests_text=public_tests_text(public),
        entry_point=entry,
        reference=canonical,
        metadata={"task_id": task_id, "num_base": len(base), "num_plus": len(plus)},
    )


# ---------------------------------------------------------------------------------------------
# CodeContests.
# ---------------------------------------------------------------------------------------------


def _cases(r: _Row, field: str) -> list[dict[str, str]]:
    value = r.get(
        field, dict, default={"input": [], "output": []}, what="{'input': [...], 'output': [...]}"
    )
    ins, outs = value.get("input"), value.get("output")
    if not isinstance(ins, list) or not isinstance(outs, list) or len(ins) != len(outs):
        r.fail(field, "must hold equally long 'input' and 'output' lists")
    if not all(isinstance(x, str) for x in ins + outs):
        r.fail(field, "must hold strings")
    return [{"input": i, "output": o} for i, o in zip(ins, outs)]


def _codecontests_problem(r: _Row, index: int, opts: dict) -> Problem | None:
    name = r.get("name", str, what="a string")
    description = r.get("description", str, what="a string")
    public_cases = _cases(r, "public_tests")
    private_cases = _cases(r, "private_tests")
    if opts["generated_tests"]:
        private_cases += _cases(r, "generated_tests")
    if not public_cases:
        if opts["skip_no_public"]:
            return None  # the official code drops these (nothing to show or feed back)
        r.fail("public_tests", "is empty (expected at least one example)")
    if not private_cases:
        private_cases = list(public_cases)
    sols = r.get("solutions", dict, default={"language": [], "solution": []})
    langs, codes = sols.get("language", []), sols.get("solution", [])
    reference = next((c for lang, c in zip(langs, codes) if lang == 3), None)
    public: TestSuite = {"kind": "stdio", "cases": public_cases}
    private: TestSuite = {"kind": "stdio", "cases": private_cases}
    if reference is not None:
        public["reference"] = reference
        private["reference"] = reference
    return Problem(
        id=f"codecontests/{name.split('.')[0].strip().replace(' ', '_')}",
        dataset="codecontests",
        statement=description,
        public_tests=public,
        private_tests=private,
        public_tests_text=public_tests_text(public),
        entry_point=None,
        reference=reference,
        metadata={
            "name": name,
            "difficulty": r.row.get("difficulty"),
            "tags": r.row.get("cf_tags", []),
            "source": r.row.get("source"),
            "index": index,
        },
    )


# ---------------------------------------------------------------------------------------------
# Entry point.
# ---------------------------------------------------------------------------------------------


def _with_preamble(problem: Problem, preamble: str) -> Problem:
    """`problem` whose suites run `preamble` before the program."""
    return dataclasses.replace(
        problem,
        public_tests={**problem.public_tests, "preamble": preamble},
        private_tests={**problem.private_tests, "preamble": preamble},
    )


OPTION_FIELDS = ("public_tests", "challenge_tests", "preamble", "generated_tests")


def options_from_config(cfg: Any) -> dict[str, Any]:
    """The `load_problems` options a problem-set config (``config.data.train``) sets."""
    return {k: cfg.get(k) for k in OPTION_FIELDS if cfg.get(k) is not None}


def load_problems(
    name: str,
    *,
    path: str | Path | None = None,
    split: str | None = None,
    public_tests: str = "first",
    challenge_tests: bool = True,
    preamble: str = "none",
    generated_tests: bool = True,
) -> list[Problem]:
    """Load a benchmark as `Problem`s.

    Args:
      name: one of `DATASETS`.
      path: a local JSONL file; without it the HF hub copy is loaded with `datasets`.
      split: MBPP/sanitized MBPP: ``"prompt"``, ``"test"``, ``"validation"`` or ``"train"``
        (by task id); CodeContests hub loads: ``"train"``, ``"valid"``, ``"test"``; cc_1k:
        ``"train"``. None loads everything.
      public_tests: MBPP: ``"first"`` (the first assert public, the rest private; the official
        evaluation environment) or ``"all"`` (every assert public; the official ``mbpp_train``
        environment). Other datasets: ``"first"`` only.
      challenge_tests: MBPP: add ``challenge_test_list`` to the private tests (the official
        code never runs them: False).
      preamble: ``"official"`` puts `OFFICIAL_PREAMBLE` (HumanEval: plus the prompt's header)
        before every program and lays suites and prompt out as the official script; ``"none"``.
      generated_tests: CodeContests: add ``generated_tests`` to the private tests (the
        official code uses ``private_tests`` only: False).

    Raises:
      ValueError: unknown name, split or option; `RowError` for a malformed row (file, line,
        field).
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; use one of {', '.join(DATASETS)}.")
    if public_tests not in PUBLIC_TESTS:
        raise ValueError(
            f"Unknown public-test policy {public_tests!r}; use one of {', '.join(PUBLIC_TESTS)}."
        )
    if public_tests != "first" and name not in ("mbpp", "mbpp_sanitized"):
        raise ValueError(
            f"public_tests={public_tests!r} is for MBPP only; {name} has one public/private split "
            "(use public_tests='first')."
        )
    if preamble not in PREAMBLES:
        raise ValueError(f"Unknown preamble {preamble!r}; use one of {', '.join(PREAMBLES)}.")
    if split is not None and name in ("mbpp", "mbpp_sanitized") and split not in MBPP_SPLITS:
        raise ValueError(f"Unknown MBPP split {split!r}; use one of {', '.join(MBPP_SPLITS)}.")
    if split is not None and name in ("humaneval", "humanevalpack", "mbpp_plus"):
        raise ValueError(
            f"{name} has a single test split; call load_problems({name!r}) without split."
        )
    if path is not None:
        source, rows = str(path), _read_jsonl(Path(path))
    else:
        source, rows = f"hub:{HUB[name][0]}", _hub_rows(name, split)
    opts = {
        "public_tests": public_tests,
        "challenge_tests": challenge_tests,
        "preamble": preamble,
        "generated_tests": generated_tests,
        "skip_no_public": path is None or name == "cc_1k",
    }
    build: Callable[[_Row, int], Problem | None] = {
        "mbpp": lambda r, i: _mbpp_problem(r, "full", opts),
        "mbpp_sanitized": lambda r, i: _mbpp_problem(r, "sanitized", opts),
        "humaneval": lambda r, i: _humaneval_problem(r),
        "humanevalpack": lambda r, i: _humanevalpack_problem(r),
        "mbpp_plus": lambda r, i: _mbpp_plus_problem(r),
        "codecontests": lambda r, i: _codecontests_problem(r, i, opts),
        "cc_1k": lambda r, i: _codecontests_problem(r, i, opts),
    }[name]
    built = [build(_Row(source, lineno, row), i) for i, (lineno, row) in enumerate(rows)]
    problems = [p for p in built if p is not None]
    if split is not None and name in ("mbpp", "mbpp_sanitized"):
        problems = [p for p in problems if p.metadata["split"] == split]
    if preamble == "official":
        problems = [
            _with_preamble(
                p,
                OFFICIAL_PREAMBLE + _humaneval_header(p) + "\n\n"
                if p.dataset == "humaneval"
                else OFFICIAL_PREAMBLE,
            )
            for p in problems
        ]
    return problems
