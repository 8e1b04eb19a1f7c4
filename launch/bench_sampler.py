r"""New tokens per second of our sampler vs HF `transformers` `generate`, same model and machine.

Both sides get the same randomly initialised Llama (built in PyTorch, converted with
`from_state_dict`), the same batch of equal-length random prompts, greedy decoding and
no end ids, so every row produces exactly ``--new_tokens`` tokens (checked on both
sides; the fraction of rows whose greedy tokens equal HF's is printed as a sanity
check). Times are wall clock after one warm-up run (compilation excluded for us,
CUDA/kernel warm-up for HF); ``--repeats`` rounds alternate ours and HF's, so a change
of the machine's load hits both, and the best round of each counts.

HF runs in a child process (spawned, its own interpreter): in the same process as
XLA's CPU thread pool, torch's threads run several times slower, which would flatter
us. On CPU the child uses ``torch.set_num_threads(n)`` for each n in ``--hf_threads``
(default: the core count, as XLA's pool); on a shared machine OpenMP threads that
busy-wait for a descheduled peer slow HF down by an order of magnitude, so pass
``--hf_threads=2,1`` there and compare with the faster.

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
import json
import multiprocessing
import os
import platform
import tempfile
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
flags.DEFINE_integer("repeats", 2, "Timed rounds per measurement (the best is reported).")
flags.DEFINE_list(
    "hf_threads", [], "CPU: torch threads of the HF child, one run each (default: cores)."
)
flags.DEFINE_string("out", "", "Also write the results as JSON to this file.")

SMALL = dict(
    vocab_size=32_000, hidden_size=512, intermediate_size=1536, num_hidden_layers=4,
    num_attention_heads=8, num_key_value_heads=2, head_dim=64, tie_word_embeddings=False,
    max_position_embeddings=4096, rope_theta=500_000.0,
)  # fmt: skip
BANDWIDTH = {"H100": 3.35e12, "H200": 4.8e12}


def build(preset: str, dtype: str, weights_path: str):
    """Our model, and the HF model's config and weights saved to ``weights_path``."""
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
    torch.save(hf.state_dict(), weights_path)
    return ours, hf_kw


def hf_worker(conn, hf_kw: dict, weights_path: str, dtype: str, threads: int) -> None:
    """The HF side, in a spawned child: builds the model once, then answers
    ``(prompts, new_tokens)`` with ``(seconds, tokens)`` of one `generate` call."""
    import torch
    import transformers

    if threads:
        torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device("cpu"):
        hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**hf_kw)).eval()
    hf.load_state_dict(torch.load(weights_path))
    hf = hf.to(device=device, dtype=torch.bfloat16 if dtype == "bfloat16" else torch.float32)
    conn.send((device, torch.get_num_threads(), torch.__version__))
    while (msg := conn.recv()) is not None:
        prompts, m = msg
        ids = torch.tensor(prompts, device=device)
        kw = dict(do_sample=False, max_new_tokens=m, min_new_tokens=m, pad_token_id=0)
        t = time.perf_counter()
        with torch.no_grad():
            out = hf.generate(ids, attention_mask=torch.ones_like(ids), **kw)
        if device == "cuda":
            torch.cuda.synchronize()
        conn.send((time.perf_counter() - t, out[:, ids.shape[1] :].cpu().numpy()))


class HFChild:
    """`hf_worker` in a spawned process with ``threads`` torch threads (0: torch's default)."""

    def __init__(self, hf_kw: dict, weights_path: str, dtype: str, threads: int):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=hf_worker, args=(child, hf_kw, weights_path, dtype, threads), daemon=True
        )
        self.proc.start()
        self.device, self.threads, self.version = self.conn.recv()

    def generate(self, prompts: np.ndarray, m: int) -> tuple[float, np.ndarray]:
        self.conn.send((prompts, m))
        return self.conn.recv()

    def close(self) -> None:
        self.conn.send(None)
        self.proc.join()


def ceiling(cfg: LlamaConfig, batch: int, context: float, bytes_per: int, bw: float) -> float:
    """Decode tokens/s if each step only read the weights and the filled KV cache."""
    weights = cfg.num_params * bytes_per
    if not cfg.tie_word_embeddings:
        weights -= cfg.vocab_size * cfg.hidden_size * bytes_per  # lookup reads B rows only
    kv_per_token = cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * cfg.head_dim * bytes_per
    step_bytes = weights + batch * context * kv_per_token
    return batch * bw / step_bytes


def bandwidth() -> float:
    """Bytes/s of the ceiling: ``--bandwidth``, else the device kind's HBM figure, else 0."""
    kind = jax.devices()[0].device_kind
    return FLAGS.bandwidth or next((v for k, v in BANDWIDTH.items() if k in kind), 0.0)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv):
    del argv
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "hf.pt")
        ours, hf_kw = build(FLAGS.preset, FLAGS.dtype, weights)
        children = []
        if FLAGS.hf:
            on_cpu = jax.devices()[0].platform == "cpu"
            counts = [int(x) for x in FLAGS.hf_threads] or [os.cpu_count() if on_cpu else 0]
            children = [HFChild(hf_kw, weights, FLAGS.dtype, n) for n in counts]
        try:
            rows = measure(ours, children)
        finally:
            for child in children:
                child.close()
    report(ours.config, rows, children)
    if FLAGS.out:
        write_json(FLAGS.out, ours.config, rows, children)


