"""Our SFT loss / gradient norm and BT / BCE losses equal a PyTorch `transformers` computation."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from mucode_jax import sharding as sh  # noqa: E402
from mucode_jax.data import pipeline  # noqa: E402
from mucode_jax.models.hf import from_state_dict  # noqa: E402
from mucode_jax.models.llama import LlamaConfig  # noqa: E402
from mucode_jax.training import steps  # noqa: E402
from mucode_jax.training.state import create_train_state  # noqa: E402

RTOL = 1e-5


def _hf_config(cfg: LlamaConfig, **kw):
    d = cfg.hf_dict()
    d.update(kw)
    return transformers.LlamaConfig(**d, attn_implementation="eager")


def _examples(rng, n, vocab, lo=5, hi=40):
    out = []
    for _ in range(n):
        length = int(rng.integers(lo, hi))
        ids = rng.integers(6, vocab, length + 1).astype(np.int32)
        mask = np.zeros(length + 1, bool)
        start = int(rng.integers(1, length))
        mask[start:] = True
        out.append({"inputs": ids[:-1], "targets": ids[1:], "weights": mask[1:].astype(np.float32)})
    return out


def _run_step(model, batch_rows, accum):
    mesh = sh.make_mesh()
    opt = optax.sgd(0.0)
    graphdef, state, shardings = create_train_state(model, opt, mesh)
    step = jax.jit(steps.make_train_step(steps.sft_loss_fn(graphdef), opt))
    batch = {k: jnp.asarray(v.reshape(accum, -1, *v.shape[1:])) for k, v in batch_rows.items()}
    _, metrics = step(state, batch)
    return {k: float(v) for k, v in metrics.items()}


@pytest.fixture(scope="module")
def causal_pair():
    torch.manual_seed(0)
    cfg = LlamaConfig.tiny(vocab_size=300)
    hf = transformers.LlamaForCausalLM(_hf_config(cfg)).float().eval()
    ours = from_state_dict(hf.state_dict(), cfg)
    return cfg, hf, ours


def _torch_loss_and_grad_norm(hf, examples, seq_len):
    ids = torch.zeros(len(examples), seq_len + 1, dtype=torch.long)
    labels = torch.full((len(examples), seq_len + 1), -100, dtype=torch.long)
    attn = torch.zeros(len(examples), seq_len + 1, dtype=torch.long)
    for i, ex in enumerate(examples):
        n = len(ex["inputs"])
        full = np.concatenate([ex["inputs"], ex["targets"][-1:]])
        ids[i, : n + 1] = torch.from_numpy(full.astype(np.int64))
        attn[i, : n + 1] = 1
        lab = np.where(ex["weights"] > 0, ex["targets"], -100)
        labels[i, 1 : n + 1] = torch.from_numpy(lab.astype(np.int64))
    hf.zero_grad()
    out = hf(input_ids=ids, attention_mask=attn, labels=labels)
    out.loss.backward()
    norm = torch.sqrt(
        sum((p.grad.double() ** 2).sum() for p in hf.parameters() if p.grad is not None)
    )
    return float(out.loss.detach()), float(norm)


def test_sft_loss_and_grad_norm_match_torch_packed_unpacked_accumulated(causal_pair):
    cfg, hf, ours = causal_pair
    rng = np.random.default_rng(0)
    examples = _examples(rng, 8, cfg.vocab_size)
    seq_len = 48
    t_loss, t_norm = _torch_loss_and_grad_norm(hf, examples, seq_len)

    unpacked = next(
        iter(pipeline.sft_dataset(examples, seq_len=seq_len, rows=8, pack=False, shuffle=False))
    )
    m = _run_step(ours, unpacked, accum=1)
    np.testing.assert_allclose(m["loss"], t_loss, rtol=RTOL)
    np.testing.assert_allclose(m["grad_norm"], t_norm, rtol=RTOL)
    assert m["count"] == sum(ex["weights"].sum() for ex in examples)

    # Gradient accumulation over 4 micro-batches of 2 rows: the same normalisation.
    m4 = _run_step(ours, unpacked, accum=4)
    np.testing.assert_allclose(m4["loss"], t_loss, rtol=RTOL)
    np.testing.assert_allclose(m4["grad_norm"], t_norm, rtol=RTOL)

    # Packed into rows of 96: the same examples give the same loss and gradient.
    packed_ds = pipeline.sft_dataset(examples, seq_len=96, rows=8, pack=True, shuffle=False)
    batches = list(packed_ds)
    assert len(batches) == 1
    packed = batches[0]
    assert (packed["segment_ids"].max(axis=1) > 1).any(), "nothing was packed"
    assert packed["weights"].sum() == unpacked["weights"].sum()
    mp = _run_step(ours, packed, accum=2)
    np.testing.assert_allclose(mp["loss"], t_loss, rtol=RTOL)
    np.testing.assert_allclose(mp["grad_norm"], t_norm, rtol=RTOL)


@pytest.fixture(scope="module")
def verifier_pair():
    torch.manual_seed(1)
    cfg = LlamaConfig.tiny(vocab_size=300)
    hf_cfg = _hf_config(cfg, num_labels=1, pad_token_id=5)
    hf = transformers.LlamaForSequenceClassification(hf_cfg).float().eval()
    with torch.no_grad():  # HF zero-inits nothing here, but make the head clearly non-trivial
        hf.score.weight.normal_(0.0, 0.5)
    ours = from_state_dict(hf.state_dict(), cfg, verifier=True)
    return cfg, hf, ours


@pytest.mark.parametrize("loss,l2", [("bt", 0.0), ("bt", 1e-3), ("bce", 0.0)])
def test_verifier_losses_match_torch(verifier_pair, loss, l2):
    cfg, hf, ours = verifier_pair
    rng = np.random.default_rng(2)
    pairs = [
        {"chosen": rng.integers(6, cfg.vocab_size, int(rng.integers(4, 30))).astype(np.int32),
         "rejected": rng.integers(6, cfg.vocab_size, int(rng.integers(4, 30))).astype(np.int32)}
        for _ in range(6)
    ]  # fmt: skip
    rows = next(
        iter(pipeline.verifier_pair_dataset(pairs, seq_len=32, rows=8, shuffle=False, pad_id=5))
    )
    assert rows["weights"].tolist() == [1] * 6 + [0, 0]  # padded to the batch

    mesh = sh.make_mesh()
    opt = optax.sgd(0.0)
    graphdef, state, _ = create_train_state(ours, opt, mesh)
    step = jax.jit(steps.make_train_step(steps.verifier_loss_fn(graphdef, loss, l2), opt))
    batch = {k: jnp.asarray(v[None]) for k, v in rows.items()}
    _, m = step(state, batch)

    toks = torch.from_numpy(rows["tokens"][:6].reshape(12, 32).astype(np.int64))
    mask = torch.from_numpy(rows["mask"][:6].reshape(12, 32).astype(np.int64))
    with torch.no_grad():
        r = hf(input_ids=toks, attention_mask=mask).logits[:, 0].reshape(6, 2).double()
    if loss == "bt":
        expected = -torch.nn.functional.logsigmoid(r[:, 0] - r[:, 1]).mean() + l2 * (r**2).mean()
    else:
        labels = torch.tensor([[1.0, 0.0]] * 6, dtype=torch.float64)
        expected = torch.nn.functional.binary_cross_entropy_with_logits(r, labels)
    np.testing.assert_allclose(float(m["loss"]), float(expected), rtol=RTOL)
    assert float(m["correct"]) == float((r[:, 0] > r[:, 1]).sum())


def test_schedules_match_transformers():
    from mucode_jax.training.optim import make_schedule

    p = torch.nn.Parameter(torch.zeros(1))
    for name, frac, hf_fn in [
        ("linear", 0.0, transformers.get_linear_schedule_with_warmup),
        ("cosine", 0.0, transformers.get_cosine_schedule_with_warmup),
    ]:
        opt = torch.optim.AdamW([p], lr=2e-3)
        sched = hf_fn(opt, num_warmup_steps=3, num_training_steps=20)
        ours = make_schedule(2e-3, name, 20, warmup_steps=3, final_lr_fraction=frac)
        for s in range(20):
            np.testing.assert_allclose(
                float(ours(s)), opt.param_groups[0]["lr"], rtol=1e-5, atol=1e-12
            )
            opt.step()
            sched.step()
    cos = make_schedule(1.0, "cosine", 10, warmup_steps=0, final_lr_fraction=0.1)
    np.testing.assert_allclose(float(cos(10)), 0.1, rtol=1e-6)
    assert float(make_schedule(1.0, "constant", 10, warmup_steps=2)(1)) == 0.5


def test_config_smoke():
    from mucode_jax.training.config import sft_defaults, verifier_defaults

    assert isinstance(sft_defaults(), ml_collections.ConfigDict)
    assert verifier_defaults().loss == "bt"
