"""The per-family search analysis: candidate kinds, scores by kind, selections on mixed turns."""

from __future__ import annotations

import pytest

from mucode_jax.data import toy, toy_analysis
from mucode_jax.execution.results import ExecResult
from mucode_jax.types import Candidate, Trajectory, Turn


def _cand(code, public_ok, private_ok, score=None):
    ok, bad = ExecResult("passed"), ExecResult("wrong_answer")
    return Candidate(
        completion=f"```python\n{code}\n```" if code else "no code",
        code=code,
        public=ok if public_ok else bad,
        private=ok if private_ok else bad,
        score=score,
    )


@pytest.fixture(scope="module")
def problem():
    return next(
        p
        for p in toy.toy_problems("test", None, variant="shown", test_fraction=0.3)
        if p.metadata["family"] == "affine"
    )


def test_kinds_scores_and_selections(problem):
    family, params = toy._family_and_params(problem)
    other = next(h for h in family.hidden if h != params["hidden"])
    reading = toy._code(family, {**params, "hidden": other})
    slip = toy._code(family, {**params, "b": params["b"] + 3})
    overfit = f"def {params['name']}(n):\n    return {problem.metadata['public_expected']}\n"
    right = _cand(problem.reference, True, True, score=2.0)
    turn1 = Turn(
        user="x",
        candidates=(
            _cand(reading.replace("    ", "  "), False, False, score=1.0),  # spacing aside
            right,
            _cand(slip, False, False, score=3.0),
            _cand(None, False, False, score=-1.0),
        ),
        selected=2,  # the slip: a wrong pick among 1 right of 4
    )
    turn2 = Turn(user="f", candidates=(_cand(overfit, True, False, score=0.5), right), selected=1)
    turn3 = Turn(user="f", candidates=(right, right), selected=0)  # not mixed
    traj = Trajectory(
        problem_id=problem.id, dataset="toy", search=0, seed=0, turns=(turn1, turn2, turn3)
    )
    report = toy_analysis.search_report([traj], {problem.id: problem})
    assert report["kinds"][("affine", 1)] == {"reading": 1, "right": 1, "other": 1, "no_code": 1}
    assert report["kinds"][("affine", 2)] == {"overfit": 1, "right": 1}
    assert report["scores"][("affine", "right")] == [2.0, 2.0, 2.0, 2.0]
    assert report["scores"][("affine", "other")] == [3.0]
    assert report["mixed"] == {("affine", 1): (1, 0, 0.25, 0), ("affine", 2): (1, 1, 0.5, 0)}
    text = toy_analysis.format_report(report)
    assert "| affine | 1 | 1 | 1 | 0 | 1 | 1 |" in text and "| affine | other | 1 | +3.00 |" in text


def test_resubmissions_of_a_failed_program_are_counted(problem):
    family, params = toy._family_and_params(problem)
    slip = toy._code(family, {**params, "b": params["b"] + 3})
    right = _cand(problem.reference, True, True)
    failed = _cand(slip, False, False)
    again = _cand(slip + "\n\n", False, False)  # the same program, whitespace aside
    other = _cand(toy._code(family, {**params, "b": params["b"] + 5}), False, False)
    turns = (
        Turn(user="x", candidates=(failed, right), selected=0),
        Turn(user="f", candidates=(right, again), selected=1),  # resubmits turn 1's program
        Turn(user="f", candidates=(other, right), selected=0),  # wrong, but new
    )
    traj = Trajectory(problem_id=problem.id, dataset="toy", search=0, seed=0, turns=turns)
    report = toy_analysis.search_report([traj], {problem.id: problem})
    assert [report["mixed"][("affine", t)][3] for t in (1, 2, 3)] == [0, 1, 0]
    assert "| affine | 2 | 1 | 0.00 | 0.50 | 1 |" in toy_analysis.format_report(report)


def test_a_search_of_another_problem_set_is_named(problem):
    traj = Trajectory(problem_id="toy-shown/nope", dataset="toy", search=0, seed=0, turns=())
    with pytest.raises(ValueError, match="'toy-shown/nope' has no toy problem"):
        toy_analysis.search_report([traj], {problem.id: problem})


def test_pair_kinds_come_from_the_rollouts_execution(problem):
    family, params = toy._family_and_params(problem)
    slip = _cand(toy._code(family, {**params, "b": params["b"] + 3}), False, False)
    right = _cand(problem.reference, True, True)
    rollout = Trajectory(
        problem_id=problem.id,
        dataset="toy",
        search=0,
        seed=0,
        turns=(Turn(user="x", candidates=(slip,)), Turn(user="f", candidates=(right,))),
    )
    pairs = [
        {"problem_id": problem.id, "chosen": right.completion, "rejected": slip.completion},
        {"problem_id": problem.id, "chosen": right.completion, "rejected": slip.completion},
        {"problem_id": problem.id, "chosen": right.completion, "rejected": right.completion},
    ]
    got = toy_analysis.pair_report(pairs, [rollout], {problem.id: problem})
    assert got == {("affine", "other"): 2, ("affine", "right"): 1}
    stray = [{**pairs[0], "rejected": "```python\ndef scale(n):\n    return 0\n```"}]
    with pytest.raises(ValueError, match="no rollout of the given file holds"):
        toy_analysis.pair_report(stray, [rollout], {problem.id: problem})


def test_launcher_names_a_missing_search_file(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    missing = tmp_path / "search_lv.jsonl"
    out = subprocess.run(
        [sys.executable, "launch/analyze_search.py", "--config", "configs/demo.py",
         f"--search={missing}"],
        cwd=root, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 1
    assert f"error: --search='{missing}' is not a file; give a search_<mode>.jsonl." in out.stderr
