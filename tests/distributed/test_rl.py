"""The RLEF loop (`algorithms.rl.loop.train`: real sampler, one executor per process, PPO
and value steps, checkpoints) as 2 processes x 4 CPU devices against 1 process x 8: the
same episodes, the same losses update by update, one set of logs written by process 0."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mucode_jax import records
from mucode_jax.training.writers import read_metrics
from tests.distributed.procs import launch

ROOT = Path(__file__).resolve().parents[2]
JOB = ROOT / "tests" / "algorithms" / "rl" / "run_rl_job.py"
ROUNDS = 2
TIMEOUT_S = 1200


def _run(workdir: Path, processes: int) -> list[str]:
    workdir.mkdir(parents=True)
    codes, texts = launch(
        lambda i: [sys.executable, str(JOB), str(workdir), str(ROUNDS), "8"],  # minibatch of 8
        processes,
        lambda i: workdir / f"job.{i}.log",
        TIMEOUT_S,
        PYTHONPATH=str(ROOT),
    )
    for code, text in zip(codes, texts):
        assert code == 0, text[-4000:]
    return texts


def _episodes(workdir: Path) -> list:
    out = []
    for path in sorted((workdir / "rl" / "rollouts").glob("iter_*.jsonl")):
        for t in records.read_trajectories(path):
            turns = [[(c.tokens, c.label) for c in u.candidates] for u in t.turns]
            out.append([path.name, t.problem_id, t.search, turns])
    return out


def test_rl_loop_on_two_processes_gives_the_one_process_losses(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _run(one, 1)
    logs = _run(two, 2)
    assert all("DONE" in text for text in logs)
    # The same episodes (tokens and labels), merged into one file per round by process 0.
    assert _episodes(two) == _episodes(one) and len(_episodes(one)) == ROUNDS * 3 * 2
    assert not list((two / "rl" / "rollouts").glob("*.process*.jsonl"))
    # Process 0 alone wrote the logs; every update's losses equal the 1-process run's.
    a = read_metrics(one / "rl" / "metrics.jsonl")
    b = read_metrics(two / "rl" / "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] and len(a) >= ROUNDS
    for x, y in zip(a, b):
        for k in ("loss", "pg", "value_loss", "kl_k3", "entropy", "grad_norm", "value_grad_norm"):
            assert x[k] == pytest.approx(y[k], rel=2e-4, abs=1e-6), (x["step"], k)
    ra = read_metrics(one / "rl" / "rounds.jsonl")
    rb = read_metrics(two / "rl" / "rounds.jsonl")
    for x, y in zip(ra, rb):
        for k in ("reward", "pass_rate", "advantage_mean", "value_mean"):
            assert x[k] == pytest.approx(y[k], rel=1e-4, abs=1e-6), (x["step"], k)
    # Both processes restored the same checkpoints: the last round is on disk once.
    assert sorted(p.name for p in (two / "rl" / "checkpoints").iterdir() if p.name.isdigit())
