"""Randomly initialised HF Llama models for parity tests (no downloads)."""

from __future__ import annotations

import numpy as np

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
}

# name -> HF LlamaConfig kwargs. Different GQA ratios, tied/untied, llama3 scaling, odd sizes.
SHAPES = {
    "gqa2_untied_llama3": dict(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_scaling=LLAMA3_ROPE,
        rope_theta=500000.0,
        tie_word_embeddings=False,
    ),
    "mha_tied_plain_rope": dict(
        vocab_size=96,
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=4,
        rope_theta=10000.0,
        tie_word_embeddings=True,
    ),
    "mqa_odd_sizes": dict(
        vocab_size=97,
        hidden_size=36,
        intermediate_size=77,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=1,
        head_dim=6,
        rope_scaling=LLAMA3_ROPE,
        rope_theta=500000.0,
        tie_word_embeddings=False,
        rms_norm_eps=1e-6,
    ),
    "head_dim_not_hidden_over_heads": dict(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=12,
        rope_scaling=LLAMA3_ROPE,
        rope_theta=500000.0,
        tie_word_embeddings=True,
    ),
}


def hf_config(name: str, **kw):
    import transformers

    args = dict(SHAPES[name], max_position_embeddings=512, pad_token_id=0, num_labels=1)
    args.update(kw)
    return transformers.LlamaConfig(**args)


def hf_model(name: str, *, seqcls: bool = False, seed: int = 0, **kw):
    import torch
    import transformers

    torch.manual_seed(seed)
    cls = transformers.LlamaForSequenceClassification if seqcls else transformers.LlamaForCausalLM
    model = cls(hf_config(name, **kw)).eval()
    # Random init gives near-zero norms' deviation; perturb norm weights so they matter.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    return model


def batch(vocab: int, b: int = 3, t: int = 24, *, pad: str = "right", seed: int = 0):
    """Tokens [B, T] (no pad id 0 inside), mask [B, T] with unequal lengths, positions."""
    rng = np.random.RandomState(seed)
    tokens = rng.randint(1, vocab, (b, t)).astype(np.int64)
    mask = np.ones((b, t), np.int64)
    lengths = [t] + [int(rng.randint(t // 3, t)) for _ in range(b - 1)]
    for i, n in enumerate(lengths):
        if pad == "right":
            mask[i, n:] = 0
        else:
            mask[i, : t - n] = 0
    tokens = np.where(mask == 1, tokens, 0)
    positions = np.maximum(mask.cumsum(1) - 1, 0)
    return tokens, mask, positions


def torch_forward(model, tokens, mask, positions, **kw):
    import torch

    with torch.no_grad():
        return model(
            torch.tensor(tokens),
            attention_mask=torch.tensor(mask),
            position_ids=torch.tensor(positions),
            **kw,
        )
