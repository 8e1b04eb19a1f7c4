"""HF checkpoints both ways, and one-sentence errors for bad checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mucode_jax
from mucode_jax.models.hf import CheckpointError
from tests.models import hf_utils

TOL = 1e-4


@pytest.mark.parametrize("seqcls", [False, True])
@pytest.mark.parametrize("name", ["gqa2_untied_llama3", "head_dim_not_hidden_over_heads"])
def test_transformers_saved_loads_and_ours_saved_loads_in_transformers(tmp_path, name, seqcls):
    import transformers

    hf = hf_utils.hf_model(name, seqcls=seqcls)
    hf.save_pretrained(tmp_path / "theirs")
    ours = mucode_jax.load_pretrained(tmp_path / "theirs")
    assert isinstance(ours, mucode_jax.Verifier if seqcls else mucode_jax.Llama)
    tokens, mask, positions = hf_utils.batch(hf.config.vocab_size, pad="left")
    ref = hf_utils.torch_forward(hf, tokens, mask, positions).logits.numpy()
    out = np.asarray(ours(tokens, attention_mask=mask))
    valid = mask.astype(bool)
    if seqcls:
        np.testing.assert_allclose(out, ref[:, 0], atol=TOL, rtol=0)
    else:
        assert np.abs(out - ref)[valid].max() < TOL

    mucode_jax.save_pretrained(ours, tmp_path / "ours")
    auto = (
        transformers.AutoModelForSequenceClassification
        if seqcls
        else transformers.AutoModelForCausalLM
    )
    back = auto.from_pretrained(tmp_path / "ours").eval()
    again = hf_utils.torch_forward(back, tokens, mask, positions).logits.numpy()
    if seqcls:
        np.testing.assert_allclose(again[:, 0], out, atol=TOL, rtol=0)
    else:
        assert np.abs(again - out)[valid].max() < TOL


def test_sharded_checkpoint_with_index(tmp_path):
    hf = hf_utils.hf_model("mha_tied_plain_rope")
    hf.save_pretrained(tmp_path / "ck", max_shard_size="20KB")
    assert (tmp_path / "ck" / "model.safetensors.index.json").is_file()
    ours = mucode_jax.load_pretrained(tmp_path / "ck")
    tokens, mask, positions = hf_utils.batch(hf.config.vocab_size)
    ref = hf_utils.torch_forward(hf, tokens, mask, positions).logits.numpy()
    assert (
        np.abs(np.asarray(ours(tokens, attention_mask=mask)) - ref)[mask.astype(bool)].max() < TOL
    )
    # Our own sharded save also round-trips.
    mucode_jax.save_pretrained(ours, tmp_path / "ours", max_shard_bytes=20_000)
    assert len(list((tmp_path / "ours").glob("model-*.safetensors"))) > 1
    again = mucode_jax.load_pretrained(tmp_path / "ours")
    np.testing.assert_array_equal(np.asarray(again.embed[...]), np.asarray(ours.embed[...]))


def test_bf16_save_and_load(tmp_path):
    import jax.numpy as jnp

    hf = hf_utils.hf_model("gqa2_untied_llama3")
    hf.save_pretrained(tmp_path / "ck")
    ours = mucode_jax.load_pretrained(tmp_path / "ck", dtype=jnp.bfloat16)
    assert ours.embed[...].dtype == jnp.bfloat16
    mucode_jax.save_pretrained(ours, tmp_path / "bf16")
    cfg = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert cfg.get("dtype", cfg.get("torch_dtype")) == "bfloat16"
    back = mucode_jax.load_pretrained(tmp_path / "bf16", dtype=jnp.bfloat16)
    np.testing.assert_array_equal(
        np.asarray(back.layers[1].mlp.down[...], np.float32),
        np.asarray(ours.layers[1].mlp.down[...], np.float32),
    )


def _one_sentence(msg: str) -> bool:
    return "\n" not in msg and msg.rstrip().endswith((".", ")")) and len(msg) < 400


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist") as e:
        mucode_jax.load_pretrained(tmp_path / "nope")
    assert _one_sentence(str(e.value))


def test_missing_config(tmp_path):
    (tmp_path / "ck").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        mucode_jax.load_pretrained(tmp_path / "ck")


def test_non_llama_architecture_names_supported_ones(tmp_path):
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "config.json").write_text(
        json.dumps({"architectures": ["MistralForCausalLM"], "model_type": "mistral"})
    )
    with pytest.raises(
        CheckpointError, match="LlamaForCausalLM and LlamaForSequenceClassification"
    ) as e:
        mucode_jax.load_pretrained(tmp_path / "ck")
    assert "MistralForCausalLM" in str(e.value) and _one_sentence(str(e.value))


def test_wrong_num_labels(tmp_path):
    hf = hf_utils.hf_model("gqa2_untied_llama3", seqcls=True, num_labels=2)
    hf.save_pretrained(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="num_labels=2"):
        mucode_jax.load_pretrained(tmp_path / "ck")


def test_no_weights_and_partial_shards(tmp_path):
    hf = hf_utils.hf_model("mha_tied_plain_rope")
    hf.save_pretrained(tmp_path / "ck", max_shard_size="20KB")
    shards = sorted((tmp_path / "ck").glob("model-*.safetensors"))
    shards[-1].unlink()
    with pytest.raises(CheckpointError, match="missing shard file") as e:
        mucode_jax.load_pretrained(tmp_path / "ck")
    assert shards[-1].name in str(e.value) and _one_sentence(str(e.value))
    for f in (tmp_path / "ck").glob("*.safetensors*"):
        f.unlink()
    with pytest.raises(CheckpointError, match="no safetensors weights"):
        mucode_jax.load_pretrained(tmp_path / "ck")


def test_tensor_of_wrong_shape_is_named(tmp_path):
    hf = hf_utils.hf_model("gqa2_untied_llama3")
    hf.save_pretrained(tmp_path / "ck")
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    cfg["intermediate_size"] = 100  # config no longer matches the weights
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"mlp\.(gate|up|down)_proj\.weight") as e:
        mucode_jax.load_pretrained(tmp_path / "ck")
    assert _one_sentence(str(e.value))


def test_missing_tensor_is_named(tmp_path):
    from safetensors.numpy import load_file, save_file

    hf = hf_utils.hf_model("gqa2_untied_llama3")
    hf.save_pretrained(tmp_path / "ck")
    f = tmp_path / "ck" / "model.safetensors"
    tensors = load_file(str(f))
    del tensors["model.layers.1.self_attn.k_proj.weight"]
    save_file(tensors, str(f), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="model.layers.1.self_attn.k_proj.weight"):
        mucode_jax.load_pretrained(tmp_path / "ck")


def test_truncated_weights_are_named(tmp_path):
    hf = hf_utils.hf_model("gqa2_untied_llama3")
    hf.save_pretrained(tmp_path / "ck")
    f = tmp_path / "ck" / "model.safetensors"
    data = f.read_bytes()
    for cut in (100, len(data) // 2):  # inside the header; inside the tensors
        f.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="is truncated or corrupt") as e:
            mucode_jax.load_pretrained(tmp_path / "ck")
        assert "model.safetensors" in str(e.value) and _one_sentence(str(e.value))
