"""Verdicts that do not depend on the machine's load.

* CPU limits follow the reference's measured cost on every dataset (``max(base, 4 x ref)``);
* a timeout that load could explain is re-run once and reported as ``confirmed``; one that it
  cannot (an idle program, a limit far above the reference's cost) is reported at once;
* reference costs persist in a workdir's cache file, so a second executor applies the same limits;
* the MBPP references all pass with two CPU-burning processes beside the executor.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from mucode_jax.data import load_problems
from mucode_jax.execution import Executor, Limits
from mucode_jax.execution import __main__ as cli
from mucode_jax.execution.judging import timeout_cause
from mucode_jax.execution.limits import Limits as _Limits

FILES = {
    "mbpp": "mbpp/mbpp.jsonl",
    "mbpp_sanitized": "mbpp/sanitized-mbpp.jsonl",
    "humaneval": "humaneval/HumanEval.jsonl",
    "mbpp_plus": "evalplus/MbppPlus-v0.1.0.jsonl",
    "codecontests": "codecontests/codecontests_train_sample100.jsonl",
}
ASSERT = {"kind": "assert", "tests": ["assert f(1) == 2"]}
SPIN = "def f(x):\n    while True:\n        pass\n"
SLEEP = "import time\ndef f(x):\n    while True:\n        time.sleep(0.2)\n"


def _burn_ref(seconds_of_loop: int) -> str:
    """A correct `f` that spends some CPU first (a reference with a measurable cost)."""
    return f"def f(x):\n    s = 0\n    for i in range({seconds_of_loop}):\n        s += i\n    return x + 1\n"


def _first_run_spins(flag_dir) -> str:
    """Correct, but spins forever the first time it runs: what a load-inflated run looks like."""
    flag = os.path.join(flag_dir, "ran")
    return (
        "import os\n"
        "def f(x):\n"
        f"    if not os.path.exists({flag!r}):\n"
        f"        open({flag!r}, 'w').close()\n"
        "        while True:\n"
        "            pass\n"
        "    return x + 1\n"
    )


@pytest.fixture()
def flag_dir():
    # Directly under /tmp (pytest's tmp_path sits in a 0700 directory): the fallback's programs
    # run as an unprivileged uid.
    d = tempfile.mkdtemp(prefix="mucode-flag-")
    os.chmod(d, 0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def plain_executor():
    # The fallback (no namespaces) lets a program leave a flag in a directory the test made:
    # the only way to make the first run of a program differ from its re-run.
    with Executor(workers=2, sandbox="none") as ex:
        yield ex


# -- the rule, as pure functions ---------------------------------------------------------------


def test_load_suspect_rule():
    base = _Limits(cpu_seconds=4.0)  # factor 4, margin 1: suspect when cpu <= 8 x ref
    assert base.load_suspect(None)  # nothing to compare with
    assert base.load_suspect(2.4)  # MBPP/123: limit max(4, 9.6) sits on the reference's cost
    assert base.with_reference(2.4).load_suspect(2.4)
    assert base.load_suspect(0.5) and not base.load_suspect(0.49)
    assert not base.load_suspect(0.01)  # a 4 s kill of a program 400x slower than the reference
    assert not _Limits(cpu_seconds=4.0, rerun_margin=0.0).load_suspect(0.9)
    with pytest.raises(ValueError, match="timeout_reruns"):
        _Limits(timeout_reruns=-1)
    with pytest.raises(ValueError, match="rerun_margin"):
        _Limits(rerun_margin=-0.5)


def test_timeout_causes():
    lim = _Limits(cpu_seconds=1.0, wall_seconds=5.0)
    assert timeout_cause({"killed": "cpu", "cpu": 1.01}, lim) == "cpu"
    assert timeout_cause({"signal": 24, "cpu": 1.0}, lim) == "cpu"  # SIGXCPU
    assert timeout_cause({"killed": "wall", "cpu": 0.9, "wall": 5.0}, lim) == "starved"
    assert timeout_cause({"killed": "wall", "cpu": 0.01, "wall": 5.0}, lim) == "idle"
    assert timeout_cause({"exit": 0, "cpu": 0.5}, lim) is None
    assert timeout_cause({"signal": 11, "cpu": 0.5}, lim) is None  # a crash, not a timeout


# -- the rule, in the service ------------------------------------------------------------------


def test_a_load_like_timeout_is_rerun_and_overturned(plain_executor, flag_dir):
    r = plain_executor.run(_first_run_spins(flag_dir), ASSERT, limits=Limits(cpu_seconds=0.3))
    assert r.verdict == "passed" and r.reruns == 1, r
    assert r.cpu_seconds >= 0.3  # the discarded first run is counted


def test_without_reruns_the_same_timeout_stands_unconfirmed(plain_executor, flag_dir):
    limits = Limits(cpu_seconds=0.3, timeout_reruns=0)
    r = plain_executor.run(_first_run_spins(flag_dir), ASSERT, limits=limits)
    assert r.verdict == "timeout" and r.reruns == 0
    assert r.tests[0].confirmed is False
    assert r.to_json()["tests"][0]["confirmed"] is False


def test_real_loops_stay_timeouts(plain_executor):
    limits = Limits(cpu_seconds=0.3, wall_seconds=1.5)
    spin, sleep = plain_executor.map([SPIN, SLEEP], ASSERT, limits=limits)
    assert spin.verdict == "timeout" and spin.reruns == 1 and spin.tests[0].confirmed is True
    assert spin.cpu_seconds >= 0.6  # both runs used up the limit
    # An idle program at the wall-clock backstop: load cannot explain it, no re-run.
    assert sleep.verdict == "timeout" and sleep.reruns == 0 and sleep.tests[0].confirmed is True
    assert "wall-clock" in sleep.tests[0].error


def test_a_limit_far_above_the_reference_is_not_rerun(plain_executor):
    suite = {**ASSERT, "reference": "def f(x):\n    return x + 1\n"}
    r = plain_executor.run(SPIN, suite, limits=Limits(cpu_seconds=0.3))
    assert r.reference_cpu is not None and r.reference_cpu < 0.03
    assert r.verdict == "timeout" and r.reruns == 0 and r.tests[0].confirmed is True


def test_a_reference_derived_limit_is_rerun(plain_executor, flag_dir):
    suite = {**ASSERT, "reference": _burn_ref(3_000_000)}  # ~0.15-0.3 s of CPU
    limits = Limits(cpu_seconds=0.05)
    r = plain_executor.run(_first_run_spins(flag_dir), suite, limits=limits)
    assert r.reference_cpu > 0.05
    assert r.cpu_limit == pytest.approx(max(0.05, 4 * r.reference_cpu), abs=1e-3)
    assert r.verdict == "passed" and r.reruns == 1


def test_stdio_timeouts_are_confirmed_per_case(plain_executor):
    suite = {"kind": "stdio", "cases": [{"input": "1\n", "output": "1\n"}] * 2}
    r = plain_executor.run("while True:\n    pass\n", suite, limits=Limits(cpu_seconds=0.2))
    assert [t.verdict for t in r.tests] == ["timeout", "timeout"]
    assert [t.confirmed for t in r.tests] == [True, True] and r.reruns == 2


# -- limits follow the reference on every dataset ----------------------------------------------


@pytest.mark.parametrize("name", list(FILES))
def test_every_suite_carries_its_problems_reference(name, data_dir):
    problems = load_problems(name, path=data_dir / FILES[name])
    with_ref = [p for p in problems if p.reference is not None]
    assert len(with_ref) >= 0.99 * len(problems)
    for p in with_ref:
        assert p.public_tests["reference"] and p.private_tests["reference"], p.id


def test_mbpp_123_gets_a_limit_from_its_reference(executor, data_dir):
    (p,) = [
        p
        for p in load_problems("mbpp_sanitized", path=data_dir / FILES["mbpp_sanitized"])
        if p.metadata["task_id"] == 123
    ]
    r = executor.run(p.reference, p.private_tests)
    assert r.passed, r.verdict
    assert r.reference_cpu > 0.5  # amicable numbers below 9999: seconds, not milliseconds
    assert r.cpu_limit == pytest.approx(max(4.0, 4 * r.reference_cpu), abs=1e-3)


# -- the persistent cost cache -----------------------------------------------------------------


def test_reference_costs_persist_across_executors(tmp_path):
    cache = tmp_path / "work" / "reference_cpu.jsonl"
    suite = {**ASSERT, "reference": _burn_ref(1_000_000)}
    code = "def f(x):\n    return x + 1\n"
    with Executor(workers=1, reference_cache=cache) as ex:
        first = ex.run(code, suite, limits=Limits(cpu_seconds=0.05))
        again = ex.run(code, suite, limits=Limits(cpu_seconds=0.05))
    lines = [json.loads(x) for x in cache.read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["cpu"] == first.reference_cpu > 0
    assert again.reference_cpu == first.reference_cpu and again.cpu_limit == first.cpu_limit

    # A second executor reads the file and does not measure again: a planted cost is used as is.
    lines[0]["cpu"] = 0.5
    cache.write_text(json.dumps(lines[0]) + "\n" + '{"key": "torn')  # a killed writer's last line
    with Executor(workers=1, reference_cache=cache) as ex:
        r = ex.run(code, suite, limits=Limits(cpu_seconds=0.05))
    assert r.passed and r.reference_cpu == 0.5 and r.cpu_limit == 2.0


def test_an_unwritable_cache_is_one_sentence(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="reference_cache=.*writable directory"):
        Executor(workers=1, reference_cache=blocker / "costs.jsonl")


def test_cli_reference_cache(tmp_path):
    suite = {**ASSERT, "reference": _burn_ref(1_000_000)}
    src = tmp_path / "in.jsonl"
    line = {"id": "a", "code": SPIN, "tests": suite, "limits": {"cpu_seconds": 0.3}}
    src.write_text(json.dumps(line) + "\n")
    cache = tmp_path / "costs.jsonl"
    out = tmp_path / "out.jsonl"
    argv = ["--input", str(src), "--output", str(out), "--workers", "1"]
    assert cli.main([*argv, "--reference-cache", str(cache)]) == 0
    rec = json.loads(out.read_text())
    assert rec["verdict"] == "timeout" and rec["reference_cpu"] > 0
    assert rec["tests"][0]["confirmed"] is True
    assert json.loads(cache.read_text())["cpu"] == rec["reference_cpu"]


# -- under load --------------------------------------------------------------------------------


def test_mbpp_references_pass_beside_cpu_burners(data_dir):
    """All 974 MBPP references (public and private tests, challenge tests included), with two
    processes spinning on the CPU beside the executor: zero timeouts."""
    problems = load_problems("mbpp", path=data_dir / FILES["mbpp"])
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(0.2)
        with Executor(workers=2) as ex:
            futs = [
                (p, ex.submit(p.reference, p.public_tests), ex.submit(p.reference, p.private_tests))
                for p in problems
            ]
            bad = {}
            for p, pub, priv in futs:
                a, b = pub.result(), priv.result()
                if not (a.passed and b.passed):
                    bad[p.id] = (a.verdict, b.verdict)
        assert all(b.poll() is None for b in burners)  # the load was there throughout
    finally:
        for b in burners:
            b.kill()
            b.wait()
    assert bad == {}
