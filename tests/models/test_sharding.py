"""Sharding on 8 fake CPU devices, and mesh construction errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from mucode_jax import sharding as sh

REPO = Path(__file__).resolve().parents[2]


def test_sharded_forward_equals_single_device_and_specs_follow_rules():
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "tests.models.sharded_forward_check"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "OK" in proc.stdout


def test_logical_rules():
    rules = sh.DEFAULT_RULES
    assert sh.logical_to_spec(("embed", "mlp"), rules) == jax.sharding.PartitionSpec(
        "fsdp", "tensor"
    )
    assert sh.logical_to_spec(("batch", "length"), rules) == jax.sharding.PartitionSpec(
        ("data", "fsdp")
    )
    # A mesh axis is used once per array.
    assert sh.logical_to_spec(("mlp", "q_heads"), rules) == jax.sharding.PartitionSpec("tensor")
    # Axes the mesh lacks (or of size 1) are dropped.
    mesh = sh.make_mesh({"data": 1, "fsdp": -1})
    assert sh.logical_to_spec(("embed", "mlp"), rules, mesh) == jax.sharding.PartitionSpec()


def test_mesh_errors():
    n = jax.device_count()
    with pytest.raises(ValueError, match="more than one -1"):
        sh.make_mesh({"data": -1, "fsdp": -1})
    with pytest.raises(ValueError, match="needs"):
        sh.make_mesh({"data": n + 1})
    with pytest.raises(ValueError, match="not positive"):
        sh.make_mesh({"data": 0})
