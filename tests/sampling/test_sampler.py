"""The sampler equals HF `generate`, returns true log-probs, and never recompiles."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from flax import nnx

from mucode_jax.models.hf import from_state_dict
from mucode_jax.models.llama import LlamaConfig
from mucode_jax.sampling import Greedy, Sampler, Temperature, TopK, TopP, generate

VOCAB = 128
MAX_NEW = 20
LENS = [5, 12, 1, 9]  # unequal prompt lengths, left-padded together


@functools.cache
def hf_model():
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
        },
        rope_theta=500000.0,
        tie_word_embeddings=False,
        # Wide weights give peaked, varied next-token distributions (no near-ties, no loops).
        initializer_range=0.2,
        attn_implementation="eager",
    )
    return transformers.LlamaForCausalLM(cfg).eval()


@functools.cache
def ours():
    hf = hf_model()
    return from_state_dict(hf.state_dict(), LlamaConfig.from_hf(hf.config))


@functools.cache
def shared_sampler():
    """One sampler (and its compiled buckets) shared by the tests: no end ids, batch <= 4."""
    return Sampler(
        ours(), max_new_tokens=MAX_NEW, max_prompt_length=16, max_batch_size=4, eos_ids=()
    )


def prompts(lens=LENS, seed=0):
    rng = np.random.RandomState(seed)
    return [rng.randint(1, VOCAB, n).tolist() for n in lens]


def left_pad(rows):
    p = max(len(r) for r in rows)
    ids = np.zeros((len(rows), p), np.int64)
    mask = np.zeros((len(rows), p), np.int64)
    for i, r in enumerate(rows):
        ids[i, p - len(r) :] = r
        mask[i, p - len(r) :] = 1
    return ids, mask


def hf_greedy(rows, eos):
    import torch

    ids, mask = left_pad(rows)
    with torch.no_grad():
        out = hf_model().generate(
            torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            do_sample=False,
            max_new_tokens=MAX_NEW,
            eos_token_id=list(eos) or None,
            pad_token_id=0,
        )
    new = out[:, ids.shape[1] :].numpy()
    result = []
    for row in new:  # up to and including the first end id (HF pads after it)
        hits = [j for j, t in enumerate(row) if t in eos]
        result.append(row[: hits[0] + 1 if hits else len(row)].tolist())
    return result


def full_forward_logprobs(rows, new_rows):
    """log_softmax of one forward over prompt + new tokens, at the new tokens' positions."""
    seqs = [r + n for r, n in zip(rows, new_rows)]
    ids, mask = left_pad(seqs)
    logits = np.asarray(ours()(ids, attention_mask=mask), np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
    logp -= logits.max(-1, keepdims=True)
    out = []
    width = ids.shape[1]
    for i, n in enumerate(new_rows):
        start = width - len(n)  # slot of the first new token
        out.append((logp[i, start - 1 : width - 1], logits[i, start - 1 : width - 1], n))
    return out


def test_greedy_matches_hf_generate_token_for_token():
    rows = prompts()
    free = hf_greedy(rows, eos=())
    # End ids the model really produces, at different steps in different rows.
    eos = (int(free[0][6]), int(free[3][3]))
    ref = hf_greedy(rows, eos=eos)
    assert any(len(r) < MAX_NEW for r in ref) and any(len(r) == MAX_NEW for r in ref)
    sampler = Sampler(ours(), max_new_tokens=MAX_NEW, max_prompt_length=16, eos_ids=eos)
    out = sampler.sample(rows)
    assert out.tokens == ref
    np.testing.assert_array_equal(out.lengths, [len(r) for r in ref])
    np.testing.assert_array_equal(out.finished, [r[-1] in eos for r in ref])
    assert out.completions() == [r[:-1] if r[-1] in eos else r for r in ref]
    # Without end ids every row runs to the limit, still equal to HF.
    assert shared_sampler().sample(rows).tokens == free
    # The convenience API: new tokens up to and not including the first end id.
    got = generate(ours(), rows, max_new_tokens=MAX_NEW, eos_ids=eos)
    assert got == out.completions()


@pytest.mark.parametrize("method", [TopK(k=5, temperature=0.8), TopP(p=0.7, temperature=1.3)])
def test_logprobs_equal_log_softmax_of_a_full_forward(method):
    rows = prompts(seed=1)
    out = shared_sampler().sample(rows, seed=3, method=method, max_new_tokens=12)
    for (logp, logits, new), lp, slp in zip(
        full_forward_logprobs(rows, out.tokens), out.logprobs, out.sampling_logprobs
    ):
        picked = logp[np.arange(len(new)), new]
        np.testing.assert_allclose(lp, picked, atol=2e-5)
        # Sampling log-probs: renormalised over the allowed set after temperature.
        t = method.temperature
        scaled = logits / t
        if isinstance(method, TopK):
            kth = np.sort(scaled, -1)[:, -method.k][:, None]
            allowed = scaled >= kth
            assert allowed[np.arange(len(new)), new].all(), "drew outside the top k"
        elif isinstance(method, TopP):
            srt = -np.sort(-scaled, -1)
            p = np.exp(srt - srt.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            n_keep = ((np.cumsum(p, -1) - p) < method.p).sum(-1)
            allowed = scaled >= srt[np.arange(len(srt)), n_keep - 1][:, None]
            assert allowed[np.arange(len(new)), new].all(), "drew outside the nucleus"
        else:
            allowed = np.ones_like(scaled, bool)
        masked = np.where(allowed, scaled, -np.inf)
        norm = masked.max(-1) + np.log(np.exp(masked - masked.max(-1, keepdims=True)).sum(-1))
        np.testing.assert_allclose(slp, masked[np.arange(len(new)), new] - norm, atol=2e-5)


def test_greedy_logprobs_and_temperature_to_zero():
    rows = prompts(seed=2)
    sampler = shared_sampler()
    greedy = sampler.sample(rows, max_new_tokens=12)
    for (logp, _, new), lp, slp in zip(
        full_forward_logprobs(rows, greedy.tokens), greedy.logprobs, greedy.sampling_logprobs
    ):
        np.testing.assert_array_equal(new, logp.argmax(-1))
        np.testing.assert_allclose(lp, logp.max(-1), atol=2e-5)
        assert slp == [0.0] * len(new)
    for seed in (0, 1):
        cold = sampler.sample(rows, seed=seed, method=Temperature(1e-5), max_new_tokens=12)
        assert cold.tokens == greedy.tokens


def test_deterministic_for_a_seed_and_independent_of_the_batch():
    rows = prompts([3, 7, 2, 11, 4], seed=4)
    sampler = shared_sampler()
    method = Temperature(1.0)
    a = sampler.sample(rows, seed=7, method=method)  # 5 rows: two chunks (4 + 1)
    b = sampler.sample(rows, seed=7, method=method)
    assert a.tokens == b.tokens and a.logprobs == b.logprobs
    c = sampler.sample(rows, seed=8, method=method)
    assert a.tokens != c.tokens
    # A prompt's draws depend on its index in the list, not on the batch it was padded into.
    d = sampler.sample(rows[:2], seed=7, method=method)
    assert d.tokens == a.tokens[:2]


def test_row_seeds_make_a_rows_samples_independent_of_its_position():
    rows = prompts([3, 7, 2, 11, 4], seed=4)
    sampler = shared_sampler()
    method = Temperature(1.0)
    seeds = [101, 202, 303, 404, 505]
    a = sampler.sample(rows, seed=7, method=method, row_seeds=seeds)
    # The same prompts shuffled, and one alone: each prompt's tokens follow its own seed.
    perm = [3, 0, 4, 1, 2]
    b = sampler.sample(
        [rows[i] for i in perm], seed=7, method=method, row_seeds=[seeds[i] for i in perm]
    )
    assert [b.tokens[perm.index(i)] for i in range(5)] == a.tokens
    c = sampler.sample([rows[2]], seed=7, method=method, row_seeds=[303])
    assert c.tokens[0] == a.tokens[2]
    # Without row seeds the stream follows the position instead (a differs from the default).
    assert sampler.sample(rows, seed=7, method=method).tokens != a.tokens
    with pytest.raises(ValueError, match="row_seeds must be 5 ints"):
        sampler.sample(rows, seed=7, row_seeds=[1, 2])
    with pytest.raises(ValueError, match=r"\[0, 2\*\*31\)"):
        sampler.sample(rows, seed=7, row_seeds=[-1, 2, 3, 4, 5])


def test_compaction_changes_nothing_but_the_cost():
    model = ours()
    rows = prompts([3, 7, 2, 11, 4, 9, 5, 8], seed=6)
    limits = [2, 30, 3, 5, 30, 4, 2, 6]  # most rows end early, two run long
    kw = dict(max_new_tokens=32, batch_buckets=(2, 4, 8), eos_ids=(), method=Temperature(1.0))
    whole = Sampler(model, compact_every=None, **kw)
    phased = Sampler(model, compact_every=4, **kw)
    a = whole.sample(rows, seed=3, max_new_tokens=limits)
    b = phased.sample(rows, seed=3, max_new_tokens=limits)
    assert a.tokens == b.tokens and [len(t) for t in a.tokens] == limits
    for x, y in zip(a.logprobs, b.logprobs):
        np.testing.assert_allclose(x, y, atol=1e-5)
    useful = sum(limits)
    assert whole.stats["row_steps"] == 8 * 30 and whole.stats["useful_row_steps"] == useful
    # Phases of 4 steps: after step 5 two rows still run; they move to the bucket of 2.
    assert phased.stats["useful_row_steps"] == useful
    assert phased.stats["row_steps"] < 0.5 * whole.stats["row_steps"]
    assert phased.reset_stats()["useful_row_steps"] == useful and phased.stats["row_steps"] == 0
    # The phases attend over the prompt bucket plus the new-token columns written so far,
    # rounded up to a quarter of M (8 here): 8 + 8 slots for the first phase (steps 1-4).
    assert [phased._window(8 + 32, stop) for stop in (5, 9, 13, 21, 29, 32)] == [
        16, 16, 24, 32, None, None
    ]
    assert phased._windows(8) == [16, 24, 32, None]


def test_repeated_prompts_are_prefilled_once_with_the_same_tokens():
    model = ours()
    distinct = prompts([5, 9, 3], seed=8)
    rows = [distinct[i] for i in (0, 1, 0, 2, 0, 1, 2, 0)]  # 8 rows, 3 distinct prompts
    kw = dict(max_new_tokens=8, batch_buckets=(2, 4, 8), eos_ids=(), method=Temperature(1.0))
    plain = Sampler(model, share_prefill=False, **kw)
    shared = Sampler(model, **kw)
    seeds = [11, 12, 13, 14, 15, 16, 17, 18]
    a = plain.sample(rows, seed=4, row_seeds=seeds, max_new_tokens=[8, 3, 8, 5, 8, 8, 2, 8])
    b = shared.sample(rows, seed=4, row_seeds=seeds, max_new_tokens=[8, 3, 8, 5, 8, 8, 2, 8])
    assert a.tokens == b.tokens
    for x, y in zip(a.logprobs + a.sampling_logprobs, b.logprobs + b.sampling_logprobs):
        np.testing.assert_allclose(x, y, atol=1e-5)
    assert len({tuple(t) for t in b.tokens}) > 3  # the rows of one prompt draw differently
    assert (plain.stats["prefill_rows"], shared.stats["prefill_rows"]) == (8, 4)
    assert shared.stats["prompt_rows"] == 8
    # Distinct prompts (or no saving of a batch bucket) take the plain prefill.
    c = shared.sample(distinct + distinct[:1], seed=4)
    assert c.tokens == plain.sample(distinct + distinct[:1], seed=4).tokens
    assert shared.stats["prefill_rows"] == 4 + 4


def test_per_row_length_limits_and_padding_rows_dropped():
    rows = prompts([4, 6, 3], seed=5)
    sampler = shared_sampler()
    full = sampler.sample(rows)
    out = sampler.sample(rows, max_new_tokens=[1, MAX_NEW, 5])
    assert [len(t) for t in out.tokens] == [1, MAX_NEW, 5]
    assert out.tokens == [full.tokens[0][:1], full.tokens[1], full.tokens[2][:5]]
    assert not out.finished.any()


def test_no_recompilation_across_a_multi_turn_run():
    model = ours()
    sampler = Sampler(
        model,
        max_new_tokens=6,
        prompt_buckets=(16, 32),
        batch_buckets=(2, 4),
        eos_ids=(3, 4),
        method=Temperature(0.7),
    )
    sampler.warmup()
    traces = sampler.num_traces
    assert traces == 2 * 2 * 2  # (prefill, decode) x prompt buckets x batch buckets
    # New weights of the same shapes, made before counting (eager ops compile too).
    other = jax.tree.map(lambda x: x * 1.01, nnx.state(model))
    jax.block_until_ready(other)

    compiles = []
    listener = lambda event, *a, **k: compiles.append(event) if "backend_compile" in event else None
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        jax.jit(lambda x: x + 1)(np.float32(1))  # the listener does see compilations
        assert len(compiles) == 1
        compiles.clear()
        rng = np.random.RandomState(0)
        for episode in range(3):
            batch = 1 + episode  # 1, 2, 3 problems, 1..4 rows
            histories = [rng.randint(5, VOCAB, rng.randint(1, 9)).tolist() for _ in range(batch)]
            for turn in range(3):
                out = sampler.sample(histories, seed=10 * episode + turn, max_new_tokens=2 + turn)
                feedback = [rng.randint(5, VOCAB, 3).tolist() for _ in histories]
                histories = [h + t + f for h, t, f in zip(histories, out.tokens, feedback)]
            sampler.update_params(other if episode % 2 == 0 else nnx.state(model))
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert max(len(h) for h in histories) > 16  # the run crossed a prompt bucket
    assert compiles == []
    assert sampler.num_traces == traces


def test_bad_inputs_get_one_clear_sentence():
    sampler = Sampler(ours(), max_new_tokens=4, max_prompt_length=16, eos_ids=())  # no compile
    with pytest.raises(ValueError, match="prompts is empty"):
        sampler.sample([])
    with pytest.raises(ValueError, match="Prompt 1 is empty"):
        sampler.sample([[1], []])
    with pytest.raises(ValueError, match="largest prompt bucket"):
        sampler.sample([[1] * 17])
    with pytest.raises(ValueError, match=r"max_new_tokens must be in \[1, 4\]"):
        sampler.sample([[1]], max_new_tokens=0)
    with pytest.raises(ValueError, match=r"not a token id in \[0, 128\)"):
        sampler.sample([[1, VOCAB]])
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        Sampler(ours(), max_new_tokens=0)
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 1"):
        generate(ours(), [[1]], max_new_tokens=0)
    with pytest.raises(ValueError, match="top_p must be in"):
        generate(ours(), [[1]], max_new_tokens=2, temperature=1.0, top_p=1.2)
    bigger = from_state_dict(
        {k: np.zeros(v.shape) for k, v in hf_model().state_dict().items()},
        LlamaConfig.from_hf(hf_model().config).replace(vocab_size=VOCAB),
    )
    sampler.update_params(bigger)  # same shapes: fine
    with pytest.raises(ValueError, match="update_params"):
        sampler.update_params(jax.tree.map(lambda x: x[..., :1], nnx.state(bigger)))
    assert isinstance(sampler.method, Greedy)
