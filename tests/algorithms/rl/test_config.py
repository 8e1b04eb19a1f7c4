"""The RLEF configs load, and a bad rl setting fails up front with one sentence."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mucode_jax.algorithms.config import check_config
from mucode_jax.algorithms.rl.config import check_rl_config
from tests.test_configs import load

ROOT = Path(__file__).resolve().parents[3]


def test_demo_config_shares_the_mucode_demo_warm_start():
    c, demo = load("rlef_demo"), load("demo")
    check_config(c)
    check_rl_config(c)
    assert c.warm_start.to_dict() == demo.warm_start.to_dict()
    assert c.data.to_dict() == demo.data.to_dict()
    # The demo trains in the environment it is evaluated in (the toy feedback the warm
    # start knows); the paper's config keeps RLEF's template.
    assert c.rl.feedback.to_dict() == c.eval.search.feedback.to_dict()
    real = load("rlef_codecontests_llama3p1_8b")
    assert real.rl.feedback.body == real.rl.feedback.wrapper == "rlef"
    assert c.rl.rewards.to_dict() == {"correct": 1.0, "incorrect": -1.0, "invalid": -0.2}
    assert (c.rl.gamma, c.rl.lam, c.rl.max_turns) == (1.0, 1.0, 3)
    check_rl_config(load("rlef_codecontests_llama3p1_8b"))


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("rl.algorithm", "a2c", "Unknown rl algorithm"),
        ("rl.kl", "k2", "Unknown rl.kl"),
        ("rl.minibatch_size", 10, "multiple of"),
        ("rl.clip_eps", 1.5, "clip_eps"),
        ("eval.modes", ("lv",), "trains no verifier"),
        ("rl.feedback.body", "nope", "rl.feedback is invalid"),
    ],
)
def test_bad_settings_fail_with_one_sentence(field, value, match):
    c = load("rlef_demo")
    if field == "rl.minibatch_size":
        c.rl.grad_accum = 4
    node = c
    *path, last = field.split(".")
    for p in path:
        node = node[p]
    node[last] = value
    with pytest.raises(ValueError, match=match):
        check_rl_config(c)


@pytest.mark.parametrize(
    "launcher,config,setting,start",
    [
        ("rlef", "rlef_demo.py:ci", "--config.rl.algorithm=a2c", "rlef: Unknown rl algorithm"),
        (
            "prompt_grid",
            "prompt_grid_toy.py",
            "--config.multi.max_turns=0",
            "prompt_grid: config.multi",
        ),
    ],
)
def test_launchers_report_a_bad_setting_in_one_line(tmp_path, launcher, config, setting, start):
    """The launchers themselves (not just the checks): start, reach the config check, and
    exit with one sentence, having written nothing."""
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "launch" / f"{launcher}.py"),
            f"--config={ROOT / 'configs' / config}",
            setting,
            f"--workdir={tmp_path / 'w'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(start) and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "w" / "artifacts").exists()
