"""The official μCode execution protocol: the import preamble, programs run as scripts, the
raw-stderr feedback body (deterministic, bounded) and CodeContests' ``[Error]`` lines."""

from __future__ import annotations

from mucode_jax import prompts as P
from mucode_jax.data import load_problems
from mucode_jax.execution import Executor
from mucode_jax.execution import feedback as F

OFFICIAL = dict(challenge_tests=False, preamble="official")


def _mbpp(data_dir, split, **kw):
    path = data_dir / "mbpp" / "mbpp.jsonl"
    return {p.id: p for p in load_problems("mbpp", path=path, split=split, **kw)}


def _bare(suite):
    return {k: v for k, v in suite.items() if k != "preamble"}


def test_a_reference_without_its_import_passes_under_the_preamble(data_dir, executor):
    p = _mbpp(data_dir, "test", **OFFICIAL)["mbpp/55"]  # tn_gp: uses math.pow
    code = p.reference.replace("\r\n", "\n")
    assert code.startswith("import math\n")
    code = code.removeprefix("import math\n")
    assert executor.run(code, p.private_tests).passed
    r = executor.run(code, _bare(p.private_tests))
    assert r.verdict == "runtime_error" and "NameError: name 'math'" in r.tests[0].error
    # numpy is there too (the preamble imports it; the executor's interpreter has it).
    uses_np = "def tn_gp(a, n, r):\n    return int(a * np.power(r, n - 1))\n"
    assert executor.run(uses_np, p.public_tests).passed


def test_a_failing_mbpp_program_gets_the_raw_traceback(data_dir, executor):
    body = P.Feedback(body="official")
    p = _mbpp(data_dir, "test", **OFFICIAL)["mbpp/11"]
    wrong = "def remove_Occ(s, ch):\n    return s"
    r = executor.run(wrong, p.public_tests)
    text = body.text(r, code=wrong, tests=p.public_tests)
    # 16 preamble lines, 2 program lines, the (empty) setup line, then the assert.
    assert text == (
        "Traceback (most recent call last):\n"
        '  File "solution.py", line 20, in <module>\n'
        '    assert remove_Occ("hello","l") == "heo"\n'
        "AssertionError\n"
    )
    assert body.message(text)["content"] == "Feedback: " + text.strip()
    crash = "def remove_Occ(s, ch):\n    x = [1]\n    return x[5]"
    texts = set()
    for _ in range(2):  # the same text every run: no sandbox path, no temporary name
        r = executor.run(crash, p.public_tests)
        texts.add(body.text(r, code=crash, tests=p.public_tests))
    (text,) = texts
    assert '  File "solution.py", line 21, in <module>\n    assert remove_Occ(' in text
    assert '  File "solution.py", line 19, in remove_Occ\n    return x[5]\n' in text
    assert text.rstrip().endswith("IndexError: list index out of range")
    assert "<solution>" not in text and "<test" not in text and "/tmp" not in text
    # A train problem: every assert public; the first failing one is reported.
    q = _mbpp(data_dir, "train", public_tests="all", **OFFICIAL)["mbpp/601"]
    half = (
        q.reference.replace("\r\n", "\n").strip()
        + "\n_real = max_chain_length\n"
        + ("def max_chain_length(arr, n):\n    return 3 if n == 4 and arr[0].a == 5 else -1")
    )
    r = executor.run(half, q.public_tests)
    assert [t.verdict for t in r.tests] == ["passed", "wrong_answer", "wrong_answer"]
    line = 16 + half.count("\n") + 1 + 1 + 1 + 1
    text = body.text(r, code=half, tests=q.public_tests)
    assert f"line {line}, in <module>\n    {q.public_tests['tests'][1]}\n" in text
    # Time-outs, syntax errors, no program; long output stays within the budget.
    loop = "def remove_Occ(s, ch):\n    while True:\n        pass"
    r = executor.run(loop, p.public_tests, limits={"cpu_seconds": 0.3, "timeout_reruns": 0})
    assert body.text(r, code=loop, tests=p.public_tests) == "Code execution timed out"
    broken = "def remove_Occ(s, ch:\n    return s"
    r = executor.run(broken, p.public_tests)
    text = body.text(r, code=broken, tests=p.public_tests)
    assert text.startswith('  File "solution.py", line 17\n') and "SyntaxError" in text
    r = executor.run("", p.public_tests)
    assert body.text(r, code="", tests=p.public_tests).endswith(
        "NameError: name 'remove_Occ' is not defined\n"
    )
    noisy = "import sys\ndef remove_Occ(s, ch):\n    sys.stderr.write('x' * 50000)\n    return s"
    r = executor.run(noisy, p.public_tests)
    text = F.official(r, noisy, p.public_tests, max_chars=2000)
    assert len(text) <= 2000 and text.rstrip().endswith("AssertionError")
    assert executor.run(p.reference, p.public_tests).passed
    assert body.text(executor.run(p.reference, p.public_tests)) == "Code passed all tests"


def test_main_blocks_run_when_the_program_runs_as_a_script(data_dir, executor):
    p = _mbpp(data_dir, "test", **OFFICIAL)["mbpp/11"]
    code = (
        "def remove_Occ(s, ch):\n    return s.replace(ch, '')\n"
        "if __name__ == '__main__':\n    raise ValueError('main ran')\n"
    )
    assert executor.run(code, p.public_tests).passed  # loaded as a module: the block is skipped
    r = executor.run(code, {**p.public_tests, "script": True})
    assert r.verdict == "runtime_error" and "main ran" in r.error
    with Executor(workers=1, script=True) as ex:
        r = ex.run(code, p.public_tests)
        assert r.verdict == "runtime_error" and "main ran" in r.error
        assert ex.run(p.reference, p.private_tests).passed


def test_codecontests_official_error_lines(data_dir, executor):
    (p,) = load_problems(
        "codecontests",
        path=data_dir / "codecontests" / "codecontests_train_sample100.jsonl",
        generated_tests=False,
        preamble="official",
    )[:1]
    case = p.public_tests["cases"][0]
    r = executor.run("print(-1)", p.public_tests)
    text = F.official(r, "print(-1)", p.public_tests)
    assert text == (
        f"[Error] AssertionError: Expected output={case['output'].strip(chr(10))} for "
        f"input={case['input']}, but got actual_output=-1"
    )
    r = executor.run("print(1 // 0)", p.public_tests)
    assert (
        F.official(r, "", p.public_tests)
        == "[Error] ZeroDivisionError: integer division or modulo by zero"
    )
    r = executor.run(
        "while True:\n    pass", p.public_tests, limits={"cpu_seconds": 0.3, "timeout_reruns": 0}
    )
    assert F.official(r, "", p.public_tests) == "[Error] TimeoutError: Code execution timed out"
    assert executor.run(p.reference, p.private_tests).passed  # the preamble does not get in the way
