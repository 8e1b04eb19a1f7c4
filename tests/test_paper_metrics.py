"""The paper's metrics: greedy multi-turn Pass@T and pass@k over sampled multi-turn
trajectories (stopping only on a correct program), BoN "any of the searches" and public-test
success curves, the verifier's AUC on test candidates; turn-1 pass@k renamed."""

from __future__ import annotations

import pytest

from mucode_jax import rollout
from mucode_jax.execution import Executor
from mucode_jax.execution.results import ExecResult
from mucode_jax.summary import summarize, trajectory_metrics
from mucode_jax.types import Candidate, Problem, Trajectory, Turn

PASS, FAIL = ExecResult("passed"), ExecResult("wrong_answer")


def _cand(public: bool, private: bool, score=None):
    return Candidate("c", "c", PASS if public else FAIL, PASS if private else FAIL, score=score)


def _traj(pid, search, turns):
    return Trajectory(pid, "toy", search, 0, tuple(Turn("u", tuple(c)) for c in turns))


def _problem(pid):
    suite = {"kind": "assert", "setup": "", "tests": ["assert f(1) == 2"]}
    return Problem(pid, "toy", "f", suite, suite)


def test_bon_curves_any_search_public_success_and_auc():
    probs = [_problem("a"), _problem("b")]
    cfg = rollout.SearchConfig(num_searches=2, num_candidates=2, max_turns=3)
    recs = [
        # a: search 0 passes public at turn 1 but is wrong; search 1 is correct at turn 2.
        _traj("a", 0, [[_cand(True, False, 0.9), _cand(False, False, 0.1)]]),
        _traj(
            "a",
            1,
            [
                [_cand(False, False, 0.2), _cand(False, False, 0.3)],
                [_cand(True, True, 0.8), _cand(False, False, 0.0)],
            ],
        ),  # fmt: skip
        # b: never passes.
        _traj("b", 0, [[_cand(False, False, 0.4), _cand(False, False, 0.5)]] * 3),
        _traj("b", 1, [[_cand(False, False, 0.6), _cand(False, False, 0.7)]] * 3),
    ]
    m = summarize(recs, probs, cfg, pass_k=(1, 2), n_boot=50)
    assert [b["mean"] for b in m["bon"]] == [0.0, 0.25, 0.25]
    assert m["any_search"] == [0.0, 0.5, 0.5]  # any of a's two searches, b never
    assert m["public_success"] == [0.25, 0.5, 0.5]  # searches whose pick passed public by t
    # One correct candidate (0.8) among 17 incorrect ones: only 0.9 outranks it -> 16/17.
    assert m["verifier_auc"] == pytest.approx(16 / 17)
    assert "pass_at_k" not in m and set(m["turn1_pass_at_k"]) == {"1", "2"}


def test_trajectory_pass_at_k_and_greedy_pass():
    probs = [_problem("a"), _problem("b")]
    recs = [
        _traj("a", 0, [[_cand(False, False)], [_cand(True, True)]]),
        _traj("a", 1, [[_cand(True, False)], [_cand(False, False)], [_cand(False, False)]]),
        _traj("a", 2, [[_cand(True, True)]]),
        _traj("b", 0, [[_cand(False, False)]] * 3),
        _traj("b", 1, [[_cand(False, False)]] * 3),
        _traj("b", 2, [[_cand(True, True)]]),
    ]
    m = trajectory_metrics(recs, probs, 3, pass_k=(1, 2, 3), n_boot=50)
    # a: 2 of 3 trajectories pass, b: 1 of 3 (unbiased pass@k per problem, then the mean).
    assert m["pass_at_k"]["1"]["mean"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert m["pass_at_k"]["2"]["mean"] == pytest.approx((1 + (1 - 1 / 3)) / 2)
    assert m["pass_at_k"]["3"]["mean"] == 1.0 and m["max_turns_run"] == 3
    greedy = trajectory_metrics([r for r in recs if r.search == 0], probs, 1, n_boot=50)
    assert greedy["pass_at_k"]["1"]["mean"] == 0.5
    with pytest.raises(ValueError, match="trajectories are missing"):
        trajectory_metrics(recs[:2], probs, 3)


class _Script:
    """Turn 1: passes the public test only; turn 2: the reference (correct)."""

    def complete(self, conversations, *, seeds):
        out = []
        for conv in conversations:
            code = "def f(x):\n    return 2" if len(conv) == 1 else "def f(x):\n    return x + 1"
            out.append(rollout.Completion(f"```python\n{code}\n```"))
        return out


def test_stop_on_correct_continues_past_a_public_pass(tmp_path):
    public = {"kind": "assert", "setup": "", "tests": ["assert f(1) == 2"]}
    private = {"kind": "assert", "setup": "", "tests": ["assert f(5) == 6"]}
    probs = [Problem("p", "toy", "Write f.", public, private, public_tests_text="f(1) == 2")]
    with Executor(workers=1) as ex:
        stop_public = rollout.SearchConfig(max_turns=3, seed=0)
        (a,) = rollout.run_search(probs, _Script(), ex, stop_public, tmp_path / "a.jsonl")
        stop_correct = rollout.SearchConfig(
            max_turns=3, seed=0, stop_on_public_pass=False, stop_on_correct=True
        )
        (b,) = rollout.run_search(probs, _Script(), ex, stop_correct, tmp_path / "b.jsonl")
    assert len(a.turns) == 1 and a.turns[0].chosen.public_passed and not a.turns[0].label
    assert len(b.turns) == 2 and b.labels == (False, True)  # the official rollout stop
