"""`launch/bench_gpu.py`, the prepared GPU run of issue 15, checked on CPU at tiny sizes: every
step runs and lands in the summary; a step past its limit is killed and reported."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_the_summary_renders_what_a_gpu_run_writes(tmp_path, monkeypatch):
    """The GPU-only branches of the summary (cuDNN ran, a measured ceiling, the remat policy
    kept), from the files each step writes there."""
    monkeypatch.syspath_prepend(str(REPO / "launch"))
    import bench_gpu

    write = lambda name, d: (tmp_path / f"{name}.json").write_text(json.dumps(d))
    write("probe", {
        "device": "NVIDIA H100 80GB HBM3 x1", "platform": "gpu", "jax": "0.11.2",
        "bandwidth_bytes_s": 3.0e12, "bandwidth_array_bytes": 2**31,
        "bf16_matmul_flops": 7.9e14, "matmul_n": 8192,
        "attention_cudnn_vs_xla": {
            "cudnn": "ran", "cudnn_kernel_in_program": True, "max_abs_diff": 0.0078,
            "mean_abs_diff": 2e-4, "grad_max_rel_diff_qkv": [0.01, 0.02, 0.01],
            "shape": [4, 2048, 32, 64],
        },
    })  # fmt: skip
    write("memory", {"model": "llama3.2-1b", "rows": [
        {"what": "verifier scorer 256 x 2048", "attention": "auto",
         "cudnn_kernel_in_program": True, "argument_bytes": 2**31, "temp_bytes": 3 * 2**30,
         "output_bytes": 1024},
    ]})  # fmt: skip
    write("decode", {
        "model": "llama3.2-1b", "dtype": "bfloat16", "prompt_len": 512, "new_tokens": 512,
        "bandwidth": 3.0e12,
        "rows": [{"batch": 64, "tok_s": 30000.0, "decode_tok_s": 32000.0,
                  "ceiling_tok_s": 60000.0, "fraction_of_ceiling": 32000 / 60000,
                  "hf": [{"threads": 0, "tok_s": 8000.0, "speedup": 3.75, "same_tokens": 0.9}]}],
    })  # fmt: skip
    write("train", {
        "model": "llama3.2-1b", "dtype": "bfloat16", "remat": True, "batch": 4, "seq": 4096,
        "flops_per_token": 1.0e10, "kernels": {"cudnn attention in the step": True},
        "compile_log": ["remat policy 'dots': kept (planned 40.0 GiB, budget 70.0 GiB)"],
        "results": {"jax (ours)": {"ms_per_step": 400.0, "tokens_per_s": 40960.0}},
    })  # fmt: skip
    steps = {n: {"status": "ok", "seconds": 1.0, "command": n} for n in bench_gpu.STEP_NAMES}
    summary = bench_gpu.summarize(tmp_path, steps)
    md = (tmp_path / "summary.md").read_text()
    assert "3.000 TB/s" in md and "790.0 TFLOP/s" in md
    assert "gradients of q, k, v: max difference 0.01, 0.02, 0.01" in md
    assert "53% of the 60,000 tok/s ceiling" in md and "**3.75x**" in md
    assert "remat policy 'dots': kept" in md and "cuDNN attention in the step: True" in md
    # MFU: 1e10 FLOP/token x 40,960 tok/s = 409.6 TF/s: 41.4 % of 989, 51.8 % of 790.
    assert summary["train_mfu"]["spec"] == pytest.approx(409.6e12 / 989e12)
    assert "MFU **41.4%** of 989 TF/s, 51.8% of the measured matmul rate" in md
