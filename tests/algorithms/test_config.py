"""The driver's config is checked whole, before any stage runs, one sentence per mistake."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mucode_jax.algorithms.config import check_config, mucode_defaults

ROOT = Path(__file__).resolve().parents[2]


def _demo():
    spec = importlib.util.spec_from_file_location("demo", ROOT / "configs" / "demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("mode", "foo", "Unknown data mode 'foo'"),
        ("baselines", ("multi_star", "star"), "Unknown data mode 'star'"),
        ("iterations", 0, "config.iterations must be at least 1"),
        ("sampling.dtype", "int8", "config.sampling.dtype 'int8'"),
        ("rollout.search.max_turns", 0, "config.rollout.search is invalid: max_turns"),
        ("eval.search.feedback.body", "nice", "config.eval.search is invalid: Unknown feedback"),
        ("eval.modes", ("lv", "best"), "Unknown selection modes"),
        ("data.tests.toy.name", "mbbp", "Unknown dataset 'mbbp' in config.data.tests.toy.name"),
        ("eval.sampled.num_trajectories", 1, "config.eval.sampled.pass_k"),
        ("protocol", "pytorch", "Unknown config.protocol 'pytorch'"),
        ("verifier.optim.clip_norm", 0.5, "config.verifier.optim.clip_norm=0.5 contradicts"),
        ("warm_start.enabled", False, "config.base is empty"),
    ],
)
def test_each_mistake_is_one_sentence(field, value, message):
    c = _demo()
    check_config(c)
    node = c
    *parents, leaf = field.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(ValueError, match=message) as e:
        check_config(c)
    assert "\n" not in str(e.value)


def test_unknown_relabel_field_is_named():
    c = _demo()
    c.relabel.top_kk = 2
    with pytest.raises(ValueError, match="config.relabel is invalid"):
        check_config(c)


def test_defaults_are_a_complete_real_config():
    c = mucode_defaults()
    c.base = "/ckpt/base"
    check_config(c)
