"""Kill-and-resume: a run SIGKILLed after its first checkpoint resumes with the same losses."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mucode_jax.training.writers import read_metrics

ROOT = Path(__file__).resolve().parents[2]
STEPS = 12
OVERRIDES = [
    f"--config.max_steps={STEPS}",
    "--config.num_epochs=10",
    "--config.checkpoint.every_steps=4",
    "--config.checkpoint.keep=2",
    "--config.export_hf=False",
    "--config.progress=False",
    "--config.data.num_problems=16",
    "--config.data.max_length=128",
]


def _launch(workdir: Path) -> subprocess.Popen:
    log = open(workdir.parent / f"{workdir.name}.log", "ab")  # noqa: SIM115
    return subprocess.Popen(
        [
            sys.executable,
            "launch/train_sft.py",
            "--config",
            "configs/sft_tiny.py",
            *OVERRIDES,
            f"--workdir={workdir}",
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )


def _finished_checkpoints(workdir: Path) -> list[int]:
    d = workdir / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def test_sigkill_then_resume_logs_the_same_losses(tmp_path):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref = _launch(ref_dir)
    run = _launch(run_dir)
    deadline = time.time() + 240
    while not _finished_checkpoints(run_dir):
        assert run.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    run.wait()
    killed_at = read_metrics(run_dir / "metrics.jsonl")
    assert killed_at and killed_at[-1]["step"] < STEPS, "the run finished before the kill"

    assert ref.wait(timeout=300) == 0, (tmp_path / "ref.log").read_text()[-3000:]
    resumed = _launch(run_dir)
    assert resumed.wait(timeout=300) == 0, (tmp_path / "run.log").read_text()[-3000:]
    assert "resumed from" in (tmp_path / "run.log").read_text()

    expected = read_metrics(ref_dir / "metrics.jsonl")
    got = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in expected] == list(range(1, STEPS + 1))
    assert [r["step"] for r in got] == list(range(1, STEPS + 1)), "a step was lost or duplicated"
    assert [r["loss"] for r in got] == [r["loss"] for r in expected]
    assert [r["grad_norm"] for r in got] == [r["grad_norm"] for r in expected]
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
