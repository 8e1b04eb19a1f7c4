"""An RL round (scoring pass, advantages, PPO epochs) gives the same numbers on 1 device and
on 8 fake CPU devices (fsdp over all of them)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]
JOB = Path(__file__).with_name("rl_step_job.py")


def _run(devices: int, algorithm: str) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    proc = subprocess.run(
        [sys.executable, str(JOB), algorithm],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


@pytest.mark.parametrize("algorithm", ["ppo"])  # rloo differs only in host-side advantages
def test_one_device_equals_eight(algorithm):
    one, eight = _run(1, algorithm), _run(8, algorithm)
    assert (one["devices"], eight["devices"]) == (1, 8)
    np.testing.assert_allclose(one["values"], eight["values"], rtol=1e-4, atol=1e-5)
    assert len(one["updates"]) == len(eight["updates"]) >= 4
    keys = ["loss", "kl_k3", "entropy", "gap_sampler", "grad_norm"]
    if algorithm == "ppo":
        keys += ["value_loss"]
    for a, b in zip(one["updates"], eight["updates"]):
        for k in keys:
            assert a[k] == pytest.approx(b[k], rel=2e-4, abs=1e-5), k
    # The updates moved the policy (later minibatches see ratios != 1).
    assert any(u["clipfrac"] > 0 or abs(u["ratio"] - 1) > 1e-4 for u in one["updates"][1:])
