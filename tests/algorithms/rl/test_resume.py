"""Kill -9 in the middle of an RLEF run, restart it: it resumes from its last round and logs
exactly the losses of an uninterrupted run (real sampler, executor and PPO steps)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mucode_jax.training.writers import read_metrics

ROOT = Path(__file__).resolve().parents[3]
JOB = Path(__file__).with_name("run_rl_job.py")
ROUNDS = 3


def _launch(workdir: Path) -> subprocess.Popen:
    workdir.mkdir(parents=True, exist_ok=True)
    log = open(workdir / "job.log", "ab")  # noqa: SIM115
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(JOB), str(workdir), str(ROUNDS)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )


def _checkpoints(workdir: Path) -> list[int]:
    d = workdir / "rl" / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def test_sigkill_then_resume_logs_the_same_losses(tmp_path):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref, run = _launch(ref_dir), _launch(run_dir)
    deadline = time.time() + 1800  # generous: CI machines can be heavily loaded
    while not _checkpoints(run_dir):
        assert run.poll() is None, (run_dir / "job.log").read_text()[-3000:]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert _checkpoints(run_dir)[-1] < ROUNDS, "the run finished before it was killed"
    resumed = _launch(run_dir)
    assert resumed.wait(timeout=900) == 0, (run_dir / "job.log").read_text()[-3000:]
    assert ref.wait(timeout=900) == 0, (ref_dir / "job.log").read_text()[-3000:]
    assert "RESUME" in (run_dir / "job.log").read_text()
    a = read_metrics(ref_dir / "rl" / "metrics.jsonl")
    b = read_metrics(run_dir / "rl" / "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] and len(a) >= ROUNDS
    for x, y in zip(a, b):
        for k in ("loss", "pg", "value_loss", "kl_k1", "kl_k3", "entropy", "grad_norm"):
            assert x[k] == y[k], (x["step"], k)
        # The sampler's own log-probs of a round split by the kill come from other batch shapes
        # (its outputs agree up to float rounding across compiled shapes): the gap diagnostics
        # match to ~1e-8, the losses (which use the trainer's log-probs) bit for bit.
        for k in ("gap_sampler", "gap_old"):
            assert abs(x[k] - y[k]) < 1e-6, (x["step"], k)
    ra = read_metrics(ref_dir / "rl" / "rounds.jsonl")
    rb = read_metrics(run_dir / "rl" / "rounds.jsonl")
    assert [r["reward"] for r in ra] == [r["reward"] for r in rb] and len(ra) == ROUNDS
