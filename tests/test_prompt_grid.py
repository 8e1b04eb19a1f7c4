"""The prompt grid: cells, metrics, tables, and resuming cell by cell (scripted policy)."""

from __future__ import annotations

import concurrent.futures as cf
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from mucode_jax import metrics, prompt_grid, rollout
from mucode_jax.algorithms import mucode
from mucode_jax.execution.results import ExecResult, TestResult
from mucode_jax.types import Problem

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def problems(n=3):
    pub = {"kind": "assert", "setup": "", "tests": ["assert True"], "tag": "public"}
    priv = {"kind": "assert", "setup": "", "tests": ["assert True"], "tag": "private"}
    return [Problem(f"toy/{i}", "toy", f"Task {i}.", pub, priv) for i in range(n)]


class Policy:
    """``x = seed % 7``; crashes on call ``crash_at`` (1-based) when set."""

    def __init__(self, crash_at=None):
        self.calls, self.crash_at = 0, crash_at

    def complete(self, conversations, *, seeds):
        self.calls += 1
        if self.crash_at is not None and self.calls >= self.crash_at:
            raise RuntimeError("killed")
        return [rollout.Completion(f"```python\nx = {s % 7}\n```") for s in seeds]


class Executor:
    """Passes the public tests when x is even, the private ones too when x % 4 == 0."""

    def submit(self, code, tests, **kw):
        x = int(code.split("=")[1])
        ok = x % 2 == 0 if tests["tag"] == "public" else x % 4 == 0
        v = "passed" if ok else "wrong_answer"
        f = cf.Future()
        f.set_result(ExecResult(verdict=v, tests=(TestResult(0, v),)))
        return f


def small_config():
    c = prompt_grid.grid_defaults()
    c.single.reasoning = ("none", "explain_io")
    c.single.instruction = ("none", "docstrings")
    c.single.num_samples = 3
    c.single.pass_k = (1, 3)
    c.single.pass_n_k = ((1, 3),)
    c.multi.feedback = ("binary", "trace")
    c.multi.num_searches = 3
    c.multi.budgets = (1, 3)
    c.multi.n = (1,)
    c.multi.draws = 20
    c.batch_size = 4
    c.driver.base = "/ckpt/x"
    return c


def test_multi_turn_pass_n_at_k_on_hand_made_episodes():
    f = prompt_grid.multi_turn_pass_n_at_k
    one_turn = [[(True, True)], [(False, False)]]
    assert f(one_turn, 1, 1, draws=400) == pytest.approx(
        metrics.pass_n_at_k(2, 1, 1, 1, 1), abs=0.08
    )
    assert f(one_turn, 1, 2) == 1.0
    repaired = [[(False, False), (True, True)]]
    assert f(repaired, 1, 1) == 0.0 and f(repaired, 1, 2) == 1.0
    wrong_first = [[(True, False)], [(True, True)]]
    assert f(wrong_first, 1, 2, draws=400) == pytest.approx(0.5, abs=0.1)  # one submission
    assert f(wrong_first, 2, 2) == 1.0
    with pytest.raises(ValueError, match="n >= 1"):
        f(one_turn, 0, 1)


