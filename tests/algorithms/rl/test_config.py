"""The RLEF configs load, and a bad rl setting fails up front with one sentence."""

import importlib.util
from pathlib import Path

import pytest

from mucode_jax.algorithms.config import check_config
from mucode_jax.algorithms.rl.config import check_rl_config

ROOT = Path(__file__).resolve().parents[3]


def load(name, arg=""):
    spec = importlib.util.spec_from_file_location(name, ROOT / "configs" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(arg) if arg else mod.get_config()


def test_demo_config_shares_the_mucode_demo_warm_start():
    c, demo = load("rlef_demo"), load("demo")
    check_config(c)
    check_rl_config(c)
    assert c.warm_start.to_dict() == demo.warm_start.to_dict()
    assert c.data.to_dict() == demo.data.to_dict()
    assert c.rl.feedback.body == c.rl.feedback.wrapper == "rlef"
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
