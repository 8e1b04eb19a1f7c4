"""2 processes x 4 CPU devices against 1 process x 8 devices, on the same global mesh.

Each job runs in fresh interpreters (`procs.Job`: ``jax.distributed`` over a local
coordinator, ``XLA_FLAGS=--xla_force_host_platform_device_count``), every wait has a
timeout, and a timed-out job is killed, so a hang fails the test instead of stalling CI.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from mucode_jax.training.writers import read_metrics
from tests.distributed.procs import Job

RTOL = 1e-5


def _pair(kind, tmp_path, overrides=None):
    one = Job(kind, tmp_path / "one", overrides, processes=1, logdir=tmp_path)
    two = Job(kind, tmp_path / "two", overrides, processes=2, logdir=tmp_path)
    return one.results()[0], two.results()


def test_verifier_on_two_processes_matches_one_process(tmp_path):
    r1, (a, _) = _pair("verifier", tmp_path)
    assert r1["steps"] == a["steps"] == [1, 2, 3]
    np.testing.assert_allclose(a["losses"], r1["losses"], rtol=RTOL)
    np.testing.assert_allclose(a["grad_norms"], r1["grad_norms"], rtol=RTOL)
    assert a["eval"].keys() == r1["eval"].keys() and "eval/auc" in a["eval"]
    for k, v in r1["eval"].items():
        np.testing.assert_allclose(a["eval"][k], v, rtol=RTOL, err_msg=k)


def test_sampler_and_scorer_on_two_processes_match_one_process(tmp_path):
    r1, (a, b) = _pair("sample", tmp_path)
    assert len(r1["greedy"]) == 8 and all(len(t) for t in r1["greedy"])
    assert a["greedy"] == b["greedy"] == r1["greedy"]
    assert a["temperature"] == r1["temperature"]
    assert a["temperature"] != a["greedy"]
    assert a["again"] == a["greedy"]
    # Compiling ahead of the barrier (several processes) fills the jit's cache: each program
    # is traced once, as on one process.
    assert a["traces"] == b["traces"] == r1["traces"]
    for x, y in zip(a["logprobs"], r1["logprobs"]):
        np.testing.assert_allclose(x, y, atol=1e-5)
    np.testing.assert_allclose(a["scores"], r1["scores"], rtol=RTOL)
    assert a["scores"] == b["scores"]


def _checkpoints(workdir):
    d = workdir / "checkpoints"
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def test_sft_on_two_processes_matches_one_process_and_resumes_after_a_kill(tmp_path):
    """The 2-process run is SIGKILLed after its first checkpoint and started again; its
    metrics.jsonl (steps 1-2 from the first start, 3-6 from the resumed one) must equal the
    uninterrupted 1-process run's at every step."""
    overrides = {"max_steps": 6, "num_epochs": 3, "checkpoint.every_steps": 2, "export_hf": True}
    ref = Job("sft", tmp_path / "ref", overrides, processes=1, logdir=tmp_path)
    run = Job("sft", tmp_path / "run", overrides, processes=2, logdir=tmp_path)
    deadline = time.time() + 240
    while not _checkpoints(tmp_path / "run"):
        assert all(p.poll() is None for p in run.procs), run.log()[-3000:]
        assert time.time() < deadline, "no checkpoint appeared:\n" + run.log()[-3000:]
        time.sleep(0.05)
    run.kill()  # SIGKILL both processes
    logged = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert logged and logged[-1]["step"] < 6, "the run finished before the kill"
    assert not (tmp_path / "run" / "hf").exists()

    resumed = Job("sft", tmp_path / "run", overrides, processes=2, logdir=tmp_path / "again")
    (a, b), (expected,) = resumed.results(), ref.results()
    assert "resumed from" in resumed.log(0) and "resumed from" in resumed.log(1)
    assert a["devices"] == expected["devices"] == 8 and a["processes"] == 2
    assert a["steps"] == expected["steps"] == [1, 2, 3, 4, 5, 6], "a step was lost or duplicated"
    np.testing.assert_allclose(a["losses"], expected["losses"], rtol=RTOL)
    np.testing.assert_allclose(a["grad_norms"], expected["grad_norms"], rtol=RTOL)
    assert a["losses"] == b["losses"]  # both processes read the one metrics.jsonl
    # Written once, by process 0: one event file per start, one export.
    assert len(list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))) == 2
    assert (tmp_path / "run" / "hf" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "hf" / "tokenizer.json").is_file()


