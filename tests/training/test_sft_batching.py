"""SFT batch = examples per optimizer step, packed or not (the official TRL run's 16 examples).

Packing changes the layout only: the same examples per step, the same loss and gradient; a
run takes ceil(examples / batch) x epochs optimizer steps either way.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mucode_jax.data import pipeline
from mucode_jax.models.llama import Llama, LlamaConfig
from mucode_jax.training import steps


def _examples(n, seed=0, vocab=64):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(4, 20))
        w = (rng.random(k) < 0.6).astype(np.float32)
        w[-1] = 1.0
        ids = rng.integers(1, vocab, k + 1).astype(np.int32)
        out.append({"inputs": ids[:-1], "targets": ids[1:], "weights": w})
    return out


def _members(batch):
    """The examples of a batch, as the multiset of their input token tuples."""
    found = []
    for inputs, seg in zip(batch["inputs"], batch["segment_ids"]):
        for s in sorted(set(seg[seg > 0].tolist())):
            found.append(tuple(inputs[seg == s].tolist()))
    return sorted(found)


def test_each_step_holds_batch_size_examples_packed_or_not():
    ex = _examples(37)
    kw = dict(seq_len=48, batch_size=8, micro_rows=2, seed=5, num_epochs=2)
    packed = pipeline.sft_step_dataset(ex, pack=True, **kw)
    plain = pipeline.sft_step_dataset(ex, pack=False, **kw)
    assert len(packed) == len(plain) == math.ceil(37 / 8) * 2 == 10
    bp, bu = list(packed), list(plain)
    assert len(bp) == len(bu) == 10
    sizes = []
    for a, b in zip(bp, bu):
        assert _members(a) == _members(b)  # the same examples in every step
        sizes.append(len(_members(a)))
        assert a["inputs"].shape[0] % 2 == 0 and 2 <= a["inputs"].shape[0] <= 8
        np.testing.assert_allclose(a["weights"].sum(), b["weights"].sum())
    assert sizes == [8, 8, 8, 8, 5] * 2  # each epoch ends with its partial step
    assert min(a["inputs"].shape[0] for a in bp) < 8  # packing did save rows
    # Every epoch sees every example once, in a new order.
    first = [m for b in bp[:5] for m in _members(b)]
    assert sorted(first) == sorted(tuple(e["inputs"].tolist()) for e in ex)
    assert [_members(b) for b in bp[:5]] != [_members(b) for b in bp[5:]]


def test_keep_rows_of_a_short_packed_step_are_its_prefix():
    ex = _examples(13, seed=1)
    kw = dict(seq_len=64, batch_size=8, micro_rows=4, pack=True, seed=0, num_epochs=1)
    whole = list(pipeline.sft_step_dataset(ex, **kw))
    keep = [1, 3, 5, 7]  # micro rows {1, 3} of 2 micro-batches of 4
    mine = list(pipeline.sft_step_dataset(ex, keep_rows=keep, **kw))
    for a, b in zip(whole, mine):
        rows = [r for r in keep if r < a["inputs"].shape[0]]
        for k in pipeline.SFT_KEYS:
            np.testing.assert_array_equal(a[k][rows], b[k])
    with pytest.raises(ValueError, match="not a multiple of the micro-batch"):
        pipeline.sft_step_dataset(ex, seq_len=64, batch_size=8, micro_rows=3)


def test_packed_step_has_the_unpacked_loss_and_gradient():
    """The loss is the per-token mean over the step's target tokens (TRL's normalisation with
    num_items_in_batch); the packed layout gives the same number and the same gradient."""
    cfg = LlamaConfig.preset("tiny", vocab_size=64, dtype=jnp.float32)
    model = Llama(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    loss_fn = steps.sft_loss_fn(graphdef, logits_chunk=None)
    ex = _examples(8, seed=2)
    kw = dict(seq_len=64, batch_size=8, micro_rows=2, seed=0, num_epochs=1, shuffle=False)
    (packed,) = list(pipeline.sft_step_dataset(ex, pack=True, **kw))
    (plain,) = list(pipeline.sft_step_dataset(ex, pack=False, **kw))
    assert packed["inputs"].shape[0] < plain["inputs"].shape[0]

    def mean_loss(p, batch):
        micro = {k: jnp.asarray(v).reshape(-1, 2, v.shape[-1]) for k, v in batch.items()}
        total, count = 0.0, 0.0
        for a in range(micro["inputs"].shape[0]):
            t, c, _ = loss_fn(p, {k: v[a] for k, v in micro.items()})
            total, count = total + t, count + c
        return total / count

    lp, gp = jax.value_and_grad(mean_loss)(params, packed)
    lu, gu = jax.value_and_grad(mean_loss)(params, plain)
    np.testing.assert_allclose(lp, lu, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(gp), jax.tree.leaves(gu)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6)


def test_a_packed_sft_run_takes_ceil_examples_over_batch_times_epochs_steps(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from configs.sft_tiny import get_config
    from mucode_jax.training import inputs
    from mucode_jax.training.sft import train_sft
    from mucode_jax.training.writers import read_metrics

    c = get_config()
    c.data.num_problems = 6
    c.data.max_length = 128
    c.num_epochs = 2
    c.export_hf = False
    c.progress = False
    c.checkpoint.async_save = False
    assert c.data.batch_unit == "examples" and c.data.pack
    tok = inputs.tokenizer_from_config(c)
    convs = inputs.sft_conversations_from_config(c)
    res = train_sft(c, convs, tmp_path, tokenizer=tok)
    n = res.data_stats["examples"]
    assert res.num_steps == math.ceil(n / c.batch_size) * c.num_epochs
    logged = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in logged] == list(range(1, res.num_steps + 1))
    with pytest.raises(ValueError, match="data.batch_unit must be one of"):
        c.data.batch_unit = "tokens"
        train_sft(c, convs, tmp_path / "bad", tokenizer=tok)
