"""The driver's zheng_rft mode: its own CoT-retry rollouts and SFT settings; other modes'
artifact keys unchanged (scripted policy, no model)."""

from __future__ import annotations

import concurrent.futures as cf
from pathlib import Path

from mucode_jax import records, rollout
from mucode_jax.algorithms import mucode
from mucode_jax.algorithms.artifacts import Artifact, content_key
from mucode_jax.algorithms.config import check_config, mucode_defaults
from mucode_jax.execution.results import ExecResult, TestResult
from mucode_jax.types import Problem


def problems(n=2):
    pub = {"kind": "assert", "setup": "", "tests": ["assert True"], "tag": "public"}
    priv = {"kind": "assert", "setup": "", "tests": ["assert True"], "tag": "private"}
    return [Problem(f"toy/{i}", "toy", f"Task {i}.", pub, priv) for i in range(n)]


class Policy:
    def complete(self, conversations, *, seeds):
        return [rollout.Completion(f"```python\nx = {s % 5}\n```") for s in seeds]


class Failing:
    def submit(self, code, tests, **kw):
        f = cf.Future()
        f.set_result(ExecResult(verdict="wrong_answer", tests=(TestResult(0, "wrong_answer"),)))
        return f


def test_zheng_rft_rollouts_and_sft_settings_are_its_own(tmp_path, monkeypatch):
    c = mucode_defaults()
    c.base = "/ckpt/x"
    c.baselines = ("zheng_rft",)
    c.rollout.search.num_searches = 2
    c.zheng_rft.search.num_searches = 3
    check_config(c)
    o = c.zheng_rft.optim
    assert (o.lr, o.schedule, o.warmup_steps, o.final_lr_fraction) == (2e-6, "cosine", 10, 0.1)
    driver = mucode.Driver(c, tmp_path, Failing(), None, problems(), {})
    asked = []

    def policy(path, *, temperature, top_p):
        asked.append((temperature, top_p))
        return Policy()

    monkeypatch.setattr(driver.models, "policy", policy)
    gen = Artifact("base", "k0", Path("/ckpt/x"))
    plain = driver.rollouts(gen)
    own = driver.rollouts(gen, "zheng_rft")
    assert asked == [(0.7, 1.0), (1.0, 0.95)]
    # The plain rollouts keep the key they always had (μCode's artifacts are reused).
    inputs = {"gen": gen, "train": driver.train_key, "cfg": c.rollout, "seed": c.seed}
    assert plain.key == content_key("rollouts", inputs) != own.key
    trajs = records.read_trajectories(own.path / "rollouts.jsonl")
    # the official prompt form and extraction (the defaults), then the strategy
    prompts_ = {t.settings.prompt for t in trajs}
    assert len(trajs) == 2 * 3 and prompts_ == {"official/form=official/extract=official/cot_retry"}
    assert all("guidelines" in t.turns[1].user for t in trajs)
    assert len(records.read_trajectories(plain.path / "rollouts.jsonl")) == 2 * 2