def test_grid_cells_and_config_checks():
    c = small_config()
    names = [cell.name for cell in prompt_grid.grid_cells(c)]
    assert names[:4] == [
        "single/none/none",
        "single/none/docstrings",
        "single/explain_io/none",
        "single/explain_io/docstrings",
    ]
    assert names[4:] == ["multi/binary", "multi/trace", "multi/cot_retry"]
    full = prompt_grid.grid_cells(prompt_grid.grid_defaults())
    assert sum(cell.kind == "single" for cell in full) == 9 * 6
    c.single.reasoning = ("vibes",)
    with pytest.raises(ValueError, match="Unknown reasoning prompt 'vibes'"):
        prompt_grid.check_grid_config(c)
    c = small_config()
    c.multi.budgets = (5,)
    with pytest.raises(ValueError, match="multi.budgets holds 5"):
        prompt_grid.check_grid_config(c)
    sys.path.insert(0, str(CONFIGS))
    try:
        import prompt_grid_codecontests
        import prompt_grid_toy
    finally:
        sys.path.remove(str(CONFIGS))
    for mod in (prompt_grid_toy, prompt_grid_codecontests):
        cfg = mod.get_config()
        prompt_grid.check_grid_config(cfg)
        assert len(prompt_grid.grid_cells(cfg)) == 9 * 6 + 5
    # The toy grid studies the demo's test problems (the variant its warm start was trained on).
    cfg = prompt_grid_toy.get_config()
    problems = mucode.load_problem_set(cfg.problems)
    demo_tests = mucode.load_problem_set(cfg.driver.data.tests.toy)
    assert len(problems) == 24 and [p.id for p in problems] == [p.id for p in demo_tests[:24]]


def test_grid_resumes_without_redoing_finished_cells(tmp_path, monkeypatch):
    cells = prompt_grid.grid_cells(small_config())
    probs = problems()
    ran = []
    real = rollout.run_search

    def spy(problems_, policy, executor, config, output, **kw):
        ran.append(Path(output).name.split("-")[0])
        return real(problems_, policy, executor, config, output, **kw)

    monkeypatch.setattr(rollout, "run_search", spy)
    # A run killed in the middle of the grid (a cell is 3 problems x 3 samples in batches of
    # 4: 3 policy calls, 6 with a reasoning turn), in its third cell.
    with pytest.raises(RuntimeError, match="killed"):
        prompt_grid.run_grid(cells, probs, Policy(crash_at=8), Executor(), tmp_path, progress=None)
    grid = json.loads((tmp_path / "grid.json").read_text())
    finished = list(grid["cells"])
    assert 1 <= len(finished) < len(cells)
    assert set(finished) == {c.name for c in cells[: len(finished)]}  # in order
    before = {k: v for k, v in grid["cells"].items()}
    ran.clear()
    grid = prompt_grid.run_grid(cells, probs, Policy(), Executor(), tmp_path, progress=None)
    assert ran == [c.name.replace("/", "__") for c in cells[len(finished) :]]
    assert set(grid["cells"]) == {c.name for c in cells} and grid["order"] == [
        c.name for c in cells
    ]
    assert all(grid["cells"][k] == v for k, v in before.items())
    ran.clear()
    policy = Policy()
    again = prompt_grid.run_grid(cells, probs, policy, Executor(), tmp_path, progress=None)
    assert ran == [] and policy.calls == 0 and again["cells"] == grid["cells"]
    # Another model (context) redoes every cell.
    prompt_grid.run_grid(cells, probs, Policy(), Executor(), tmp_path, context="m2", progress=None)
    assert len(ran) == len(cells)

    # The metrics are the metrics module's on the recorded labels.
    none = grid["cells"]["single/none/none"]
    from mucode_jax import records

    trajs = records.read_trajectories(tmp_path / none["trajectories"])
    cor = [sum(t.success for t in trajs if t.problem_id == p.id) for p in probs]
    assert none["pass_at_k"]["1"]["mean"] == pytest.approx(np.mean(cor) / 3)
    assert none["samples"] == 9 and none["settings"]["prompt"] == "official"
    multi = grid["cells"]["multi/cot_retry"]
    assert multi["settings"]["prompt"] == "official/cot_retry"
    assert set(multi["pass_n_at_k"]) == {"1@1", "1@3"}
    md = (tmp_path / "grid.md").read_text()
    assert "| reasoning \\ instruction | none | docstrings |" in md
    assert "| cot_retry |" in md and (tmp_path / "pass_n_at_k.png").is_file()


def test_a_broken_grid_file_is_refused_in_one_sentence(tmp_path):
    (tmp_path / "grid.json").write_text("{not json")
    with pytest.raises(ValueError, match="grid.json is not valid JSON"):
        prompt_grid.run_grid([], problems(), Policy(), Executor(), tmp_path, progress=None)
