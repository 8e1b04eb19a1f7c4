"""The launchers' persistent compilation cache: entries appear; 'off' turns it off."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROGRAM = """
import sys
import jax, jax.numpy as jnp
from mucode_jax import compile_cache
print(compile_cache.enable(sys.argv[1], min_compile_seconds=0.0))
jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((64, 64))).block_until_ready()
"""


def _run(arg: str) -> str:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM, arg],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_compiled_programs_are_stored_and_off_means_off(tmp_path):
    cache = tmp_path / "xla"
    assert _run(str(cache)) == str(cache)
    entries = [p for p in cache.rglob("*") if p.is_file()]
    assert entries, "no executable was stored"
    assert _run("off") == "None"
