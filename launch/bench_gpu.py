r"""The GPU checks of issue 15 as one prepared run: about 8 minutes on one H100 or H200.

  python3 launch/bench_gpu.py --out "$OUT"            # on the GPU machine (its own python3)
  python launch/bench_gpu.py --smoke --out /tmp/gpu   # the same steps on a tiny model, any CPU

Four steps, each in a child process with its own time limit (a step that fails or runs out of
time is reported as such and the others still run); the summary is rewritten after each:

1. ``probe``: the device, its memory bandwidth measured by an on-device elementwise pass
   (bytes read + written by ``x + 1`` over a 2 GiB float32 array, best of 10), and its bf16
   matmul rate (8192^3, best of 10);
2. ``memory``: compiled, not run: the per-device memory XLA plans for the verifier scorer's
   forward (Llama-3.2-1B backbone, bf16, 256 x 2048) and for the sampler's prefill (64 x 512,
   room for 512 new tokens), with attention "auto" (cuDNN's flash kernel on GPU) and "xla"
   (the [B, N, T, S] scores in memory), and whether the program holds cuDNN's kernel; step 1
   also compares cuDNN's attention with XLA's on a packed bf16 batch;
3. ``decode``: `launch/bench_sampler.py` for Llama-3.2-1B in bf16 at batch 64 and 256, 512
   prompt + 512 new tokens, greedy, against HF ``generate`` in a child process; its ceiling (the
   bytes a decode step must read, over the bandwidth) uses step 1's measured bandwidth;
4. ``train``: `launch/bench_train.py` for Llama-3.2-1B at 4 x 4096, bf16 compute, remat, our step
   only; MFU against the dense bf16 spec (989 TF/s) and against step 1's measured matmul rate.

Targets (issue 15): decode at least 50 % of the ceiling and at least 3x HF ``generate``; the
train step at least 40 % MFU. ``--out`` receives ``summary.json``, ``summary.md`` (lines for
docs/benchmarks.md) and one log per step. The model weights are random (nothing is downloaded).
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from absl import app, flags

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

_OUT = flags.DEFINE_string("out", "", "Directory for summary.json, summary.md and the step logs.")
_SMOKE = flags.DEFINE_bool("smoke", False, "Tiny sizes: checks the script itself on any CPU.")
STEP_NAMES = ("probe", "memory", "decode", "train")
_STEPS = flags.DEFINE_list("steps", list(STEP_NAMES), "Steps to run, in order.")
_LIMITS = flags.DEFINE_list(
    "limits", ["40", "70", "230", "140"], "Seconds allowed to probe, memory, decode and train."
)
_STEP = flags.DEFINE_string("step", "", "Internal: run one step's measurement in this process.")

SPEC_BF16_FLOPS = 989e12  # H100 / H200 SXM dense bf16
TARGETS = {"fraction_of_ceiling": 0.5, "speedup_vs_hf": 3.0, "mfu": 0.4}


# --- step 1: the device's measured bandwidth and matmul rate -------------------------------


def probe(out: Path, smoke: bool) -> None:
    import jax
    import jax.numpy as jnp

    dev = jax.devices()[0]
    n_bw = (1 << 23) if smoke else (1 << 29)  # float32 elements: 32 MiB or 2 GiB
    n_mm = 256 if smoke else 8192
    add = jax.jit(lambda x: x + 1)
    x = jnp.zeros((n_bw,), jnp.float32)
    best = _best(lambda: add(x), 10)
    bandwidth = 2 * 4 * n_bw / best  # read and written once each
    x = None  # frees the array before the matmul
    a = jax.random.normal(jax.random.key(0), (n_mm, n_mm), jnp.bfloat16)
    dot = jax.jit(lambda a: jnp.dot(a, a, preferred_element_type=jnp.bfloat16))
    best_mm = _best(lambda: dot(a), 10)
    result = {
        "attention_cudnn_vs_xla": attention_check(smoke),
        "device": f"{dev.device_kind} x{jax.device_count()}",
        "platform": dev.platform,
        "jax": jax.__version__,
        "bandwidth_bytes_s": bandwidth,
        "bandwidth_array_bytes": 4 * n_bw,
        "bf16_matmul_flops": 2 * n_mm**3 / best_mm,
        "matmul_n": n_mm,
    }
    print(json.dumps(result, indent=2))
    (out / "probe.json").write_text(json.dumps(result, indent=2))


def attention_check(smoke: bool) -> dict:
    """cuDNN's attention against XLA's on one packed, padded bf16 batch (GQA 32:8, head 64)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mucode_jax.models.llama import attention

    b, t = (2, 64) if smoke else (4, 2048)
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(b, t, 32, 64)), jnp.bfloat16)
    k, v = (jnp.asarray(rng.normal(size=(b, t, 8, 64)), jnp.bfloat16) for _ in range(2))
    seg = np.repeat(np.arange(1, 5), t // 4)[None].repeat(b, 0)
    seg[:, -t // 8 :] = 0  # padding at the end
    mask = (seg[:, :, None] == seg[:, None, :]) & (seg[:, None, :] != 0)
    mask = jnp.asarray(mask & np.tril(np.ones((t, t), bool)))
    real = np.asarray(mask.any(-1))
    want = np.asarray(jax.jit(lambda *a: attention(*a, impl="xla"))(q, k, v, mask), np.float32)
    weights = jnp.asarray(rng.normal(size=q.shape) * real[:, :, None, None], jnp.float32)

    def grads(impl):  # the training kernels: d/d(q, k, v) of a weighted sum of the output
        def total(q, k, v):
            return (attention(q, k, v, mask, impl=impl).astype(jnp.float32) * weights).sum()

        return jax.jit(jax.grad(total, argnums=(0, 1, 2)))

    want_grads = [np.asarray(g, np.float32) for g in grads("xla")(q, k, v)]
    try:
        fn = jax.jit(lambda *a: attention(*a, impl="cudnn"))
        hlo = fn.lower(q, k, v, mask).compile().as_text()
        got = np.asarray(fn(q, k, v, mask), np.float32)
        train = grads("cudnn")
        train_hlo = train.lower(q, k, v).compile().as_text()
        got_grads = [np.asarray(g, np.float32) for g in train(q, k, v)]
    except Exception as e:  # noqa: BLE001 - reported, not raised: the other checks go on
        return {"cudnn": f"not available: {type(e).__name__}: {str(e)[:300]}"}
    diff = np.abs(got - want)[real]
    # Gradients relative to their scale: bf16 kernels differ at bf16 rounding.
    grad_diff = [
        float(np.abs(g - w).max() / max(np.abs(w).max(), 1e-30))
        for g, w in zip(got_grads, want_grads)
    ]
    return {
        "cudnn": "ran",
        "cudnn_kernel_in_program": "cudnn$fmha" in hlo and "cudnn$fmha" in train_hlo,
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "grad_max_rel_diff_qkv": grad_diff,
        "shape": [b, t, 32, 64],
    }


def memory(out: Path, smoke: bool) -> None:
    """What XLA plans per device for the scorer's forward and the sampler's prefill."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from mucode_jax.models.llama import Llama, LlamaConfig
    from mucode_jax.models.verifier import Verifier
    from mucode_jax.sampling import Sampler
    from mucode_jax.scoring import VerifierScorer

    preset = "tiny" if smoke else "llama3.2-1b"
    (sb, st), (pb, pp, pm) = ((8, 128), (4, 64, 64)) if smoke else ((256, 2048), (64, 512, 512))
    rows = []
    for impl in ("auto", "xla"):
        cfg = LlamaConfig.preset(
            preset, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, attention=impl
        )
        ver = nnx.eval_shape(lambda c=cfg: Verifier(c, rngs=nnx.Rngs(0)))
        scorer = VerifierScorer(ver, None, max_length=st, max_batch_size=sb)
        ids = jax.ShapeDtypeStruct((sb, st), jnp.int32)
        rows.append(_planned(f"verifier scorer {sb} x {st}", impl,
                             scorer._fn.lower(scorer._params, ids, ids)))  # fmt: skip
        model = nnx.eval_shape(lambda c=cfg: Llama(c, rngs=nnx.Rngs(0)))
        sampler = Sampler(model, max_new_tokens=pm, prompt_buckets=(pp,), batch_buckets=(pb,),
                          eos_ids=())  # fmt: skip
        i2, i1 = jax.ShapeDtypeStruct((pb, pp), jnp.int32), jax.ShapeDtypeStruct((pb,), jnp.int32)
        seed = jax.ShapeDtypeStruct((), jnp.uint32)
        lowered = sampler._prefill.lower(sampler.method, sampler._params, i2, i2, i1, i1, seed)
        rows.append(_planned(f"sampler prefill {pb} x {pp} (+{pm})", impl, lowered))
        print(json.dumps(rows[-2:], indent=2), flush=True)
    (out / "memory.json").write_text(json.dumps({"model": preset, "rows": rows}, indent=2))


def _planned(what: str, impl: str, lowered) -> dict:
    compiled = lowered.compile()
    m = compiled.memory_analysis()
    get = lambda name: int(getattr(m, name, 0) or 0) if m is not None else None
    return {
        "what": what,
        "attention": impl,
        "cudnn_kernel_in_program": "cudnn$fmha" in compiled.as_text(),
        "argument_bytes": get("argument_size_in_bytes"),
        "temp_bytes": get("temp_size_in_bytes"),
        "output_bytes": get("output_size_in_bytes"),
    }


def _best(fn, rounds: int) -> float:
    """Best wall seconds of ``fn()`` (its result waited for) over ``rounds``, after a warm-up."""
    import jax

    jax.block_until_ready(fn())
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return best


# --- the orchestration ---------------------------------------------------------------------


def commands(out: Path, smoke: bool, bandwidth: float | None) -> dict[str, list[str]]:
    """The child command of each step."""
    me, py = str(Path(__file__).resolve()), sys.executable
    bw = [f"--bandwidth={bandwidth:.6g}"] if bandwidth else []
    if smoke:
        decode = ["--preset=tiny", "--dtype=float32", "--batch=2,4", "--prompt_len=16",
                  "--new_tokens=16", "--repeats=1", "--hf_threads=1"]  # fmt: skip
        train = ["--model=tiny", "--seq=64", "--batch=2", "--dtype=bfloat16", "--steps=1",
                 "--rounds=1", "--warmup=1"]  # fmt: skip
    else:
        decode = ["--preset=llama3.2-1b", "--dtype=bfloat16", "--batch=64,256",
                  "--prompt_len=512", "--new_tokens=512", "--repeats=2"]  # fmt: skip
        train = ["--model=llama3.2-1b", "--seq=4096", "--batch=4", "--dtype=bfloat16",
                 "--steps=3", "--rounds=2", "--warmup=1"]  # fmt: skip
    smoke_flag = ["--smoke"] if smoke else []
    return {
        "probe": [py, me, "--step=probe", f"--out={out}", *smoke_flag],
        "memory": [py, me, "--step=memory", f"--out={out}", *smoke_flag],
        "decode": [
            py,
            str(ROOT / "launch/bench_sampler.py"),
            *decode,
            *bw,
            f"--out={out / 'decode.json'}",
        ],  # fmt: skip
        "train": [
            py,
            str(ROOT / "launch/bench_train.py"),
            *train,
            "--remat",
            "--notorch",
            f"--out={out / 'train.json'}",
        ],  # fmt: skip
    }


def run_step(name: str, cmd: list[str], limit: float, log: Path) -> dict:
    """Runs ``cmd`` in its own process group, its output echoed and kept in ``log``; kills the
    group after ``limit`` seconds."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    print(f"== {name}: {' '.join(cmd)} (limit {limit:g} s)", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            start_new_session=True,
        )  # fmt: skip

        def echo():
            for line in proc.stdout:
                f.write(line)
                f.flush()
                print(f"[{name}] {line}", end="", flush=True)

        reader = threading.Thread(target=echo, daemon=True)
        reader.start()
        try:
            rc = proc.wait(timeout=limit)
            status = "ok" if rc == 0 else f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {limit:g} s"
        finally:
            # The whole group goes, also what a step left running (the HF child of decode)
            # and also when this script is stopped (SIGTERM is turned into SystemExit).
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            reader.join()  # the pipe closes once the group is gone: the log is complete
    seconds = time.perf_counter() - t0
    print(f"== {name}: {status} in {seconds:.0f} s", flush=True)
    return {"status": status, "seconds": round(seconds, 1), "command": " ".join(cmd)}


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def summarize(out: Path, steps: dict[str, dict]) -> dict:
    """summary.json and summary.md from whatever the steps wrote."""
    probe_r, mem, decode, train = (_read(out / f"{s}.json") for s in STEP_NAMES)
    summary = {
        "date": str(datetime.date.today()),
        "steps": steps,
        "probe": probe_r,
        "memory": mem,
        "decode": decode,
        "train": train,
        "targets": TARGETS,
    }
    lines = [f"# GPU checks, {summary['date']}", ""]
    for name, s in steps.items():
        lines.append(f"- {name}: {s['status']} in {s['seconds']} s: `{s['command']}`")
    lines.append("")
    lines.append("| what | figure | target |")
    lines.append("|---|---|---|")
    if probe_r:
        lines.append(
            f"| device | {probe_r['device']}, jax {probe_r['jax']} | |\n"
            f"| memory bandwidth, measured (x + 1 over {probe_r['bandwidth_array_bytes'] / 2**30:.2f}"
            f" GiB, read + written) | {probe_r['bandwidth_bytes_s'] / 1e12:.3f} TB/s | |\n"
            f"| bf16 matmul, measured ({probe_r['matmul_n']}^3) | "
            f"{probe_r['bf16_matmul_flops'] / 1e12:.1f} TFLOP/s | |"
        )
    if probe_r:
        a = probe_r["attention_cudnn_vs_xla"]
        figure = (
            f"forward: max abs difference {a['max_abs_diff']:.3g} (mean "
            f"{a['mean_abs_diff']:.2g}); gradients of q, k, v: max difference "
            + ", ".join(f"{x:.2g}" for x in a["grad_max_rel_diff_qkv"])
            + f" of their largest entry; cuDNN kernels in both programs: "
            f"{a['cudnn_kernel_in_program']}"
            if a["cudnn"] == "ran"
            else a["cudnn"]
        )
        lines.append(f"| attention, cuDNN vs XLA, bf16 {a.get('shape', '')} | {figure} | |")
    if mem:
        for r in mem["rows"]:
            gib = lambda x: "n/a" if x is None else f"{x / 2**30:.2f} GiB"
            lines.append(
                f"| planned memory, {mem['model']} bf16, {r['what']}, attention={r['attention']} "
                f"| temporaries {gib(r['temp_bytes'])}, arguments {gib(r['argument_bytes'])}; "
                f"cuDNN kernel: {r['cudnn_kernel_in_program']} | |"
            )
    if decode and not probe_r and decode.get("bandwidth"):
        lines.append(
            f"| decode ceiling | the probe did not finish: the ceiling uses the device's spec "
            f"bandwidth, {decode['bandwidth'] / 1e12:.2f} TB/s, not a measured one | |"
        )
    if decode:
        for r in decode["rows"]:
            frac = r["fraction_of_ceiling"]
            hf = r["hf"][0] if r["hf"] else None
            lines.append(
                f"| decode, {decode['model']} {decode['dtype']}, batch {r['batch']}, "
                f"{decode['prompt_len']}+{decode['new_tokens']} | ours {r['tok_s']:,.0f} tok/s "
                f"(decode only {r['decode_tok_s']:,.0f})"
                + (
                    ""
                    if frac is None
                    else f"; {frac:.0%} of the {r['ceiling_tok_s']:,.0f} tok/s ceiling"
                )
                + (
                    ""
                    if hf is None
                    else f"; HF generate {hf['tok_s']:,.0f} tok/s: **{hf['speedup']:.2f}x**, "
                    f"{hf['same_tokens']:.0%} of rows token-identical"
                )
                + " | >= 50 % of the ceiling, >= 3x HF |"
            )
    if train:
        res = next(iter(train["results"].values()))
        flops = train["flops_per_token"] * res["tokens_per_s"]
        measured = probe_r["bf16_matmul_flops"] if probe_r else None
        summary["train_mfu"] = {
            "spec": flops / SPEC_BF16_FLOPS,
            "measured_peak": None if measured is None else flops / measured,
        }
        lines.append(
            f"| train step, {train['model']} {train['dtype']} remat={train['remat']}, "
            f"{train['batch']} x {train['seq']} | {res['ms_per_step']:.0f} ms/step, "
            f"{res['tokens_per_s']:,.0f} tok/s; MFU **{flops / SPEC_BF16_FLOPS:.1%}** of 989 TF/s"
            + ("" if measured is None else f", {flops / measured:.1%} of the measured matmul rate")
            + f"; cuDNN attention in the step: {next(iter(train.get('kernels', {}).values()), 'n/a')}"
            + " | >= 40 % MFU |"
        )
        for line in train.get("compile_log", []):
            lines.append(f"| train step, compiled | {line} | |")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return summary


def main(argv):
    del argv
    out = Path(_OUT.value or "bench_gpu_out").resolve()
    out.mkdir(parents=True, exist_ok=True)
    if _STEP.value:
        in_process = {"probe": probe, "memory": memory}
        if _STEP.value not in in_process:
            sys.exit(
                f"bench_gpu: --step={_STEP.value!r} is not run in-process; use probe or memory."
            )
        in_process[_STEP.value](out, _SMOKE.value)
        return
    unknown = [s for s in _STEPS.value if s not in STEP_NAMES]
    if unknown or len(_LIMITS.value) != len(STEP_NAMES):
        sys.exit(
            f"bench_gpu: --steps takes {', '.join(STEP_NAMES)} (got {unknown or _STEPS.value}) "
            f"and --limits {len(STEP_NAMES)} numbers of seconds; fix the flag."
        )
    limits = dict(zip(STEP_NAMES, map(float, _LIMITS.value)))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run_step's cleanup then runs
    for name in STEP_NAMES:
        (out / f"{name}.json").unlink(missing_ok=True)  # no stale results in the summary
    steps: dict[str, dict] = {}
    t0 = time.perf_counter()
    for name in _STEPS.value:
        probed = _read(out / "probe.json")
        bw = probed["bandwidth_bytes_s"] if probed else None
        cmd = commands(out, _SMOKE.value, bw)[name]
        steps[name] = run_step(name, cmd, limits[name], out / f"{name}.log")
        summarize(out, steps)
    print(f"\n== all steps in {time.perf_counter() - t0:.0f} s; {out / 'summary.md'}:\n")
    print((out / "summary.md").read_text(), flush=True)
    if any(s["status"] != "ok" for s in steps.values()):
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
