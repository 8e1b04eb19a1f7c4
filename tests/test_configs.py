"""Every config in configs/ builds, passes its launcher's checks, and names toy problems that load.

Two launchers once crashed at start on main with no test noticing (a removed helper; a toy
variant the config did not name); this runs every shipped config up to the point where a job
would start training.
"""

import importlib.util
from pathlib import Path

import pytest

from mucode_jax import prompt_grid
from mucode_jax.algorithms import mucode
from mucode_jax.algorithms.config import check_config
from mucode_jax.algorithms.rl.config import check_rl_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.stem for p in (ROOT / "configs").glob("*.py"))
# Configs with a variant argument (`--config configs/x.py:ci`).
WITH_CI = {"demo", "demo_rft", "rlef_demo"}


def load(name: str, arg: str = ""):
    spec = importlib.util.spec_from_file_location(f"cfg_{name}", ROOT / "configs" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(arg) if arg else mod.get_config()


def toy_sets(c) -> list:
    """The toy problem-set configs a driver config names (train, each test set)."""
    sets = [c.data.train] + [c.data.tests[k] for k in c.data.tests]
    return [s for s in sets if s.name == "toy"]


def test_every_config_is_covered():
    assert "demo" in CONFIGS and len(CONFIGS) >= 10


@pytest.mark.parametrize(
    "name,arg", [(n, "") for n in CONFIGS] + [(n, "ci") for n in sorted(WITH_CI)]
)
def test_config_builds_and_passes_its_checks(name, arg):
    c = load(name, arg)
    if "single" in c:  # launch/prompt_grid.py
        prompt_grid.check_grid_config(c)  # checks c.driver too
        if c.problems.name == "toy":
            assert mucode.load_problem_set(c.problems)
        driver = c.driver
    elif "iterations" in c:  # launch/mucode.py and launch/rlef.py
        if not c.base and not c.warm_start.enabled:  # the real configs take it on the command line
            c.base = "/checkpoints/hf-model"
        check_config(c)
        if "rl" in c:  # launch/rlef.py
            check_rl_config(c)
        driver = c
    else:  # launch/train_sft.py, train_verifier.py, evaluate.py: plain trainer configs
        assert c.to_dict()
        return
    for s in toy_sets(driver):
        assert mucode.load_problem_set(s), f"{name}: {s.split} selects no toy problems"
