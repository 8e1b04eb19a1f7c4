"""The executor service end to end: verdicts of every suite kind, traces, the CLI, back-pressure."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mucode_jax.execution import Executor, Limits, feedback

ADD = "def add(a, b):\n    return a + b\n"
ASSERTS = {"kind": "assert", "tests": ["assert add(1, 2) == 3", "assert add('a', 'b') == 'ab'"]}
QUICK = Limits(cpu_seconds=1, wall_seconds=4)


def test_assert_verdicts(executor):
    r = executor.run(ADD, ASSERTS)
    assert r.verdict == "passed" and r.num_passed == 2 and r.sandbox in ("bwrap", "fallback")
    r = executor.run("def add(a, b):\n    return a - b\n", ASSERTS)
    assert [t.verdict for t in r.tests] == ["wrong_answer", "runtime_error"]
    assert r.tests[0].got == "-1" and r.tests[0].expected == "3"
    assert "TypeError" in r.tests[1].error
    assert 'File "<solution>", line 2, in add' in r.tests[1].traceback
    assert "harness" not in r.tests[1].traceback  # trimmed to the program's own frames


def test_program_level_verdicts(executor):
    assert executor.run("", ASSERTS).verdict == "no_code"
    assert executor.run(None, ASSERTS).verdict == "no_code"
    r = executor.run("def add(a, b)\n    return 1\n", ASSERTS)
    assert r.verdict == "syntax_error" and "SyntaxError" in r.error
    r = executor.run("import nonexistent_module_xyz\n" + ADD, ASSERTS)
    assert r.verdict == "runtime_error" and "ModuleNotFoundError" in r.tests[0].error


def test_setup_runs_after_the_program(executor):
    code = "class Node:\n    def __init__(self, v):\n        self.v = v\n\ndef val(n):\n    return n.v\n"
    suite = {"kind": "assert", "setup": "root = Node(7)", "tests": ["assert val(root) == 7"]}
    assert executor.run(code, suite).passed


def test_stdio_verdicts(executor):
    suite = {
        "kind": "stdio",
        "cases": [{"input": "1 2\n", "output": "3\n"}, {"input": "2 2\n", "output": "4.0\n"}],
    }
    assert executor.run("a, b = map(int, input().split())\nprint(a + b)", suite).passed
    r = executor.run("a, b = map(int, input().split())\nprint(a * b + 2)", suite)
    assert [t.verdict for t in r.tests] == ["wrong_answer", "wrong_answer"]
    r = executor.run("import sys\nprint(3)\nsys.exit(1)", suite)
    assert r.tests[0].verdict == "runtime_error"
    assert executor.run("print(sum(map(int, input().split())))\nexit()", suite).passed


def test_function_suite_uses_reference_outputs_and_atol(executor):
    suite = {
        "kind": "function",
        "entry_point": "area",
        "inputs": [[1], [2.5], [0]],
        "reference": "import math\ndef area(r):\n    return math.pi * r * r\n",
        "atol": 1e-4,
    }
    assert executor.run("def area(r):\n    return 3.14159265 * r * r\n", suite).passed
    r = executor.run("def area(r):\n    return 3.14 * r * r\n", suite)
    assert [t.verdict for t in r.tests] == ["wrong_answer", "wrong_answer", "passed"]
    assert r.tests[0].input == "area(1)" and r.tests[0].expected.startswith("3.14159")


def test_check_suite_records_the_reference_calls(executor):
    suite = {
        "kind": "check",
        "entry_point": "inc",
        "check": "def check(candidate):\n    for i in range(5):\n        assert candidate(i) == i + 1\n",
        "reference": "def inc(x):\n    return x + 1\n",
    }
    r = executor.run("def inc(x):\n    return x + 1 if x < 3 else 0\n", suite)
    assert [t.verdict for t in r.tests] == ["passed"] * 3 + ["wrong_answer"] * 2
    assert r.tests[4].input == "inc(4)" and r.tests[4].expected == "5"


def test_cpu_limit_is_derived_from_the_reference(executor):
    slow = "def f(n):\n    s = 0\n    for i in range(n):\n        s += i\n    return s\n"
    suite = {"kind": "function", "entry_point": "f", "inputs": [[3_000_000]], "reference": slow}
    r = executor.run(slow, suite, limits=Limits(cpu_seconds=0.2, cpu_factor=4))
    assert r.passed and r.cpu_limit > 0.2  # max(base, 4 x reference CPU)


def test_trace_feedback_shows_locals(executor):
    code = "def add(a, b):\n    c = a * 2\n    return c + b\n"
    r = executor.run(
        code,
        {"kind": "assert", "tests": ["assert add(1, 2) == 3", "assert add(5, 1) == 6"]},
        trace=True,
    )
    t = r.tests[0]
    assert t.verdict == "wrong_answer" and "c=2" in t.trace
    assert "c=2" in feedback.trace(r)


def test_runs_after_a_crash_continue_with_the_next_test(executor):
    code = "import os\ndef f(x):\n    if x == 1:\n        os._exit(3)\n    return x\n"
    suite = {"kind": "assert", "tests": [f"assert f({i}) == {i}" for i in range(3)]}
    r = executor.run(code, suite)
    assert [t.verdict for t in r.tests] == ["passed", "runtime_error", "passed"]
    assert "status 3" in r.tests[1].error


def test_timeout_marks_the_rest_not_run(executor):
    code = "def f(x):\n    while x == 1:\n        pass\n    return x\n"
    suite = {"kind": "assert", "tests": [f"assert f({i}) == {i}" for i in range(3)]}
    r = executor.run(code, suite, limits=QUICK)
    assert [t.verdict for t in r.tests] == ["passed", "timeout", "timeout"]
    assert "not run" in r.tests[2].error


def test_bad_input_is_rejected_with_a_clear_sentence(executor):
    with pytest.raises(ValueError, match="unknown"):
        executor.submit(ADD, {"kind": "nope"})
    with pytest.raises(ValueError, match="cpu_seconds"):
        executor.submit(ADD, ASSERTS, limits={"cpu_seconds": "fast"})


def test_common_modules_are_imported_where_named_and_work_unnamed(executor):
    """A worker imports a common module (numpy included) before the first program that names it;
    one imported without being named still works (the child imports it), before and after. (The
    fallback cannot import files of an interpreter its uid cannot read: bwrap only.)"""
    suite = {"kind": "assert", "tests": ["assert f() == 3"]}
    named = "import numpy as np\ndef f():\n    return int(np.array([1, 2]).sum())\n"
    hidden = "def f():\n    m = __import__('bis' + 'ect')\n    return m.bisect([1, 2, 3], 2) + 1\n"
    codes = [hidden, named, hidden, named] if executor.sandbox == "bwrap" else [named, named]
    results = executor.map(codes, suite)
    assert [r.verdict for r in results] == ["passed"] * len(codes), results


def test_back_pressure_and_many_in_flight():
    with Executor(workers=1, max_pending=4) as ex:
        futures = [ex.submit(ADD, ASSERTS) for _ in range(30)]
        assert all(f.result().passed for f in futures)


def test_large_frames_and_replies_never_stall_the_pipelined_workers():
    # Specs larger than a pipe (big stdin) and replies larger than a pipe (big stdout), mixed
    # with small runs that a busy worker may hold in its pipe: none of the writes may block.
    big_in = "x" * 300_000 + "\n"
    echo = "import sys\nprint(sys.stdin.read().strip()[:10])\nprint('y' * 200_000)\n"
    stdio = {
        "kind": "stdio",
        "cases": [{"input": big_in, "output": "x" * 10 + "\n" + "y" * 200_000}],
    }
    with Executor(workers=1) as ex:
        futures = []
        for _ in range(3):
            futures += [ex.submit(echo, stdio) for _ in range(2)]
            futures += [ex.submit(ADD, ASSERTS) for _ in range(3)]
        assert all(f.result(timeout=120).passed for f in futures)


def test_verdicts_are_deterministic_under_load(executor):
    busy = "def f(x):\n    s = 0\n    for i in range(200000):\n        s += i\n    return x\n"
    spin = "def f(x):\n    while True:\n        pass\n"
    programs = [busy, spin, "def f(x):\n    return x\n", "def f(x):\n    return -x\n"] * 4
    suite = {"kind": "assert", "tests": ["assert f(1) == 1"]}
    limits = Limits(cpu_seconds=0.5, wall_seconds=4)
    expected = ["passed", "timeout", "passed", "wrong_answer"] * 4
    first = [r.verdict for r in executor.map(programs, suite, limits=limits)]
    second = [r.verdict for r in executor.map(programs, suite, limits=limits)]
    assert first == second == expected


def test_cli_round_trip_with_a_malformed_line(tmp_path: Path):
    lines = [
        json.dumps({"id": "ok", "code": ADD, "tests": ASSERTS}),
        "{not json",
        json.dumps(
            {
                "id": "stdio",
                "code": "print(int(input()) * 2)",
                "tests": {"kind": "stdio", "cases": [{"input": "2\n", "output": "4\n"}]},
            }
        ),
        json.dumps({"id": "badkind", "code": ADD, "tests": {"kind": "nope"}}),
        json.dumps({"id": "badlimit", "code": ADD, "tests": ASSERTS, "limits": {"cpu_seconds": 0}}),
        json.dumps(
            {
                "id": "wrong",
                "code": "def add(a, b):\n    return 0\n",
                "tests": ASSERTS,
                "limits": {"cpu_seconds": 2},
            }
        ),
        json.dumps(
            {"id": "badtest", "code": ADD, "tests": {"kind": "assert", "tests": ["print(1)"]}}
        ),
    ]
    src, out = tmp_path / "programs.jsonl", tmp_path / "results.jsonl"
    src.write_text("\n".join(lines) + "\n")
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mucode_jax.execution",
            "--input",
            str(src),
            "--output",
            str(out),
            "--workers",
            "2",
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr  # malformed lines make the exit status 1
    assert re.search(r"\b4 input line\(s\) could not be run; their records", proc.stderr)
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(results) == 7
    assert (
        results[0]["id"] == "ok" and results[0]["verdict"] == "passed" and results[0]["total"] == 2
    )
    assert results[1]["line"] == 2 and "not valid JSON" in results[1]["error"]
    assert results[2]["verdict"] == "passed"
    assert results[3]["id"] == "badkind" and "unknown" in results[3]["error"]
    assert results[4]["id"] == "badlimit" and "cpu_seconds" in results[4]["error"]
    assert results[5]["verdict"] == "wrong_answer" and results[5]["tests"][0]["got"] == "0"
    assert (
        results[6]["id"] == "badtest"
        and results[6]["line"] == 7
        and "single assert" in results[6]["error"]
    )


def test_the_package_never_imports_jax():
    code = (
        "import sys\nimport mucode_jax.execution as e\n"
        "e.Executor, e.feedback, e.Limits, e.validate_suite\n"
        "from mucode_jax.execution import service, worker, harness, judging, references, jobs\n"
        "from mucode_jax.execution import refcache, __main__\n"
        "assert not any(m == 'jax' or m.startswith('jax.') for m in sys.modules), 'jax imported'\n"
    )
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


def test_cli_refuses_an_output_it_cannot_write_before_running_anything(tmp_path: Path):
    src = tmp_path / "programs.jsonl"
    src.write_text(json.dumps({"id": "ok", "code": ADD, "tests": ASSERTS}) + "\n")
    out = tmp_path / "missing" / "results.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "mucode_jax.execution", "--input", str(src), "--output", str(out)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .endswith(
            f"cannot write --output {str(out)!r} (no writable directory {str(out.parent)!r})."
        )
    )
