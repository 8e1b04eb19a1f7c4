r"""New tokens per second of our sampler vs HF `transformers` `generate`, same model and machine.

Both sides get the same randomly initialised Llama (built in PyTorch, converted with
`from_state_dict`), the same batch of equal-length random prompts, greedy decoding and
no end ids, so every row produces exactly ``--new_tokens`` tokens. Times are wall
clock after one warm-up run (compilation excluded for us, CUDA/kernel warm-up for HF).

CPU (small config)::

  python launch/bench_sampler.py --preset=small --batch=8 --prompt_len=128 --new_tokens=128

GPU (Llama-3.2-1B shape, bf16; also prints the fraction of the memory-bandwidth ceiling)::

  python launch/bench_sampler.py --preset=llama3.2-1b --dtype=bfloat16 --batch=64,256 \
      --prompt_len=512 --new_tokens=512

The memory-bandwidth ceiling of a decode step is (weight bytes + KV bytes at the mean
context) / bandwidth; ``--bandwidth`` defaults to the device's HBM figure (H100 SXM
3.35 TB/s, H200 4.8 TB/s) and is unknown on CPU. Our decode fraction uses the decode
time alone (the full run minus a prefill-plus-one-token run).
"""

from __future__ import annotations

import datetime
import functools
import os
import platform
import time

# Leave GPU memory for PyTorch: JAX would otherwise preallocate 75 % of it.
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.55")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from mucode_jax.models.hf import from_state_dict  # noqa: E402
from mucode_jax.models.llama import LlamaConfig  # noqa: E402
from mucode_jax.sampling import Sampler  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("preset", "small", "'small' (CPU) or a LlamaConfig preset, e.g. llama3.2-1b.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Parameter and compute dtype.")
flags.DEFINE_list("batch", ["8"], "Batch sizes to measure.")
flags.DEFINE_integer("prompt_len", 128, "Prompt length (all prompts equal).")
flags.DEFINE_integer("new_tokens", 128, "New tokens per row.")
flags.DEFINE_bool("hf", True, "Also time transformers generate.")
flags.DEFINE_float("bandwidth", 0.0, "Memory bandwidth in bytes/s (0: from the device kind).")
flags.DEFINE_integer("repeats", 2, "Timed runs per measurement (the best is reported).")

SMALL = dict(
    vocab_size=32_000, hidden_size=512, intermediate_size=1536, num_hidden_layers=4,
    num_attention_heads=8, num_key_value_heads=2, head_dim=64, tie_word_embeddings=False,
    max_position_embeddings=4096, rope_theta=500_000.0,
)  # fmt: skip
BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12}


def build(preset: str, dtype: str):
    import torch
    import transformers

    cfg = LlamaConfig.tiny(**SMALL) if preset == "small" else LlamaConfig.preset(preset)
    hf_kw = cfg.replace(eos_token_id=None, bos_token_id=None, pad_token_id=0).hf_dict()
    torch.manual_seed(0)
    with torch.device("cpu"):
        hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**hf_kw)).eval()
    jdt = jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
    ours = from_state_dict(
        hf.state_dict(), LlamaConfig.from_hf(hf.config, dtype=jdt, param_dtype=jdt)
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    hf = hf.to(device=device, dtype=torch.bfloat16 if dtype == "bfloat16" else torch.float32)
    return ours, hf, device


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up / compile
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def ceiling(cfg: LlamaConfig, batch: int, context: float, bytes_per: int, bw: float) -> float:
    """Decode tokens/s if each step only read the weights and the filled KV cache."""
    weights = cfg.num_params * bytes_per
    if not cfg.tie_word_embeddings:
        weights -= cfg.vocab_size * cfg.hidden_size * bytes_per  # lookup reads B rows only
    kv_per_token = cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * cfg.head_dim * bytes_per
    step_bytes = weights + batch * context * kv_per_token
    return batch * bw / step_bytes


def main(argv):
    del argv
    import torch

    ours, hf, device = build(FLAGS.preset, FLAGS.dtype)
    cfg = ours.config
    p, m = FLAGS.prompt_len, FLAGS.new_tokens
    kind = jax.devices()[0].device_kind
    bw = FLAGS.bandwidth or next((v for k, v in BANDWIDTH.items() if k in kind), 0.0)
    bytes_per = 2 if FLAGS.dtype == "bfloat16" else 4
    rows = []
    for b in (int(x) for x in FLAGS.batch):
        rng = np.random.RandomState(0)
        prompts = rng.randint(1, cfg.vocab_size, (b, p))
        sampler = Sampler(
            ours, max_new_tokens=m, prompt_buckets=(p,), batch_buckets=(b,), eos_ids=()
        )
        lists = prompts.tolist()
        t_ours = best_time(functools.partial(sampler.sample, lists), FLAGS.repeats)
        t_pre = best_time(functools.partial(sampler.sample, lists, max_new_tokens=1), FLAGS.repeats)
        out = sampler.sample(lists)
        assert all(len(t) == m for t in out.tokens)
        ours_tps = b * m / t_ours
        decode_tps = b * (m - 1) / max(t_ours - t_pre, 1e-9)
        hf_tps = float("nan")
        if FLAGS.hf:
            ids = torch.tensor(prompts, device=device)
            kw = dict(do_sample=False, max_new_tokens=m, min_new_tokens=m, pad_token_id=0)

            def run_hf(ids=ids, kw=kw):
                with torch.no_grad():
                    hf.generate(ids, attention_mask=torch.ones_like(ids), **kw)
                if device == "cuda":
                    torch.cuda.synchronize()

            hf_tps = b * m / best_time(run_hf, FLAGS.repeats)
        ceil = ceiling(cfg, b, p + m / 2, bytes_per, bw) if bw else float("nan")
        rows.append((b, ours_tps, decode_tps, hf_tps, ceil))
        print(
            f"batch {b}: ours {ours_tps:,.0f} tok/s (decode only {decode_tps:,.0f}), "
            f"HF generate {hf_tps:,.0f} tok/s, speed-up {ours_tps / hf_tps:.2f}x, "
            f"ceiling {ceil:,.0f} tok/s ({decode_tps / ceil:.0%} of it)",
            flush=True,
        )

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    machine = f"{kind} x{jax.device_count()} ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    print(
        f"\n{datetime.date.today()} | {machine} | jax {jax.__version__}, torch {torch.__version__}"
    )
    print(
        f"load average {load}; model {FLAGS.preset} {FLAGS.dtype} ({cfg.num_params / 1e6:.1f}M params)"
    )
    print(
        "| date | machine | model, dtype | batch | prompt+new | ours tok/s (decode) | HF generate tok/s | speed-up | % of ceiling |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for b, o, d, h, c in rows:
        frac = "n/a (CPU)" if np.isnan(c) else f"{d / c:.0%}"
        print(
            f"| {datetime.date.today()} | {machine} | {FLAGS.preset} {FLAGS.dtype} | {b} | {p}+{m} "
            f"| {o:,.0f} ({d:,.0f}) | {h:,.0f} | {o / h:.2f}x | {frac} |"
        )


if __name__ == "__main__":
    app.run(main)
