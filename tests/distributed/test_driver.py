"""The μCode driver (`launch/mucode.py`, `configs/demo_ci.py`) as 2 processes x 4 CPU devices
against 1 process x 8 devices: the same stages under the same keys, the same summary.

Both runs start from one warm-start artifact trained on 1 device (the warm start is plain SFT,
whose 2-process equality `test_multiprocess.py` checks step by step; its 160 steps on 8
devices would double this test's time), so they run rollouts, verifier data, verifier
training, scores, relabeling, generator SFT and both evaluations, the 2-process run with
one executor per process. Every wait has a timeout and a timed-out job is killed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mucode_jax import records
from tests.distributed.procs import JOB, env_for, launch

ROOT = Path(__file__).resolve().parents[2]
# The shrunken demo, shrunk further: half the rollout searches, a quarter of the verifier
# pairs, and the train problems as the test set, which the warm start has memorised, so the
# evaluations' numbers are not all zero and the comparison can fail.
OVERRIDES = {
    "data.tests.toy.split": "train",
    "rollout.search.num_searches": 2,
    "verifier.data.pairs_per_problem": 8,
}
CMD = [sys.executable, "launch/mucode.py", "--config", "configs/demo_ci.py"]
CMD += [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
TIMEOUT_S = 1800  # per run, on 2 loaded CPU cores


def _warm_start(workdir: Path) -> Path:
    """The warm-start artifact, trained on 1 CPU device (the HF export it publishes does not
    depend on the mesh, nor does its key)."""
    log = workdir.parent / "warm_start.log"
    with open(log, "w") as f:
        rc = subprocess.run(
            [sys.executable, str(JOB), "warm_start", str(workdir), json.dumps(OVERRIDES)],
            cwd=ROOT, env=env_for(1), stdout=f, stderr=subprocess.STDOUT, timeout=TIMEOUT_S,
        ).returncode  # fmt: skip
    assert rc == 0, log.read_text()[-4000:]
    result = json.loads(log.read_text().split("RESULT ")[-1])
    assert "error" not in result, result
    return workdir / "artifacts" / result["artifact"]


def _start(workdir: Path, processes: int, extra=None, cmd=CMD) -> tuple[list[int], list[str]]:
    """Runs the driver as ``processes`` processes; their return codes and logs."""
    return launch(
        lambda i: [*cmd, "--workdir", str(workdir), *(extra[i] if extra else [])],
        processes,
        lambda i: workdir.parent / f"{workdir.name}.{i}.log",
        TIMEOUT_S,
    )


def _run(workdir: Path, processes: int) -> list[str]:
    codes, logs = _start(workdir, processes)
    for code, text in zip(codes, logs):
        assert code == 0, text[-4000:]
    return logs


def _stages(workdir: Path) -> list[str]:
    return sorted(p.name for p in (workdir / "artifacts").iterdir())


def _decisions(path: Path) -> list:
    """What each search of a record file did, without timings: per turn the choice and each
    candidate's completion, oracle label and score."""
    return [
        [t.problem_id, t.search, [[u.selected, [(c.completion, c.label, c.score)
                                                for c in u.candidates]] for u in t.turns]]
        for t in records.read_trajectories(path)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def driver_runs(tmp_path_factory):
    """The 1-process and the 2-process driver runs from one warm start."""
    root = tmp_path_factory.mktemp("driver")
    one, two = root / "one", root / "two"
    warm = _warm_start(root / "warm")
    for w in (one, two):
        shutil.copytree(warm, w / "artifacts" / warm.name)
    (log,) = _run(one, 1)
    return root, warm, one, two, [log, *_run(two, 2)]


def test_driver_on_two_processes_gives_the_one_process_summary(driver_runs):
    _, warm, one, two, (log, log0, log1) = driver_runs
    for text in (log, log0, log1):
        assert f"reusing {warm.name}" in text
    assert "stage rollouts: running" in log1  # process 1 took part in every stage
    # The same stages under the same content keys, every one finished.
    assert _stages(two) == _stages(one)
    assert not [s for s in _stages(two) if s.endswith(".partial")]
    # One merged record file per search, no process's shard left behind.
    assert not list((two / "artifacts").glob("*/*.process*.jsonl"))
    rolls = sorted((two / "artifacts").glob("rollouts-*/rollouts.jsonl"))
    refs = sorted((one / "artifacts").glob("rollouts-*/rollouts.jsonl"))
    assert [len(_decisions(r)) for r in rolls] == [8 * 2] * len(refs)  # 8 problems x 2 searches
    for r, ref in zip(rolls, refs):
        assert _decisions(r) == _decisions(ref), r.parent.name  # samples, labels, order
    # Each process's executor kept its own reference costs.
    assert (two / "reference_cpu.process1.jsonl").is_file()

    s1 = json.loads((one / "summary.json").read_text())
    s2 = json.loads((two / "summary.json").read_text())
    assert set(s2["models"]) == {"base", "mucode/iter1"}
    assert s2["models"] == s1["models"]
    # Every stage's host files are equal too; verifier scores (and the relabeled rows' target
    # scores) to float32 rounding: the verifier trained on 2 processes reduces in another order.
    for name in ("verifier_data-*/pairs.jsonl", "sft_data-*/sft.jsonl", "scores-*/scores.jsonl"):
        a = sorted((one / "artifacts").glob(name))
        b = sorted((two / "artifacts").glob(name))
        assert a and [p.parent.name for p in a] == [p.parent.name for p in b], name
        for x, y in zip(a, b):
            rows_x, rows_y = _rows(x), _rows(y)
            assert [r for r, _ in rows_x] == [r for r, _ in rows_y], name
            np.testing.assert_allclose([v for _, v in rows_x], [v for _, v in rows_y], rtol=1e-5)


def _rows(path: Path) -> list[tuple[str, float]]:
    """A JSONL file's rows without their score, and the score (0 if none)."""
    out = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        score = row.pop("score", None) or row.pop("target_score", None) or 0.0
        out.append((json.dumps(row, sort_keys=True), float(score)))
    return out


def test_driver_processes_with_different_configs_stop_at_start(tmp_path):
    codes, logs = _start(tmp_path / "w", 2, extra=[[], ["--config.seed=1"]])
    for code, text in zip(codes, logs):
        assert code != 0
        assert (
            text.strip()
            .splitlines()[-1]
            .startswith(
                "mucode: The driver config differs between processes (process 0 vs [1]); start every"
            )
        ), text[-2000:]
    assert not (tmp_path / "w" / "artifacts").exists()  # no stage ran


def test_evaluation_on_two_processes_matches_one_process(driver_runs):
    """`launch/evaluate.py` (public tests and learned-verifier selection, MBPP) of the warm
    start with the run's verifier: the same searches and metrics on 2 processes as on 1."""
    root, warm, one, _, _ = driver_runs
    verifier = sorted((one / "artifacts").glob("verifier-*"))[0]
    cmd = [
        sys.executable, "launch/evaluate.py", "--config", "configs/eval_mbpp.py",
        f"--config.checkpoint={warm / 'hf'}", f"--config.verifier={verifier / 'hf'}",
        "--config.num_problems=2", "--config.modes=pt,lv", "--config.num_candidates=2",
        "--config.max_turns=2", "--config.max_new_tokens=32", "--config.max_prompt_length=512",
        "--config.max_batch_size=8", "--config.batch_size=8", "--config.verifier_max_length=256",
        "--config.workers=1", "--config.dtype=float32", "--config.progress=False",
    ]  # fmt: skip
    a, b = root / "eval_one", root / "eval_two"
    for workdir, processes in ((a, 1), (b, 2)):
        codes, logs = _start(workdir, processes, cmd=cmd)
        for code, text in zip(codes, logs):
            assert code == 0, text[-4000:]
    assert sorted(p.name for p in b.iterdir()) == sorted(
        ["eval_config.json", "metrics.json", "per_turn_success.png", "reference_cpu.jsonl",
         "reference_cpu.process1.jsonl", "search_lv.jsonl", "search_pt.jsonl"]
    )  # fmt: skip
    for mode in ("pt", "lv"):
        got, want = _decisions(b / f"search_{mode}.jsonl"), _decisions(a / f"search_{mode}.jsonl")
        assert len(got) == 2 and got == want, mode
    m1, m2 = (json.loads((w / "metrics.json").read_text()) for w in (a, b))
    assert m2["modes"] == m1["modes"]
