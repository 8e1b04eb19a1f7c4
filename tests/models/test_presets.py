"""Presets have HF's exact parameter counts (abstract evaluation only, no weights)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from mucode_jax.models.llama import Llama, LlamaConfig

COUNTS = {
    "llama3.2-1b": 1_235_814_400,
    "llama3.2-3b": 3_212_749_824,
    "llama3.1-8b": 8_030_261_248,
    "llama3.1-70b": 70_553_706_496,
}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_eval_shape_parameter_counts(name):
    cfg = LlamaConfig.preset(name)
    abstract = nnx.eval_shape(lambda: Llama(cfg, rngs=nnx.Rngs(0)))
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    assert n == COUNTS[name] == cfg.num_params


@pytest.mark.parametrize("name", ["llama3.2-1b", "llama3.1-8b"])
def test_preset_round_trips_through_hf_config_and_matches_torch_meta_count(name):
    import torch
    import transformers

    cfg = LlamaConfig.preset(name)
    hf_cfg = transformers.LlamaConfig(**cfg.hf_dict())
    assert LlamaConfig.from_hf(hf_cfg) == cfg
    with torch.device("meta"):
        hf = transformers.LlamaForCausalLM(hf_cfg)
    assert sum(p.numel() for p in hf.parameters()) == COUNTS[name]


def test_every_parameter_has_logical_axes():
    cfg = LlamaConfig.tiny(tie_word_embeddings=False)
    abstract = nnx.eval_shape(lambda: Llama(cfg, rngs=nnx.Rngs(0)))
    leaves = jax.tree.leaves(
        nnx.state(abstract, nnx.Param), is_leaf=lambda x: isinstance(x, nnx.Variable)
    )
    for v in leaves:
        axes = v.get_metadata().get("logical_axes")
        assert axes is not None and len(axes) == len(v.shape)


def test_unknown_preset_and_bad_gqa():
    with pytest.raises(ValueError, match="Unknown model preset"):
        LlamaConfig.preset("llama2-7b")
    with pytest.raises(ValueError, match="not a multiple"):
        LlamaConfig.tiny(num_attention_heads=5, num_key_value_heads=2)
