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
        # The demo keeps its own settings (EOS training, a binary feedback body), so it cannot
        # claim the official protocol; the first contradiction is named with the official value.
        (
            "protocol",
            "official",
            r"config\.sft\.data\.train_eos=True contradicts config\.protocol='official', which "
            r"sets False",
        ),
        ("warm_start.enabled", False, "config.base is empty"),
        ("rollout.search.extraction", "regex", "Unknown code extraction mode 'regex'"),
        ("eval.search.prompt_form", "raw", "Unknown prompt form 'raw'"),
        ("data.tests.toy.public_tests", "some", "data.tests.toy.public_tests='some' is unknown"),
        ("data.train.preamble", "numpy", "config.data.train.preamble='numpy' is unknown"),
        ("executor.wall_seconds", -1.0, "config.executor is invalid: Limit wall_seconds"),
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


def test_official_protocol_is_the_default():
    """The data / execution / prompt switches of the official μCode protocol are the defaults
    (the real MBPP config inherits them); public_tests='all' is for MBPP only."""
    c = mucode_defaults()
    assert c.data.train.public_tests == "all" and c.data.tests.mbpp.public_tests == "first"
    assert not c.data.train.challenge_tests and c.data.train.preamble == "official"
    assert c.data.tests.humaneval.name == "humanevalpack"
    assert all(not t.generated_tests and t.preamble == "official" for t in c.data.tests.values())
    for search in (c.rollout.search, c.eval.search):
        assert search.feedback.body == "official"
        assert search.extraction == "official" and search.prompt_form == "official"
    assert c.executor.wall_seconds == 10.0 and c.executor.run_as_script
    assert c.sampling.stop_on_eom
    c.base = "/ckpt/base"
    c.data.train.name = "humaneval"
    with pytest.raises(ValueError, match="public_tests='all' is for MBPP only"):
        check_config(c)


@pytest.mark.parametrize(
    "field, value, sentence",
    [
        ("sft.optim.lr", -1.0, r"config.sft.optim.lr must be a number >= 0, got -1.0."),
        ("verifier.optim.schedule", "bogus", r"config.verifier.optim.schedule must be one of"),
        ("verifier.loss", "bogus", r"config.verifier.loss must be 'bt' or 'bce', got 'bogus'."),
        ("warm_start.sft.batch_size", 0, r"config.warm_start.sft.batch_size must be a positive"),
        ("sft.num_epochs", -1, r"config.sft.num_epochs must be a positive integer, got -1."),
        ("sft.grad_accum", 3, r"config.sft.batch_size=16 is not a multiple of config.sft.grad"),
        ("data.train.limit", -5, r"config.data.train.limit must be an integer >= 0 \(0: all\)"),
    ],
)
def test_stage_training_configs_are_checked_before_any_work(field, value, sentence):
    c = mucode_defaults()
    c.base = "/ckpt/base"
    c.warm_start.enabled = True
    parent, _, leaf = field.rpartition(".")
    node = c
    for part in parent.split("."):
        node = node[part]
    setattr(node, leaf, value)
    with pytest.raises(ValueError, match=sentence):
        check_config(c)


def test_a_workdir_that_is_a_file_is_named(tmp_path):
    from mucode_jax import errors

    errors.check_workdir(tmp_path / "new")  # absent: the run creates it
    errors.check_workdir(tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"--workdir '.*f' is a file; give a directory"):
        errors.check_workdir(tmp_path / "f")
