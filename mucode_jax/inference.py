"""The one place that turns HF checkpoint directories into a policy and a verifier scorer.

Evaluation and the expert-iteration driver both need "this generator directory as a
`rollout.ModelPolicy`" and "this verifier directory as a `scoring.VerifierScorer`", on a mesh
or on one device. `Models` builds the sampler and the scorer once (their jitted functions
compile once per bucket) and swaps in new weights of the same shapes on every later load,
so a long run with one model per iteration never recompiles.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from mucode_jax import rollout
from mucode_jax import sharding as sh
from mucode_jax.data.tokenizer import eos_token_ids
from mucode_jax.models.hf import load_pretrained
from mucode_jax.models.verifier import Verifier
from mucode_jax.sampling import Sampler
from mucode_jax.sampling.methods import make_method
from mucode_jax.scoring import VerifierScorer


class Models:
    """One sampler and one verifier scorer, loaded from HF directories.

    Args:
      tokenizer: the tokenizer whose chat template the generator and the verifier use.
      dtype: compute dtype name of both models (``"float32"``, ``"bfloat16"``).
      max_new_tokens: M, the sampler's token budget per completion.
      max_prompt_length: the largest prompt bucket.
      max_batch_size: the largest batch bucket of the sampler and the scorer.
      verifier_max_length: verifier inputs are cut to this many tokens (as in its training).
      mesh, rules: where the weights go and how batches are sharded (None: one device).
      stop_on_eom: the sampler also stops on ``<|eom_id|>`` when the tokenizer has it
        (`mucode_jax.data.tokenizer.eos_token_ids`; the official μCode sampler does).
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        dtype: str,
        max_new_tokens: int,
        max_prompt_length: int,
        max_batch_size: int,
        verifier_max_length: int,
        mesh: jax.sharding.Mesh | None = None,
        rules: sh.LogicalRules = sh.DEFAULT_RULES,
        stop_on_eom: bool = False,
    ):
        self.tokenizer = tokenizer
        self.stop_on_eom = bool(stop_on_eom)
        self.dtype = getattr(jnp, dtype)
        self.max_new_tokens = int(max_new_tokens)
        self.max_prompt_length = int(max_prompt_length)
        self.max_batch_size = int(max_batch_size)
        self.verifier_max_length = int(verifier_max_length)
        self.mesh, self.rules = mesh, tuple(rules)
        self._sampler: Sampler | None = None
        self._scorer: VerifierScorer | None = None

    def _load(self, hf_dir: str | os.PathLike):
        return load_pretrained(hf_dir, dtype=self.dtype, mesh=self.mesh, rules=self.rules)

    def policy(
        self, hf_dir: str | os.PathLike, *, temperature: float, top_p: float = 1.0, top_k: int = 0
    ) -> rollout.ModelPolicy:
        """The generator in ``hf_dir`` as a policy sampling at the given temperature."""
        model = self._load(hf_dir)
        if self._sampler is None:
            self._sampler = Sampler(
                model,
                max_new_tokens=self.max_new_tokens,
                max_prompt_length=self.max_prompt_length,
                eos_ids=eos_token_ids(self.tokenizer, eom=self.stop_on_eom),
                max_batch_size=self.max_batch_size,
                pad_id=self.tokenizer.pad_token_id or 0,
                mesh=self.mesh,
                rules=self.rules,
            )
        else:
            self._sampler.update_params(nnx.state(model))
        method = make_method(temperature=temperature, top_p=top_p, top_k=top_k)
        return rollout.ModelPolicy(self._sampler, self.tokenizer, method=method)

    def scorer(self, hf_dir: str | os.PathLike) -> VerifierScorer:
        """The verifier in ``hf_dir`` as a batched scorer of (x, y) pairs."""
        verifier = self._load(hf_dir)
        if not isinstance(verifier, Verifier):
            raise ValueError(
                f"{str(hf_dir)!r} is a {type(verifier).__name__} checkpoint (a generator); a "
                "verifier is a LlamaForSequenceClassification checkpoint (train_verifier's hf/)."
            )
        if self._scorer is None:
            self._scorer = VerifierScorer(
                verifier,
                self.tokenizer,
                max_length=self.verifier_max_length,
                max_batch_size=self.max_batch_size,
                mesh=self.mesh,
                rules=self.rules,
            )
        else:
            self._scorer.update_params(nnx.state(verifier))
        return self._scorer
