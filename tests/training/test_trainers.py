"""train_verifier end to end on the built-in toy samples, and the HF export of the result."""

import numpy as np

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
