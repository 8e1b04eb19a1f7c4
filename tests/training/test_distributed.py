"""The same run on 1 CPU device and on 8 fake CPU devices (FSDP x tensor) gives the same losses."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
EIGHT = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}


def _start(workdir, overrides, env):
    return subprocess.Popen(
        [sys.executable, str(HERE / "run_sft_job.py"), str(workdir), json.dumps(overrides)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
        text=True,
    )


def _result(proc):
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    line = [x for x in out.splitlines() if x.startswith("RESULT ")]
    assert line, out[-3000:]
    return json.loads(line[-1][len("RESULT ") :])


def test_one_device_and_eight_devices_give_the_same_losses(tmp_path):
    one = _start(tmp_path / "one", {}, {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""})
    eight = _start(tmp_path / "eight", {"mesh": [["data", 1], ["fsdp", 4], ["tensor", 2]]}, EIGHT)
    bad = _start(tmp_path / "bad", {"batch_size": 6, "grad_accum": 1}, EIGHT)
    r1, r8, rbad = _result(one), _result(eight), _result(bad)

    assert r1["devices"] == 1 and r8["devices"] == 8
    assert len(r1["losses"]) == 4
    np.testing.assert_allclose(r8["losses"], r1["losses"], rtol=1e-5)
    np.testing.assert_allclose(r8["grad_norms"], r1["grad_norms"], rtol=1e-5)
    # The live arrays are sharded as the rules say (not silently replicated).
    assert r8["specs"]["layers.0.mlp.gate"] == "P('fsdp', 'tensor')"
    assert r8["specs"]["layers.0.attn.o"] == "P('tensor', None, 'fsdp')"
    assert r8["specs"]["embed"] == "P('tensor', 'fsdp')"
    # A batch that does not divide over the mesh: one sentence, no trace.
    assert "does not divide over the 8 data-parallel devices" in rbad["error"]
