"""Subprocess helper for the tests: a tiny SFT run, printing losses and live shardings as JSON.

  python tests/training/run_sft_job.py WORKDIR '{"mesh": [["data", 1], ["fsdp", 4], ["tensor", 2]]}'

Set XLA_FLAGS (e.g. --xla_force_host_platform_device_count=8) in the environment.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def tiny_sft_config(**overrides):
    from configs.sft_tiny import get_config

    c = get_config()
    c.data.num_problems = 16
    c.data.max_length = 128
    c.batch_size = 8
    c.grad_accum = 2
    c.max_steps = 4
    c.export_hf = False
    c.progress = False
    c.checkpoint.every_steps = 100
    c.checkpoint.async_save = False
    for k, v in overrides.items():
        node = c
        *parents, leaf = k.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = tuple(tuple(x) for x in v) if k in ("mesh", "rules") else v
    return c


def main():
    import jax

    from mucode_jax.training import inputs
    from mucode_jax.training.sft import train_sft
    from mucode_jax.training.writers import read_metrics

    workdir = sys.argv[1]
    overrides = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    config = tiny_sft_config(**overrides)
    tok = inputs.tokenizer_from_config(config)
    conv = inputs.sft_conversations_from_config(config)
    out = {"devices": jax.device_count()}
    try:
        result = train_sft(config, conv, workdir, tokenizer=tok)
    except ValueError as e:
        out["error"] = str(e)
    else:
        params = result.model.__dict__  # noqa: F841 - keep the model alive
        from flax import nnx

        state = nnx.state(result.model, nnx.Param)
        flat = {".".join(map(str, p)): v for p, v in nnx.to_flat_state(state)}
        out["specs"] = {
            k: str(v.value.sharding.spec)
            for k, v in flat.items()
            if k.startswith(("embed", "layers.0"))
        }
        out["losses"] = [r["loss"] for r in read_metrics(Path(workdir) / "metrics.jsonl")]
        out["grad_norms"] = [r["grad_norm"] for r in read_metrics(Path(workdir) / "metrics.jsonl")]
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
