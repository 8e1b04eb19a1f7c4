r"""Parity of our Flax Llama with HF transformers (PyTorch) on a randomly initialised model.

    python launch/parity.py                     # tiny preset, float32, CPU, ~20 s
    python launch/parity.py --preset=tiny --batch=4 --length=64

Builds a random `transformers.LlamaForCausalLM` (and `LlamaForSequenceClassification`)
from a preset, saves it as an HF checkpoint, loads it with `mucode_jax.load_pretrained`,
and prints the largest absolute differences: logits (left- and right-padded batches),
hidden states layer by layer, verifier scores, cached decoding against the uncached
forward, and logits after `mucode_jax.save_pretrained` -> transformers.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_PRESET = flags.DEFINE_string("preset", "tiny", "Model preset (LlamaConfig.preset names).")
_BATCH = flags.DEFINE_integer("batch", 4, "Batch size.")
_LENGTH = flags.DEFINE_integer("length", 48, "Sequence length.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random weights and tokens.")


def main(argv):
    del argv
    import jax
    import numpy as np
    import torch
    import transformers
    from flax import nnx

    import mucode_jax
    from mucode_jax.models.llama import LlamaConfig, default_positions

    cfg = LlamaConfig.preset(_PRESET.value)
    hf_kwargs = cfg.hf_dict() | {"pad_token_id": 0, "num_labels": 1}
    torch.manual_seed(_SEED.value)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**hf_kwargs)).eval()
    hf_cls = transformers.LlamaForSequenceClassification(
        transformers.LlamaConfig(**hf_kwargs)
    ).eval()
    rng = np.random.RandomState(_SEED.value)
    b, t = _BATCH.value, _LENGTH.value
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(f"{tmp}/causal")
        hf_cls.save_pretrained(f"{tmp}/cls")
        ours = mucode_jax.load_pretrained(f"{tmp}/causal")
        verifier = mucode_jax.load_pretrained(f"{tmp}/cls")
        for pad in ("right", "left"):
            tokens = rng.randint(1, cfg.vocab_size, (b, t))
            mask = np.ones((b, t), np.int64)
            for i in range(1, b):
                n = rng.randint(t // 3, t)
                if pad == "right":
                    mask[i, n:] = 0
                else:
                    mask[i, : t - n] = 0
            tokens = tokens * mask
            positions = np.maximum(mask.cumsum(1) - 1, 0)
            valid = mask.astype(bool)
            with torch.no_grad():
                ref = hf(
                    torch.tensor(tokens),
                    attention_mask=torch.tensor(mask),
                    position_ids=torch.tensor(positions),
                    output_hidden_states=True,
                )
                ref_scores = hf_cls(
                    torch.tensor(tokens),
                    attention_mask=torch.tensor(mask),
                    position_ids=torch.tensor(positions),
                ).logits[:, 0]
            logits, hidden = ours(tokens, attention_mask=mask, return_hidden=True)
            rows.append(
                (
                    f"logits, {pad}-padded",
                    np.abs(np.asarray(logits) - ref.logits.numpy())[valid].max(),
                )
            )
            layer_diff = max(
                np.abs(np.asarray(h) - r.numpy())[valid].max()
                for h, r in zip(hidden, ref.hidden_states)
            )
            rows.append((f"hidden states (all {len(hidden)}), {pad}-padded", layer_diff))
            scores = np.asarray(verifier(tokens, attention_mask=mask))
            rows.append(
                (f"verifier scores, {pad}-padded", np.abs(scores - ref_scores.numpy()).max())
            )

        # Cached decoding: prefill the first half, then one token at a time.
        graphdef, state = nnx.split(ours)

        @jax.jit
        def step(state, cache, tok, seg, pos):
            return nnx.merge(graphdef, state)(tok, segment_ids=seg, positions=pos, cache=cache)

        pos = np.asarray(default_positions(mask))
        full = np.asarray(ours(tokens, attention_mask=mask))
        cache = ours.init_cache(b, t)
        half = t // 2
        out, cache = step(state, cache, tokens[:, :half], mask[:, :half], pos[:, :half])
        outs = [np.asarray(out)]
        for i in range(half, t):
            out, cache = step(
                state, cache, tokens[:, i : i + 1], mask[:, i : i + 1], pos[:, i : i + 1]
            )
            outs.append(np.asarray(out))
        rows.append(
            ("cached decode vs uncached", np.abs(np.concatenate(outs, 1) - full)[valid].max())
        )

        mucode_jax.save_pretrained(ours, f"{tmp}/ours")
        back = transformers.AutoModelForCausalLM.from_pretrained(f"{tmp}/ours").eval()
        with torch.no_grad():
            again = back(
                torch.tensor(tokens),
                attention_mask=torch.tensor(mask),
                position_ids=torch.tensor(positions),
            ).logits.numpy()
        rows.append(("save_pretrained -> transformers logits", np.abs(again - full)[valid].max()))

    print(
        f"\nParity with transformers {transformers.__version__} (torch {torch.__version__}), "
        f"preset {_PRESET.value!r}: {cfg.num_params:,} parameters, batch {b} x {t}, float32, "
        f"{jax.devices()[0].platform}"
    )
    width = max(len(r[0]) for r in rows)
    for name, diff in rows:
        print(f"  {name:<{width}}  max |diff| = {diff:.2e}  {'ok' if diff < 1e-4 else 'FAIL'}")
    worst = max(d for _, d in rows)
    print(f"worst: {worst:.2e} (threshold 1e-4)")
    return 0 if worst < 1e-4 else 1


if __name__ == "__main__":
    app.run(main)
