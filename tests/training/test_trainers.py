"""train_verifier end to end on the built-in toy samples, and the HF export of the result."""

import numpy as np
import pytest

from mucode_jax.training import inputs
from mucode_jax.training.writers import read_metrics


def test_train_verifier_logs_evaluates_and_exports(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from configs.verifier_tiny import get_config
    from mucode_jax.models.hf import load_pretrained
    from mucode_jax.models.verifier import Verifier
    from mucode_jax.training.verifier import train_verifier

    c = get_config()
    c.data.num_problems = 12
    c.data.eval_fraction = 0.25
    c.max_steps = 3
    c.progress = False
    c.loss = "bce"
    tok = inputs.tokenizer_from_config(c)
    rows = inputs.verifier_rows_from_config(c)
    result = train_verifier(c, rows, tmp_path, tokenizer=tok)

    recs = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in recs] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) for r in recs)
    last = recs[-1]
    for key in ("eval/pair_accuracy", "eval/auc", "eval/ece", "pair_accuracy"):
        assert 0.0 <= last[key] <= 1.0
    assert result.data_stats["pairs"] > 0

    loaded = load_pretrained(result.hf_path)
    assert isinstance(loaded, Verifier)
    toks = np.arange(1, 17, dtype=np.int32)[None]
    np.testing.assert_allclose(
        np.asarray(loaded(toks)), np.asarray(result.model(toks)), rtol=1e-5, atol=1e-6
    )


def test_sft_export_then_verifier_from_the_base_model(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from flax import nnx

    from configs.sft_tiny import get_config as sft_config
    from configs.verifier_tiny import get_config as verifier_config
    from mucode_jax.models.hf import load_pretrained
    from mucode_jax.models.llama import Llama
    from mucode_jax.training.sft import train_sft
    from mucode_jax.training.verifier import train_verifier

    c = sft_config()
    c.data.num_problems = 8
    c.data.max_length = 128
    c.max_steps = 2
    c.progress = False
    tok = inputs.tokenizer_from_config(c)
    sft = train_sft(c, inputs.sft_conversations_from_config(c), tmp_path / "sft", tokenizer=tok)
    assert isinstance(load_pretrained(sft.hf_path), Llama)
    assert (sft.hf_path / "tokenizer.json").exists()

    v = verifier_config()
    v.data.num_problems = 8
    v.data.eval_fraction = 0.0
    v.max_steps = 1
    v.progress = False
    v.export_hf = False
    v.optim.lr = 0.0
    v.optim.weight_decay = 0.0
    res = train_verifier(
        v,
        inputs.verifier_rows_from_config(v),
        tmp_path / "ver",
        tokenizer=tok,
        init_params_from=sft.hf_path,
    )
    assert "train_eval/auc" in res.last_metrics  # no held-out problems: labelled as train
    got = nnx.to_pure_dict(nnx.state(res.model.backbone, nnx.Param))
    want = nnx.to_pure_dict(nnx.state(sft.model, nnx.Param))
    np.testing.assert_array_equal(
        np.asarray(got["layers"][1]["mlp"]["up"]), np.asarray(want["layers"][1]["mlp"]["up"])
    )


def _tiny_sft(**overrides):
    """The tiny SFT config on 8 toy problems for 2 steps, its tokenizer, its conversations and
    `train_sft`."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from configs.sft_tiny import get_config
    from mucode_jax.training.sft import train_sft

    c = get_config()
    c.data.num_problems = 8
    c.data.max_length = 128
    c.max_steps = 2
    c.progress = False
    c.export_hf = False
    c.update_from_flattened_dict(overrides)
    return c, inputs.tokenizer_from_config(c), inputs.sft_conversations_from_config(c), train_sft


def test_a_checkpointed_workdir_refuses_other_settings(tmp_path):
    c, tok, convs, train_sft = _tiny_sft()
    train_sft(c, convs, tmp_path, tokenizer=tok)
    before = (tmp_path / "metrics.jsonl").read_text()
    c.progress, c.checkpoint.every_steps = True, 1  # how a run reports and saves may change
    c.model.attention, c.model.remat_policy = "xla", "full"  # and its kernels (same function)
    train_sft(c, convs, tmp_path, tokenizer=tok)
    for field, value in (("batch_size", 4), ("optim.lr", 1e-3), ("max_steps", 3)):
        other = c.copy_and_resolve_references()
        other.update_from_flattened_dict({field: value})
        with pytest.raises(
            ValueError, match=rf"other settings \({field}\b.*changed\); use a fresh"
        ):
            train_sft(other, convs, tmp_path, tokenizer=tok)
    with pytest.raises(ValueError, match=r"other settings \(the training data changed\)"):
        train_sft(c, convs[:-2], tmp_path, tokenizer=tok)
    assert (tmp_path / "metrics.jsonl").read_text() == before  # nothing of the run was touched


def test_an_incomplete_checkpoint_names_the_step_to_delete(tmp_path):
    import shutil

    c, tok, convs, train_sft = _tiny_sft(**{"checkpoint.every_steps": 1})
    train_sft(c, convs, tmp_path, tokenizer=tok)
    shutil.rmtree(tmp_path / "checkpoints" / "2" / "data")  # as if a copy stopped half-way
    last = tmp_path / "checkpoints" / "2"
    with pytest.raises(
        ValueError, match=rf"step 2 in .* is incomplete .*; delete {last} to resume from step 1"
    ):
        train_sft(c, convs, tmp_path, tokenizer=tok)
    shutil.rmtree(last)
    train_sft(c, convs, tmp_path, tokenizer=tok)  # resumes from step 1 and finishes
    assert (tmp_path / "checkpoints" / "2").is_dir()
    wider = c.copy_and_resolve_references()
    wider.model.overrides.hidden_size = 128  # the tiny preset's width is 64
    with pytest.raises(ValueError, match=r"other settings \(model.overrides.hidden_size changed\)"):
        train_sft(wider, convs, tmp_path, tokenizer=tok)


def test_sft_refuses_a_verifier_checkpoint_to_start_from(tmp_path):
    from flax import nnx

    from mucode_jax.models.hf import save_pretrained
    from mucode_jax.models.verifier import Verifier
    from mucode_jax.training.config import model_config

    c, tok, convs, train_sft = _tiny_sft()
    save_pretrained(Verifier(model_config(c, len(tok)), rngs=nnx.Rngs(0)), tmp_path / "ver")
    c.init_from = str(tmp_path / "ver")
    with pytest.raises(
        ValueError,
        match=r"init_from '.*ver' is a verifier checkpoint .*; generator SFT needs a LlamaForCausalLM",
    ):
        train_sft(c, convs, tmp_path / "run", tokenizer=tok)
