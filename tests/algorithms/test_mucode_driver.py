"""The μCode driver end to end on the shrunken demo (`configs/demo_ci.py`), killed and resumed.

One uninterrupted run and one run SIGKILLed as soon as its generator stage has started
(``generator-*.partial`` exists), then resumed with the same command. The resumed run must
reuse every finished artifact (same folders, untouched ``stage.json``, "reusing" in its log)
and end with exactly the same ``summary.json`` models as the uninterrupted run: every stage
is seeded, and the killed generator stage restarts from its (empty) ``.partial`` folder.
About 3-4 minutes on 2 loaded CPU cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CMD = [sys.executable, "launch/mucode.py", "--config", "configs/demo_ci.py"]


def _start(workdir: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    with open(log, "ab") as f:
        return subprocess.Popen(
            [*CMD, "--workdir", str(workdir)],
            cwd=ROOT,
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its executor workers die with it on killpg
        )


def _finish(proc: subprocess.Popen, log: Path, timeout: float = 1800) -> None:
    rc = proc.wait(timeout=timeout)
    assert rc == 0, log.read_text()[-4000:]


def _stage_times(root: Path) -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in root.glob("*/stage.json")}


def test_killed_run_resumes_to_the_same_summary(tmp_path):
    # 1. Uninterrupted.
    a, log_a = tmp_path / "a", tmp_path / "a.log"
    _finish(_start(a, log_a), log_a)
    summary_a = json.loads((a / "summary.json").read_text())
    md = (a / "summary.md").read_text()
    assert md.startswith("| model | test set | selection |") and "| greedy Pass@T |" in md
    assert (a / "per_turn_success.png").stat().st_size > 0
    assert set(summary_a["models"]) == {"base", "mucode/iter1"}
    for by_test in summary_a["models"].values():
        assert set(by_test) == {"toy"}  # config.data.tests, one row set per test set
        res = by_test["toy"]
        for m in res["modes"].values():
            assert [b["t"] for b in m["bon"]] == [1, 2, 3]
            assert all(b["lo"] <= b["mean"] <= b["hi"] for b in m["bon"])
            assert len(m["any_search"]) == len(m["public_success"]) == 3
        assert set(res["greedy"]["pass_at_k"]) == {"1"}
        assert set(res["sampled"]["pass_at_k"]) == {"1", "2"}
    assert summary_a["models"]["mucode/iter1"]["toy"]["modes"]["lv"]["verifier_auc"] is not None

    # 2. Killed mid-stage (the generator's SFT), then resumed.
    b, log_b = tmp_path / "b", tmp_path / "b.log"
    proc = _start(b, log_b)
    deadline = time.monotonic() + 1800
    while proc.poll() is None and time.monotonic() < deadline:
        if list((b / "artifacts").glob("generator-*.partial")):
            time.sleep(1.0)  # let it get into the stage
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.2)
    assert proc.wait(timeout=60) == -signal.SIGKILL, log_b.read_text()[-3000:]
    assert not (b / "summary.json").exists()
    assert list((b / "artifacts").glob("generator-*.partial"))
    finished = _stage_times(b / "artifacts")
    assert {n.split("-")[0] for n in finished} >= {
        "warm_start", "rollouts", "verifier_data", "verifier", "eval", "scores", "sft_data"
    }  # fmt: skip

    log_b.write_text("")
    _finish(_start(b, log_b), log_b)
    resumed_log = log_b.read_text()
    for name in finished:
        assert f"reusing {name}" in resumed_log, name
    after = _stage_times(b / "artifacts")
    assert {k: after[k] for k in finished} == finished  # finished stages were not redone
    assert not list((b / "artifacts").glob("*.partial"))
    # Artifacts are content-addressed: both runs made the same stages under the same keys.
    assert sorted(after) == sorted(_stage_times(a / "artifacts"))

    summary_b = json.loads((b / "summary.json").read_text())
    assert summary_b["models"] == summary_a["models"]


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CMD, *args],
        cwd=ROOT,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_bad_config_fails_before_any_stage(tmp_path):
    start = time.monotonic()
    proc = _run_cli("--config.mode=foo", "--workdir", str(tmp_path / "w"))
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("mucode: Unknown data mode 'foo'")
    assert not (tmp_path / "w" / "artifacts").exists()  # no stage ran
    assert time.monotonic() - start < 120


def test_a_misspelled_config_field_is_one_sentence(tmp_path):
    proc = _run_cli("--config.sft.optim.lrr=1e-3", "--workdir", str(tmp_path / "w"))
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "error: --config.sft.optim.lrr names no field of the config; did you mean 'lr'?"
    ), proc.stderr[-2000:]
    assert not (tmp_path / "w").exists()
