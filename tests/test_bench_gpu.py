"""`launch/bench_gpu.py`, the prepared GPU run of issue 15, checked on CPU at tiny sizes: every
step runs and lands in the summary; a step past its limit is killed and reported."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(out: Path, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "launch/bench_gpu.py", "--smoke", f"--out={out}", *flags],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_smoke_run_measures_every_step(tmp_path):
    proc = _run(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {k: v["status"] for k, v in summary["steps"].items()} == dict.fromkeys(
        ("probe", "memory", "decode", "train"), "ok"
    )
    probe = summary["probe"]
    assert probe["bandwidth_bytes_s"] > 0 and probe["bf16_matmul_flops"] > 0
    # No cuDNN on CPU: the check says so instead of failing the step.
    assert probe["attention_cudnn_vs_xla"]["cudnn"].startswith("not available")
    planned = summary["memory"]["rows"]
    assert [(r["attention"], r["what"].split(" ")[1]) for r in planned] == [
        ("auto", "scorer"),
        ("auto", "prefill"),
        ("xla", "scorer"),
        ("xla", "prefill"),
    ]
    assert all(r["temp_bytes"] > 0 and not r["cudnn_kernel_in_program"] for r in planned)
    rows = summary["decode"]["rows"]
    assert [r["batch"] for r in rows] == [2, 4]
    for r in rows:
        # The ceiling was computed from the probe's measured bandwidth, and HF ran beside us.
        assert r["ceiling_tok_s"] > 0 and r["fraction_of_ceiling"] > 0
        assert r["hf"][0]["tok_s"] > 0 and r["hf"][0]["same_tokens"] == 1.0
    assert summary["decode"]["bandwidth"] == float(f"{probe['bandwidth_bytes_s']:.6g}")
    assert 0 < summary["train_mfu"]["measured_peak"]
    md = (tmp_path / "summary.md").read_text()
    assert md.count("| decode, tiny float32, batch") == 2 and "| train step, tiny" in md
    assert md.count("| planned memory, tiny bf16") == 4
    for step in ("probe", "memory", "decode", "train"):
        assert (tmp_path / f"{step}.log").read_text()


def test_a_step_past_its_limit_is_killed_and_reported(tmp_path):
    (tmp_path / "decode.json").write_text("{}")  # a stale result must not reach the summary
    proc = _run(tmp_path, "--steps=probe,decode", "--limits=0.5,1,0.5,1")
    assert proc.returncode == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"]["probe"]["status"] == "timed out after 0.5 s"
    assert summary["steps"]["decode"]["status"] == "timed out after 0.5 s"
    assert summary["decode"] is None and summary["probe"] is None
