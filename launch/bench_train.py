"""SFT train-step throughput and MFU: our jitted JAX step vs a PyTorch `transformers` step.

Both run the same Llama shape, batch and sequence length on this machine, one after
the other: ours is the library's step (`create_train_state` + `make_train_step` +
AOT `compile_step`, AdamW + clipping, float32 master weights, ``--dtype`` compute);
PyTorch's is `LlamaForCausalLM` + `torch.optim.AdamW` + `clip_grad_norm_`, eager,
float32 weights with ``torch.autocast`` for bf16.

  CPU:  python launch/bench_train.py --attention=xla,grouped
  GPU:  python launch/bench_train.py --model=llama3.2-1b --seq=4096 --batch=4 --dtype=bfloat16 --remat

MFU = FLOPs/token × tokens/s / peak, with FLOPs/token = 6·N + 12·L·H·Q·T (PaLM,
N = matmul parameters incl. the LM head, no causal discount). Peak: ``--peak_tflops``,
else 989 TF/s bf16 on H100/H200, else (CPU) the float32 matmul rate measured here.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_MODEL = flags.DEFINE_string(
    "model", "bench-cpu", "LlamaConfig preset, or bench-cpu (a small CPU shape)."
)
_BATCH = flags.DEFINE_integer("batch", 4, "Sequences per step.")
_SEQ = flags.DEFINE_integer("seq", 256, "Sequence length.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_REMAT = flags.DEFINE_bool("remat", False, "Rematerialise decoder layers (ours).")
_REMAT_POLICY = flags.DEFINE_enum(
    "remat_policy", "auto", ["auto", "full", "dots", "dots_all"],
    "With --remat: what a layer keeps ('auto': 'dots' where the step fits the device, else 'full').",
)  # fmt: skip
_ATTENTION = flags.DEFINE_list(
    "attention", ["auto"], "LlamaConfig.attention values to time ours with, e.g. xla,grouped."
)
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps first.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Alternating timed rounds; the best round counts.")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0, "Peak TFLOP/s for MFU (0: see module doc).")
_TORCH = flags.DEFINE_bool("torch", True, "Also time the PyTorch step.")
_ONLY = flags.DEFINE_string(
    "only", "", "Internal: 'torch' times only the PyTorch step (child process)."
)
_OUT = flags.DEFINE_string("out", "", "Write the results as JSON here.")


def model_config():
    import jax.numpy as jnp

    from mucode_jax.models.llama import LlamaConfig

    dtype = jnp.bfloat16 if _DTYPE.value == "bfloat16" else jnp.float32
    kw = dict(
        dtype=dtype, param_dtype=jnp.float32, remat=_REMAT.value, remat_policy=_REMAT_POLICY.value
    )
    if _MODEL.value == "bench-cpu":
        return LlamaConfig.tiny(
            vocab_size=4096, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
            num_attention_heads=8, num_key_value_heads=4, head_dim=32, **kw,
        )  # fmt: skip
    return LlamaConfig.preset(_MODEL.value, **kw)


def flops_per_token(cfg, seq):
    n = cfg.num_params - (0 if cfg.tie_word_embeddings else cfg.vocab_size * cfg.hidden_size)
    attn = 12 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * seq
    return 6 * n + attn


def peak_flops():
    import jax
    import jax.numpy as jnp

    if _PEAK.value:
        return _PEAK.value * 1e12, "given"
    kind = jax.devices()[0].device_kind.lower()
    if "h100" in kind or "h200" in kind:
        return 989e12, f"{kind} dense bf16 spec"
    n = 2048
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = 0.0
    for _ in range(5):  # the best of 5 rounds: a shared machine's load only slows rounds down
        t = time.perf_counter()
        for _ in range(4):
            f(a).block_until_ready()
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t))
    return best, "measured float32 matmul (JAX, 2048^3, best of 5)"


kernels: dict[str, bool] = {}  # whether each compiled step of ours holds cuDNN's attention
compile_log: list[str] = []  # what compile_step said: the remat policy kept, the memory planned


def bench_ours(cfg, batch, seq):
    import jax
    import numpy as np
    import optax
    from flax import nnx

    from mucode_jax import sharding as sh
    from mucode_jax.models.llama import Llama
    from mucode_jax.training import steps
    from mucode_jax.training.state import abstract_like, create_train_state

    mesh, rules = sh.make_mesh(), sh.DEFAULT_RULES
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-5))
    graphdef, state, shardings = create_train_state(
        lambda: Llama(cfg, rngs=nnx.Rngs(0)), opt, mesh, rules
    )
    rng = np.random.default_rng(0)
    toks = rng.integers(0, cfg.vocab_size, (1, batch, seq + 1)).astype(np.int32)
    host = {
        "inputs": toks[..., :-1], "targets": toks[..., 1:],
        "weights": np.ones((1, batch, seq), np.float32),
        "segment_ids": np.ones((1, batch, seq), np.int32),
        "positions": np.broadcast_to(np.arange(seq, dtype=np.int32), (1, batch, seq)).copy(),
    }  # fmt: skip
    spec = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in host.items()}
    compiled = steps.compile_step(
        steps.make_train_step(steps.sft_loss_fn(graphdef), opt), shardings,
        abstract_like(state, shardings), spec, mesh, rules,
        remat_policies=("dots", "full") if cfg.remat and cfg.remat_policy == "auto" else (),
        log=lambda line: (print(line), compile_log.append(line)),
    )  # fmt: skip
    b = steps.put_batch(host, steps.batch_shardings(spec, mesh, rules))
    box = {"state": state}
    kernels[
        "cudnn attention in the step" + ("" if cfg.attention == "auto" else f" ({cfg.attention})")
    ] = "cudnn$fmha" in compiled.as_text()

    def run(n):
        m = None
        for _ in range(n):
            box["state"], m = compiled(box["state"], b)
        return float(jax.block_until_ready(m)["loss"])

    return run


def bench_torch(cfg, batch, seq):
    import torch
    import transformers

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    hf_cfg = transformers.LlamaConfig(**cfg.hf_dict())
    model = transformers.LlamaForCausalLM(hf_cfg).float().to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), device=dev)
    use_bf16 = _DTYPE.value == "bfloat16"

    def step():
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=use_bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

    def run(n):
        loss = None
        for _ in range(n):
            loss = step()
        sync()
        return float(loss.detach())

    return run


def timed(run, n):
    t = time.perf_counter()
    loss = run(n)
    return (time.perf_counter() - t) / n, loss


def best_of(run, name):
    return best_of_each({name: run})[name]


def best_of_each(runs):
    """Best seconds per step of each named run, the runs' timed rounds interleaved (so that
    a drift in the machine's speed does not favour the one timed first)."""
    for run in runs.values():
        run(_WARMUP.value)
    best = dict.fromkeys(runs, float("inf"))
    for r in range(_ROUNDS.value):
        for name, run in runs.items():
            sec, loss = timed(run, _STEPS.value)
            best[name] = min(best[name], sec)
            print(f"round {r}: {name}: {sec * 1e3:.1f} ms/step, loss {loss:.4f}", flush=True)
    return best


