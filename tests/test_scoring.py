"""Batched verifier scoring equals the verifier on each input alone, without recompiling."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from mucode_jax.data.tokenizer import build_tokenizer
from mucode_jax.models.llama import LlamaConfig
from mucode_jax.models.verifier import Verifier
from mucode_jax.scoring import VerifierScorer

CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "Write a function that adds two numbers.",
    "def mul(x, y):\n    return x * y\n",
    "Feedback: Code passed all tests",
] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(CORPUS, vocab_size=300)


def test_scores_equal_single_forward_and_compile_once_per_bucket(tokenizer):
    cfg = LlamaConfig.tiny(vocab_size=len(tokenizer))
    verifier = Verifier(cfg, rngs=nnx.Rngs(0))
    scorer = VerifierScorer(verifier, tokenizer, max_length=256, max_batch_size=8)
    rng = np.random.RandomState(0)
    pairs = [
        (
            "Write a function that adds two numbers.",
            "```python\n" + "x = 1\n" * int(rng.randint(1, 12)) + "```",
        )
        for _ in range(11)
    ]
    scores = scorer.score([p for p, _ in pairs], [c for _, c in pairs])
    for (p, c), s in list(zip(pairs, scores))[::4]:
        ids = np.asarray(scorer.encode(p, c))[None]
        alone = float(np.asarray(verifier(ids, attention_mask=np.ones_like(ids)))[0])
        assert abs(alone - s) < 1e-5
    traces = scorer.num_traces
    scorer.score([p for p, _ in pairs[:5]], [c for _, c in pairs[:5]])
    scorer.score([p for p, _ in pairs[:3]], [c for _, c in pairs[:3]])  # same buckets again
    scorer.score([p for p, _ in pairs], [c for _, c in pairs])
    assert scorer.num_traces <= traces + 2  # at most the batch buckets 4 and 8 are new


def test_mismatched_lengths_error(tokenizer):
    cfg = LlamaConfig.tiny(vocab_size=len(tokenizer))
    scorer = VerifierScorer(Verifier(cfg, rngs=nnx.Rngs(0)), tokenizer, max_length=64)
    with pytest.raises(ValueError, match="one each"):
        scorer.score(["a", "b"], ["c"])
