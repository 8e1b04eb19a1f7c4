"""The driver's stage schedule, with stub stages: which verifier evaluates which generator, and
every iteration evaluated on every test set (no model is trained; see test_mucode_driver.py
for the real thing)."""

from __future__ import annotations

import pytest

from mucode_jax.algorithms import mucode
from mucode_jax.algorithms.config import check_config, mucode_defaults


class _Stub(mucode.Driver):
    """Stages return names that spell their inputs; evaluations record their verifier."""

    def __init__(self, config, tests):
        self.config, self.tests = config, tests
        self.workdir = None
        self.calls = []

    def base(self):
        return "pi0"

    def rollouts(self, gen, mode=None):
        assert mode is None  # no data mode with rollouts of its own here
        return f"roll({gen})"

    def verifier_data(self, rolls, previous, iteration):
        return f"{previous}+{rolls}" if previous else rolls

    def verifier(self, base, data):
        return f"R[{data}]"

    def scores(self, ver, rolls):
        return "scores"

    def sft_data(self, mode, rolls, scores, previous, iteration):
        return f"{mode}{iteration}"

    def generator(self, base, data, mode=None):
        return f"pi[{data}]"

    def evaluate(self, gen, ver, name, test):
        self.calls.append((name, test, gen, ver))
        return {"modes": {}}


def _run(protocol="official"):
    c = mucode_defaults()
    c.base = "/ckpt"
    c.baselines = ("multi_star",)
    c.protocol = protocol
    check_config(c)
    return _Stub(c, {"mbpp": [], "humaneval": [], "mbpp_plus": []})


@pytest.fixture(autouse=True)
def _no_files(monkeypatch):
    monkeypatch.setattr(mucode.report, "write_json_atomic", lambda *a, **k: None)
    monkeypatch.setattr(mucode.report, "plot_per_turn", lambda *a, **k: None)
    monkeypatch.setattr(mucode.Path, "write_text", lambda *a, **k: None)


def _verifiers(d):
    d.store = type("S", (), {"timings": {}})()
    d.workdir = mucode.Path("/nonexistent")
    mucode.Driver.run(d)
    out = {}
    for name, test, gen, ver in d.calls:
        expected = "pi0" if name == "base" else "pi[{}{}]".format(*name.split("/iter"))
        assert gen == expected, (name, gen)  # each model evaluated is the one named
        out.setdefault(name, {})[test] = ver
    return out


def test_official_schedule_evaluates_pi_i_with_the_verifier_of_pi_0_to_pi_i():
    ver = _verifiers(_run())
    p1 = "pi[mucode1]"
    # Every evaluated model on every test set.
    assert set(ver) == {"base", "mucode/iter1", "mucode/iter2", "multi_star/iter1",
                        "multi_star/iter2"}  # fmt: skip
    assert all(set(v) == {"mbpp", "humaneval", "mbpp_plus"} for v in ver.values())
    assert ver["base"]["mbpp"] == "R[roll(pi0)]"
    # π_1 with the pairs of π_0 and π_1 (the verifier iteration 2 trains anyway) ...
    assert ver["mucode/iter1"]["mbpp"] == f"R[roll(pi0)+roll({p1})]"
    # ... π_2 with an extra one on π_0, π_1, π_2.
    p2 = "pi[mucode2]"
    assert ver["mucode/iter2"]["humaneval"] == f"R[roll(pi0)+roll({p1})+roll({p2})]"
    # Multi-STaR: a verifier on its own π_i rollouts only.
    assert ver["multi_star/iter2"]["mbpp"] == "R[roll(pi[multi_star2])]"


def test_previous_schedule_is_a_switch():
    ver = _verifiers(_run(protocol="paper"))
    assert ver["mucode/iter1"]["mbpp"] == "R[roll(pi0)]"
    assert ver["mucode/iter2"]["mbpp"] == "R[roll(pi0)+roll(pi[mucode1])]"


def test_default_mbpp_plus_test_set_loads_from_shared_data(monkeypatch):
    c = mucode_defaults()
    d = c.data.tests.mbpp_plus
    assert d.path == "shared"
    d.limit = 3
    probs = mucode.load_problem_set(d)
    assert len(probs) == 3 and all(p.dataset == "mbpp_plus" for p in probs)
    monkeypatch.setattr(mucode.evaluation, "default_dataset_path", lambda name: "")
    with pytest.raises(ValueError, match="has no copy of 'mbpp_plus'"):
        mucode.load_problem_set(d)