def torch_in_child():
    args = [a for a in sys.argv[1:] if not a.startswith(("--out", "--only", "--torch"))]
    out = subprocess.run(
        [sys.executable, __file__, *args, "--only=torch"],
        capture_output=True,
        text=True,
        check=False,
    )
    sys.stdout.write(
        "".join(line + "\n" for line in out.stdout.splitlines() if line.startswith("round"))
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("TORCH ")]
    if out.returncode or not lines:
        raise RuntimeError(f"the PyTorch benchmark failed:\n{out.stderr[-3000:]}")
    return float(lines[-1].split()[1])


def main(argv):
    del argv
    if _ONLY.value == "torch":
        cfg = model_config()
        print(f"TORCH {best_of(bench_torch(cfg, _BATCH.value, _SEQ.value), 'pytorch eager')}")
        return
    import jax

    cfg = model_config()
    batch, seq = _BATCH.value, _SEQ.value
    fpt = flops_per_token(cfg, seq)
    peak, peak_src = peak_flops()
    tokens = batch * seq
    # PyTorch runs in a child process first: sharing a process with XLA's CPU thread pool
    # slows torch's threads down several-fold, which would flatter us.
    rows = {}
    if _TORCH.value:
        rows["pytorch eager"] = torch_in_child()
    runs = {
        "jax (ours)" if impl == "auto" else f"jax (ours, attention={impl})": bench_ours(
            cfg.replace(attention=impl), batch, seq
        )
        for impl in _ATTENTION.value
    }
    rows.update(best_of_each(runs))
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "device": f"{jax.devices()[0].device_kind} x{jax.device_count()}",
        "cpu_count": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "model": _MODEL.value, "params": cfg.num_params, "batch": batch, "seq": seq,
        "dtype": _DTYPE.value, "remat": _REMAT.value, "remat_policy": _REMAT_POLICY.value, "flops_per_token": fpt,
        "peak_tflops": peak / 1e12, "peak_source": peak_src, "kernels": kernels, "compile_log": compile_log, "command": " ".join(sys.argv), "steps": _STEPS.value, "rounds": _ROUNDS.value,
        "results": {
            name: {"ms_per_step": s * 1e3, "tokens_per_s": tokens / s, "mfu": fpt * tokens / s / peak}
            for name, s in rows.items()
        },
    }  # fmt: skip
    if "pytorch eager" in rows:
        result["speedup_vs_pytorch"] = {
            name: rows["pytorch eager"] / s for name, s in rows.items() if name != "pytorch eager"
        }
    print(json.dumps(result, indent=2))
    if _OUT.value:
        Path(_OUT.value).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    app.run(main)