def measure(ours, children: list[HFChild]) -> list[tuple]:
    """Per batch size: our tok/s (and decode-only), each HF child's tok/s, the ceiling."""
    cfg = ours.config
    p, m = FLAGS.prompt_len, FLAGS.new_tokens
    bw = bandwidth()
    bytes_per = 2 if FLAGS.dtype == "bfloat16" else 4
    rows = []
    for b in (int(x) for x in FLAGS.batch):
        prompts = np.random.RandomState(0).randint(1, cfg.vocab_size, (b, p))
        lists = prompts.tolist()
        sampler = Sampler(
            ours, max_new_tokens=m, prompt_buckets=(p,), batch_buckets=(b,), eos_ids=()
        )
        full = functools.partial(sampler.sample, lists)
        first = functools.partial(sampler.sample, lists, max_new_tokens=1)
        out = full()  # warm-up: compiles every phase's program
        first()
        assert all(len(t) == m for t in out.tokens)
        hf_tokens = [child.generate(prompts, m)[1] for child in children]  # warm-up
        assert all(t.shape == (b, m) for t in hf_tokens)
        t_ours, t_pre, t_hf = [], [], [[] for _ in children]
        for _ in range(FLAGS.repeats):  # rounds alternate, so load changes hit both sides
            t_ours.append(timed(full))
            t_pre.append(timed(first))
            for times, child in zip(t_hf, children):
                times.append(child.generate(prompts, m)[0])
        ours_tps = b * m / min(t_ours)
        decode_tps = b * (m - 1) / max(min(t_ours) - min(t_pre), 1e-9)
        hf_tps = [b * m / min(t) for t in t_hf]
        same = [float(np.mean((np.asarray(out.tokens) == t).all(axis=1))) for t in hf_tokens]
        ceil = ceiling(cfg, b, p + m / 2, bytes_per, bw) if bw else float("nan")
        rows.append((b, ours_tps, decode_tps, hf_tps, ceil, same))
        versus = ", ".join(
            f"HF generate ({c.threads} threads) {h:,.0f} tok/s: {ours_tps / h:.2f}x, "
            f"{s:.0%} of rows token-identical"
            for c, h, s in zip(children, hf_tps, same)
        )
        print(
            f"batch {b}: ours {ours_tps:,.0f} tok/s (decode only {decode_tps:,.0f}); {versus}"
            + ("" if np.isnan(ceil) else f"; ceiling {ceil:,.0f} tok/s ({decode_tps / ceil:.0%})")
            + f"; load {os.getloadavg()[0]:.2f}",
            flush=True,
        )
    return rows


def report(cfg: LlamaConfig, rows: list[tuple], children: list[HFChild]) -> None:
    p, m = FLAGS.prompt_len, FLAGS.new_tokens
    kind = jax.devices()[0].device_kind
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    machine = f"{kind} x{jax.device_count()} ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    torch_version = children[0].version if children else "not run"
    print(f"\n{datetime.date.today()} | {machine} | jax {jax.__version__}, torch {torch_version}")
    print(
        f"load average {load}; model {FLAGS.preset} {FLAGS.dtype} ({cfg.num_params / 1e6:.1f}M params)"
    )
    hf_cols = " | ".join(f"HF generate tok/s ({c.threads} thr) | speed-up" for c in children)
    print(
        f"| date | machine | model, dtype | batch | prompt+new | ours tok/s (decode) | {hf_cols} | % of ceiling |"
    )
    print("|---" * (7 + 2 * len(children)) + "|")
    for b, o, d, hs, c, _ in rows:
        frac = "n/a (CPU)" if np.isnan(c) else f"{d / c:.0%}"
        hf = " | ".join(f"{h:,.0f} | {o / h:.2f}x" for h in hs)
        print(
            f"| {datetime.date.today()} | {machine} | {FLAGS.preset} {FLAGS.dtype} | {b} | {p}+{m} "
            f"| {o:,.0f} ({d:,.0f}) | {hf} | {frac} |"
        )


def write_json(path: str, cfg: LlamaConfig, rows: list[tuple], children: list[HFChild]) -> None:
    """The rows of `report` as JSON (for `launch/bench_gpu.py` and scripts)."""
    result = {
        "date": str(datetime.date.today()),
        "device": f"{jax.devices()[0].device_kind} x{jax.device_count()}",
        "jax": jax.__version__,
        "torch": children[0].version if children else None,
        "hf_device": children[0].device if children else None,
        "model": FLAGS.preset, "dtype": FLAGS.dtype, "params": cfg.num_params,
        "prompt_len": FLAGS.prompt_len, "new_tokens": FLAGS.new_tokens,
        "bandwidth": bandwidth() or None, "load_avg": os.getloadavg(),
        "rows": [
            {
                "batch": b, "tok_s": o, "decode_tok_s": d,
                "ceiling_tok_s": None if np.isnan(c) else c,
                "fraction_of_ceiling": None if np.isnan(c) else d / c,
                "hf": [
                    {"threads": ch.threads, "tok_s": h, "speedup": o / h, "same_tokens": s}
                    for ch, h, s in zip(children, hs, same)
                ],
            }
            for b, o, d, hs, c, same in rows
        ],
    }  # fmt: skip
    with open(path, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    app.run(main)