def test_a_dead_process_stops_the_other_within_the_heartbeat_timeout(tmp_path):
    job = Job("sft", tmp_path / "run", {"max_steps": 200, "num_epochs": 50}, processes=2,
              logdir=tmp_path)  # fmt: skip
    deadline = time.time() + 240
    while not (tmp_path / "run" / "metrics.jsonl").is_file() or not read_metrics(
        tmp_path / "run" / "metrics.jsonl"
    ):
        assert all(p.poll() is None for p in job.procs), job.log()[-3000:]
        assert time.time() < deadline, "training never started:\n" + job.log()[-3000:]
        time.sleep(0.05)
    os.kill(job.procs[1].pid, signal.SIGKILL)
    t0 = time.time()
    code = job.wait(timeout=90)[0]  # heartbeat timeout 10 s in procs.env_for
    assert time.time() - t0 < 90
    # JAX's heartbeat sentence (the process is terminated), or ours when a collective failed
    # first (job.py prints it as the result's error).
    text = job.log(0)
    assert (code != 0 and "another task died" in text) or (
        '"error": "A step failed across processes' in text and "another process died" in text
    ), text[-3000:]


@pytest.mark.parametrize(
    "per_process, sentence",
    [
        ([{}, {"optim.lr": 1e-2}], "The training config differs between processes"),
        ([{}, {"_drop_conversations": 1}], "The training data differs between processes"),
        ([{}, {"_workdir_suffix": "_elsewhere"}], "is not shared between processes"),
    ],
)
def test_processes_that_disagree_fail_at_start_with_one_sentence(tmp_path, per_process, sentence):
    job = Job("sft", tmp_path / "run", processes=2, per_process=per_process, logdir=tmp_path)
    for r in job.results(timeout=120):
        assert sentence in r["error"], r
        assert "\n" not in r["error"] and r["error"].count(";") == 1, r["error"]


def test_stage_artifacts_on_two_processes_are_published_once_and_read_by_all(tmp_path):
    ok = Job("store", tmp_path / "ok", processes=2, logdir=tmp_path)
    bad = Job("store", tmp_path / "bad", processes=2, per_process=[{}, {"cfg": 2}], logdir=tmp_path)
    a, b = ok.results(timeout=120)
    assert a["key"] == b["key"] and a["text"] == b["text"] == "written by process 0"
    assert a["reused"] and b["reused"] and a["calls"] == b["calls"] == 1
    assert [p.name for p in (tmp_path / "ok" / "artifacts").iterdir()] == [f"stage-{a['key']}"]
    for r in bad.results(timeout=120):
        assert "The key of stage stage differs between processes" in r["error"], r


def test_rollouts_on_two_processes_match_one_process_in_lock_step(tmp_path):
    """The searches are split over the processes, each with its own executor (process 1's
    late), while every policy and scorer call gets the same inputs on both: the trajectories
    equal the 1-process run's, in one merged file in problem and search order."""
    r1, (a, b) = _pair("rollout", tmp_path)
    assert len(r1["trajectories"]) == 12
    assert a["trajectories"] == b["trajectories"] == r1["trajectories"] == a["file"]
    assert [t[:2] for t in a["file"]] == a["order"]
    assert a["files"] == ["search_lv.jsonl"]  # the processes' shards were merged and removed
    assert a["calls"] == b["calls"]  # lock-step: the same collective calls on both
    kinds = {k for k, _ in a["calls"]}
    assert kinds == {"policy", "scorer"}
    assert sum(1 for t in r1["trajectories"] for turn in t[2] if len(turn[1]) == 2) > 12
