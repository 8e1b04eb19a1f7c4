"""Batched verifier scoring: (first prompt x, assistant message y) -> R(x, y).

The hot path of LV selection in multi-turn Best-of-N and of μCode's relabeling. Inputs
are rendered exactly as the verifier was trained (`prompts.render_verifier_input`: the chat
template over ``[user: x, assistant: y]``, cut to the first ``max_length`` tokens), right-padded to a
length bucket and batched to a batch bucket, and scored by one `jax.jit`-ed pure function
over ``(params, tokens, mask)`` with the verifier graph fixed, so a long run compiles once
per bucket pair and `update_params` swaps weights without recompiling. Verifier training's
held-out evaluation scores through the same class.

On several processes every process passes the whole batch and reads every score. Each new
bucket pair is compiled ahead of the first call and followed by a barrier, so a process that
compiles slowly never leaves the others waiting inside a collective (gloo's CPU collectives time
out after 30 s).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from mucode_jax import multihost, prompts
from mucode_jax import sharding as sh
from mucode_jax.models.verifier import Verifier
from mucode_jax.sampling.sampler import power_of_two_buckets


def _pure(params: Any) -> Any:
    return nnx.to_pure_dict(params) if isinstance(params, nnx.State) else params


class VerifierScorer:
    """Scores (x, y) pairs with a `Verifier`.

    Args:
      verifier: the model.
      tokenizer: the tokenizer whose chat template the verifier was trained with.
      max_length: inputs are cut to their first ``max_length`` tokens (as in training).
      max_batch_size: largest batch bucket; bigger requests are chunked.
      mesh, rules: shard the batch over the mesh's data axes (None: one device).
    """

    def __init__(
        self,
        verifier: Verifier,
        tokenizer: Any,
        *,
        max_length: int = 2048,
        max_batch_size: int = 32,
        mesh: jax.sharding.Mesh | None = None,
        rules: sh.LogicalRules = sh.DEFAULT_RULES,
    ):
        if not isinstance(verifier, Verifier):
            raise TypeError(f"VerifierScorer needs a Verifier, got {type(verifier).__name__}.")
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.mesh, self.rules = mesh, tuple(rules)
        shards = 1
        if mesh is not None:
            spec = sh.logical_to_spec(("batch",), rules, mesh)
            axes = spec[0] if len(spec) else ()
            axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
            shards = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
        self.length_buckets = power_of_two_buckets(self.max_length, min(64, self.max_length))
        self.batch_buckets = power_of_two_buckets(int(max_batch_size), 1, multiple=shards)
        self._graphdef, state = nnx.split(verifier)
        params = _pure(state)
        self.num_traces = 0

        def score(params, tokens, mask):
            self.num_traces += 1
            return nnx.merge(self._graphdef, params)(tokens, attention_mask=mask)

        if mesh is None:
            self._fn = jax.jit(score)
        else:
            batch = self._batch = sh.logical_to_sharding(("batch", "length"), mesh, rules)
            self._fn = jax.jit(
                score,
                in_shardings=(_pure(sh.state_shardings(state, mesh, rules)), batch, batch),
                out_shardings=sh.logical_to_sharding(("batch",), mesh, rules),
            )
        self._params = params
        self._compiled: dict[tuple[int, int], Any] = {}

    def _call(self, tokens, mask):
        if jax.process_count() == 1:
            return self._fn(self._params, tokens, mask)
        key = tokens.shape
        if key not in self._compiled:  # compile, then start the collectives together
            self._compiled[key] = self._fn.lower(self._params, tokens, mask).compile()
            multihost.barrier(f"verifier scorer compiled {key}")
        return self._compiled[key](self._params, tokens, mask)

    def update_params(self, params: Any) -> None:
        """Swaps in new verifier weights of the same shapes (no recompilation).

        ``params``: an `nnx.State` (``nnx.state(verifier)``) or the trainer's pure dict.
        """
        self._params = _pure(params)

    def encode(self, prompt: str, response: str) -> list[int]:
        """The verifier's input ids for (x, y), cut to ``max_length`` (as in training)."""
        return prompts.render_verifier_input(self.tokenizer, prompt, response)[: self.max_length]

    def score_ids(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """Scores token-id sequences (each at most ``max_length``): float32 [n]."""
        n = len(sequences)
        out = np.zeros(n, np.float32)
        if n == 0:
            return out
        lens = np.array([len(s) for s in sequences])
        if lens.min() < 1:
            raise ValueError("An empty sequence cannot be scored; render a prompt and a response.")
        order = np.argsort(lens, kind="stable")
        chunk = self.batch_buckets[-1]
        with sh.use_mesh(self.mesh, self.rules):
            for start in range(0, n, chunk):
                idx = order[start : start + chunk]
                b = next(x for x in self.batch_buckets if x >= len(idx))
                t = next(x for x in self.length_buckets if x >= lens[idx].max())
                tokens = np.zeros((b, t), np.int32)
                mask = np.zeros((b, t), np.int32)
                mask[len(idx) :, 0] = 1  # dummy rows score one pad token
                for r, i in enumerate(idx):
                    s = np.asarray(sequences[i], np.int32)
                    tokens[r, : len(s)] = s
                    mask[r, : len(s)] = 1
                if self.mesh is not None:  # every process passes the whole batch
                    tokens, mask = (sh.host_to_global(x, self._batch) for x in (tokens, mask))
                scores = sh.global_to_host(self._call(tokens, mask))
                out[idx] = scores[: len(idx)]
        return out

    def score(self, prompts_: Sequence[str], completions: Sequence[str]) -> list[float]:
        """R(x, y) for each pair, as floats."""
        if len(prompts_) != len(completions):
            raise ValueError(
                f"Got {len(prompts_)} prompts but {len(completions)} completions; pass one each."
            )
        ids = [self.encode(x, y) for x, y in zip(prompts_, completions)]
        return [float(s) for s in self.score_ids(ids)]
