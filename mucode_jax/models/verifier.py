"""The learned verifier: a Llama backbone with a scalar head at the last real token.

The JAX counterpart of `transformers.LlamaForSequenceClassification(num_labels=1)`,
which is what the PyTorch μCode verifier is. HF picks the rightmost token that is not
the pad token; we pick the rightmost position whose attention mask (or segment id) is
non-zero, which is the same token for left- and right-padded batches.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mucode_jax.models.llama import Llama, LlamaConfig, _param

Array = jax.Array


def last_token_index(mask: Array) -> Array:
    """Index of the rightmost non-zero entry of each row of ``mask`` [B, T] -> [B]."""
    t = mask.shape[-1]
    idx = jnp.arange(t)[None, :]
    return jnp.max(jnp.where(mask != 0, idx, 0), axis=-1)


class Verifier(nnx.Module):
    """``verifier(tokens, attention_mask=mask)`` -> float32 scores [B].

    Attributes:
      backbone: the Llama decoder (its ``lm_head``, if any, is unused and not created).
      score: [D] weights of the scalar head (HF ``score.weight`` [1, D]).
    """

    def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
        # The head replaces the LM head: build the backbone without an untied lm_head.
        self.config = config
        self.backbone = Llama(config.replace(tie_word_embeddings=True), rngs=rngs)
        self.score = _param(
            rngs, (config.hidden_size,), ("embed",), config.initializer_range, config.param_dtype
        )

    def __call__(
        self,
        tokens: Array,
        *,
        attention_mask: Array | None = None,
        segment_ids: Array | None = None,
        positions: Array | None = None,
    ) -> Array:
        tokens = jnp.asarray(tokens, jnp.int32)
        if attention_mask is None and segment_ids is None:
            attention_mask = jnp.ones(tokens.shape, jnp.int32)
        x, _, _ = self.backbone.hidden(
            tokens, attention_mask=attention_mask, segment_ids=segment_ids, positions=positions
        )
        mask = attention_mask if segment_ids is None else segment_ids
        last = last_token_index(jnp.asarray(mask))
        h = jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0]  # [B, D]
        w = self.score[...].astype(self.config.dtype)
        return jnp.einsum("bd,d->b", h, w, preferred_element_type=jnp.float32)
