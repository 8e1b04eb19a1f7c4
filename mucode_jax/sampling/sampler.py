"""Batched autoregressive sampling: one prefill, then one `jax.lax.while_loop` decode.

How a call to `Sampler.sample` runs:

1. Prompts are LEFT-padded to a prompt-length bucket ``P`` and the batch is padded to
   a batch-size bucket ``B`` with dummy rows (dropped from the results), so a long
   run compiles once per (``P``, ``B``) pair and never again (`Sampler.warmup` does
   all pairs up front). Batches larger than the largest bucket are split into chunks
   (sorted by prompt length, so a chunk pads little).
2. `prefill` runs the whole padded prompt through the model in one forward, writing
   the KV cache at slots ``[0, P)``, and draws the first new token from the logits of
   the last slot. The cache then gets ``max_new_tokens`` empty slots appended.
3. `decode` is one `jax.lax.while_loop` over a `SamplingState` (the KV cache, the
   token buffer, per-row flags, the step), donated so the cache is updated in place.
   Every row writes its next token at cache slot ``cache.end`` (the same for the whole
   batch); RoPE positions are per row (real tokens so far), as HF `generate` uses for
   left-padded batches. The loop stops when every row is done (it produced one of the
   end ids, or reached its length limit) or the token buffer is full.

Both steps are pure functions `jax.jit`-ed over ``(params, ...)`` with the model
graphdef fixed (``nnx.merge`` inside), so `Sampler.update_params` swaps in new weights
of the same shapes without recompiling. With a mesh, the batch is sharded over the
mesh axes of the logical ``"batch"`` axis (``("data", "fsdp")`` by default) and the
KV heads over ``"tensor"``, through explicit ``in_shardings`` / ``out_shardings``.

Log-probabilities: ``logprobs`` are those of the chosen tokens under the model's
*unmodified* distribution (log-softmax of the raw logits, temperature 1) — what a
trainer recomputes from a forward pass, and what PPO ratios and KL penalties use.
``sampling_logprobs`` are those under the distribution actually sampled from (after
temperature, top-k, top-p; 0 for greedy).

Determinism: the draw of prompt ``i`` uses the key ``fold_in(fold_in(key(seed), step),
i)``, so for a fixed seed, prompts and weights the output does not depend on the
batch bucket, on chunking, or on the other prompts in the batch (up to floating-point
differences between compiled shapes).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct
from jax.sharding import NamedSharding, PartitionSpec

from mucode_jax import sharding as sh
from mucode_jax.models.llama import Cache, LayerCache, Llama, cache_logical_axes, default_positions
from mucode_jax.models.llama import init_cache as _init_cache
from mucode_jax.sampling.methods import Greedy, SamplingMethod, make_method

Array = jax.Array


@struct.dataclass
class SamplingState:
    """Everything the decode loop carries (B = batch bucket, M = max new tokens).

    Attributes:
      tokens: [B, M] int32 new tokens; ``pad_id`` after a row is done and in unwritten
        columns.
      logprobs: [B, M] float32 log-probability of each new token under the model's
        unmodified distribution (temperature 1); 0 where no token was written.
      sampling_logprobs: [B, M] float32 log-probability under the sampling distribution.
      last_tokens: [B] int32 the token to feed next (the newest one).
      positions: [B] int32 RoPE position of ``last_tokens`` (real tokens before it).
      lengths: [B] int32 new tokens written so far (an end id that stopped the row counts).
      done: [B] bool, the row produced an end id or reached its limit.
      limits: [B] int32 per-row limit on new tokens (<= M).
      row_ids: [B] int32 index of each row's prompt in the caller's list (for the keys).
      step: [] int32 number of columns of ``tokens`` written (the next one to write).
      cache: the KV cache; ``cache.end`` is the slot where ``last_tokens`` goes.
      rng: [] the base PRNG key of this call.
    """

    tokens: Array
    logprobs: Array
    sampling_logprobs: Array
    last_tokens: Array
    positions: Array
    lengths: Array
    done: Array
    limits: Array
    row_ids: Array
    step: Array
    cache: Cache
    rng: Array


@dataclasses.dataclass(frozen=True)
class SampleOutput:
    """What `Sampler.sample` returns, one entry per prompt, in the order given.

    Attributes:
      tokens: the new tokens of each prompt, *including* the end id that stopped it
        (if any: see ``finished``), so every sampled token has its log-probability.
      logprobs: per token, the log-probability under the unmodified model (T = 1).
      sampling_logprobs: per token, the log-probability under the sampling distribution.
      lengths: [n] int, ``len(tokens[i])``.
      finished: [n] bool, True when the row stopped on an end id (its last token), False
        when it hit the length limit.
    """

    tokens: list[list[int]]
    logprobs: list[list[float]]
    sampling_logprobs: list[list[float]]
    lengths: np.ndarray
    finished: np.ndarray

    def completions(self) -> list[list[int]]:
        """New tokens up to and not including the first end id."""
        return [t[:-1] if f else t for t, f in zip(self.tokens, self.finished)]


def power_of_two_buckets(maximum: int, minimum: int = 32, multiple: int = 1) -> tuple[int, ...]:
    """Powers of two from ``minimum`` below ``maximum``, then ``maximum`` itself.

    Each is rounded up to a multiple of ``multiple`` (e.g. the number of batch shards).
    """
    out = []
    b = 1
    while b < maximum:
        if b >= minimum:
            out.append(b)
        b *= 2
    out.append(maximum)
    return tuple(sorted({-(-x // multiple) * multiple for x in out}))


def _bucket(n: int, buckets: Sequence[int]) -> int:
    for b in buckets:
        if n <= b:
            return b
    return buckets[-1]


def _normalize_eos(eos_ids: int | Sequence[int] | None) -> tuple[int, ...]:
    if eos_ids is None:
        return ()
    if isinstance(eos_ids, int | np.integer):
        return (int(eos_ids),)
    return tuple(int(e) for e in eos_ids)


class Sampler:
    """Samples continuations of token-id prompts from a `Llama`.

    Example::

        sampler = Sampler(model, max_new_tokens=1000, method=Temperature(0.7))
        out = sampler.sample(prompts, seed=0)       # prompts: list[list[int]]
        sampler.update_params(nnx.state(new_model))  # same shapes: no recompilation

    Args:
      model: the `Llama` to sample from. Its graph is fixed; its weights can be swapped
        with `update_params`.
      max_new_tokens: the token buffer length M (a call may ask for fewer).
      max_prompt_length: the largest prompt-length bucket (the default buckets are the
        powers of two from 32 below it, then it).
      method: the default sampling method (`Greedy`, `Temperature`, `TopK`, `TopP`).
      eos_ids: end ids that stop a row; default: ``model.config.eos_token_id``; pass
        ``()`` to stop only on length.
      max_batch_size: the largest batch-size bucket; bigger batches are chunked.
      prompt_buckets / batch_buckets: explicit bucket lists (sorted ascending).
      mesh, rules: shard over this mesh with these logical rules (None: no sharding).
      cache_dtype: KV-cache dtype (default: the model's compute dtype).
      prefill_chunk: prompts longer than this are prefilled in chunks of this many
        tokens (a `jax.lax.scan` over the chunks), which bounds the attention scores of
        the prefill to B x N x chunk x (P + M) floats instead of B x N x P x P; prompt
        buckets above it are rounded up to a multiple of it. None: one pass.
      pad_id: the token id written to padding (any valid id: it is masked out).
    """

    def __init__(
        self,
        model: Llama,
        *,
        max_new_tokens: int,
        max_prompt_length: int = 2048,
        method: SamplingMethod | None = None,
        eos_ids: int | Sequence[int] | None = None,
        max_batch_size: int = 64,
        prompt_buckets: Sequence[int] | None = None,
        batch_buckets: Sequence[int] | None = None,
        mesh: jax.sharding.Mesh | None = None,
        rules: sh.LogicalRules = sh.DEFAULT_RULES,
        cache_dtype: Any = None,
        pad_id: int | None = None,
        prefill_chunk: int | None = 512,
    ):
        if not isinstance(model, Llama):
            raise TypeError(f"Sampler needs a mucode_jax Llama model, got {type(model).__name__}.")
        if int(max_new_tokens) < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
        if int(max_prompt_length) < 1:
            raise ValueError(f"max_prompt_length must be >= 1, got {max_prompt_length}.")
        if int(max_batch_size) < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}.")
        self.config = model.config
        self.max_new_tokens = int(max_new_tokens)
        self.method = Greedy() if method is None else method
        self.eos_ids = _normalize_eos(self.config.eos_token_id if eos_ids is None else eos_ids)
        self.mesh, self.rules = mesh, tuple(rules)
        self.cache_dtype = self.config.dtype if cache_dtype is None else cache_dtype
        pad = self.config.pad_token_id if pad_id is None else pad_id
        self.pad_id = 0 if pad is None else int(pad)
        v = self.config.vocab_size
        for e in (*self.eos_ids, self.pad_id):
            if not 0 <= e < v:
                raise ValueError(
                    f"Token id {e} (end or pad id) is outside the vocabulary [0, {v})."
                )

        if prefill_chunk is not None and int(prefill_chunk) < 1:
            raise ValueError(f"prefill_chunk must be >= 1 or None, got {prefill_chunk}.")
        self.prefill_chunk = None if prefill_chunk is None else int(prefill_chunk)
        shards = self._batch_shards()
        buckets = prompt_buckets or power_of_two_buckets(int(max_prompt_length))
        c = self.prefill_chunk
        self.prompt_buckets = tuple(
            sorted({int(x) if c is None or x <= c else -(-int(x) // c) * c for x in buckets})
        )
        self.batch_buckets = tuple(
            sorted({-(-int(b) // shards) * shards for b in batch_buckets})
            if batch_buckets
            else power_of_two_buckets(int(max_batch_size), minimum=1, multiple=shards)
        )
        if min(self.prompt_buckets) < 1 or min(self.batch_buckets) < 1:
            raise ValueError("Bucket sizes must be positive; fix prompt_buckets / batch_buckets.")

        self._graphdef, params = nnx.split(model)
        self._abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
        self.num_traces = 0  # how often prefill / decode were traced (= compiled)
        self._build_jits(params)
        self._params = None
        self.update_params(params)

    # --- setup -------------------------------------------------------------------------

    def _batch_shards(self) -> int:
        if self.mesh is None:
            return 1
        spec = sh.logical_to_spec(("batch",), self.rules, self.mesh)
        axes = spec[0] if len(spec) else None
        axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        return math.prod(self.mesh.shape[a] for a in axes)

    def _build_jits(self, params) -> None:
        prefill = functools.partial(_prefill, self)
        decode = functools.partial(_decode, self)
        if self.mesh is None:
            self._param_shardings = None
            self._prefill = jax.jit(prefill, static_argnums=0)
            self._decode = jax.jit(decode, static_argnums=0, donate_argnums=2)
            return
        mesh, rules = self.mesh, self.rules

        def named(axes):
            return sh.logical_to_sharding(axes, mesh, rules)

        self._param_shardings = sh.state_shardings(params, mesh, rules)
        row, rows = named(("batch",)), named(("batch", "length"))
        repl = NamedSharding(mesh, PartitionSpec())
        cache_axes = cache_logical_axes(self.config)
        is_axes = lambda x: isinstance(x, tuple) and all(isinstance(a, str) for a in x)
        cache_sh = jax.tree.map(named, cache_axes, is_leaf=is_axes)
        self._cache_shardings = cache_sh
        state_sh = SamplingState(
            tokens=rows,
            logprobs=rows,
            sampling_logprobs=rows,
            last_tokens=row,
            positions=row,
            lengths=row,
            done=row,
            limits=row,
            row_ids=row,
            step=repl,
            cache=cache_sh,
            rng=repl,
        )
        # Argument 0 (the sampling method) is static; shardings are for the others.
        self._prefill = jax.jit(
            prefill,
            static_argnums=0,
            in_shardings=(self._param_shardings, rows, rows, row, row, repl),
            out_shardings=state_sh,
        )
        self._decode = jax.jit(
            decode,
            static_argnums=0,
            in_shardings=(self._param_shardings, state_sh),
            out_shardings=state_sh,
            donate_argnums=2,
        )

    def update_params(self, params: Any) -> None:
        """Swaps in new weights (an `nnx.State` of the same model, or the model itself).

        Shapes and dtypes must equal the current ones, so nothing recompiles.
        """
        if isinstance(params, nnx.Module):
            params = nnx.state(params)
        new = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
        if jax.tree.structure(new) != jax.tree.structure(self._abstract) or any(
            a.shape != b.shape or a.dtype != b.dtype
            for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(self._abstract))
        ):
            raise ValueError(
                "update_params got weights whose structure, shapes or dtypes differ from the "
                "sampler's model; pass the state of the same model config (nnx.state(model))."
            )
        if self._param_shardings is not None:
            params = jax.device_put(params, self._param_shardings)
        self._params = params

    # --- sampling ----------------------------------------------------------------------

    def sample(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        seed: int = 0,
        max_new_tokens: int | Sequence[int] | None = None,
        method: SamplingMethod | None = None,
    ) -> SampleOutput:
        """Samples a continuation of every prompt.

        Args:
          prompts: token-id lists (no padding), each at most the largest prompt bucket.
          seed: PRNG seed; the same seed, prompts and weights give the same tokens.
          max_new_tokens: a limit for all rows or one per prompt, each in [1, M]
            (default: M, the sampler's ``max_new_tokens``).
          method: overrides the sampler's method for this call (compiles once per
            distinct method, e.g. per temperature value).

        Returns:
          A `SampleOutput`, in the order of ``prompts``.
        """
        method = self.method if method is None else method
        if not isinstance(method, SamplingMethod):
            raise TypeError(f"method must be a SamplingMethod, got {type(method).__name__}.")
        prompts = [list(p) for p in prompts]
        n = len(prompts)
        if n == 0:
            raise ValueError("prompts is empty; pass at least one token-id list.")
        limits = self._limits(max_new_tokens, n)
        lens = np.array([len(p) for p in prompts])
        self._check_prompts(prompts, lens)

        order = np.argsort(lens, kind="stable") if n > self.batch_buckets[-1] else np.arange(n)
        chunk = self.batch_buckets[-1]
        pieces = [order[i : i + chunk] for i in range(0, n, chunk)]
        results: dict[int, tuple] = {}
        pending = None
        with sh.use_mesh(self.mesh, self.rules):
            for idx in pieces:
                arrays = self._prepare([prompts[i] for i in idx], limits[idx], idx)
                arrays = self._place(*arrays, np.uint32(seed % 2**32))
                state = self._prefill(method, self._params, *arrays)
                state = self._decode(method, self._params, state)
                out = (state.tokens, state.logprobs, state.sampling_logprobs, state.lengths)
                del state  # frees the cache once decode is done
                if pending is not None:
                    self._collect(*pending, results)
                pending = (idx, out)
            self._collect(*pending, results)

        tokens, logprobs, slogprobs = [], [], []
        for i in range(n):
            t, lp, slp = results[i]
            tokens.append(t)
            logprobs.append(lp)
            slogprobs.append(slp)
        lengths = np.array([len(t) for t in tokens], np.int64)
        eos = set(self.eos_ids)
        finished = np.array([bool(t) and t[-1] in eos for t in tokens], bool)
        return SampleOutput(tokens, logprobs, slogprobs, lengths, finished)

    def warmup(
        self,
        batch_sizes: Sequence[int] | None = None,
        prompt_lengths: Sequence[int] | None = None,
        method: SamplingMethod | None = None,
    ) -> None:
        """Compiles every (prompt bucket, batch bucket) pair that the given sizes hit.

        Defaults to all buckets. Runs each pair once with one new token.
        """
        ps = self.prompt_buckets if prompt_lengths is None else prompt_lengths
        bs = self.batch_buckets if batch_sizes is None else batch_sizes
        for p in sorted({_bucket(int(x), self.prompt_buckets) for x in ps}):
            for b in sorted({_bucket(int(x), self.batch_buckets) for x in bs}):
                self.sample([[self.pad_id] * p] * b, max_new_tokens=1, method=method)

    def _limits(self, max_new_tokens, n: int) -> np.ndarray:
        m = self.max_new_tokens
        if max_new_tokens is None:
            return np.full(n, m, np.int32)
        arr = np.asarray(max_new_tokens)
        if arr.ndim == 0:
            arr = np.full(n, int(arr))
        if arr.shape != (n,):
            raise ValueError(
                f"max_new_tokens has {arr.size} entries for {n} prompts; give one int or one "
                "per prompt."
            )
        if arr.min() < 1 or arr.max() > m:
            raise ValueError(
                f"max_new_tokens must be in [1, {m}] (the sampler's max_new_tokens), got "
                f"{int(arr.min()) if arr.min() < 1 else int(arr.max())}; build the Sampler with a "
                "larger max_new_tokens."
            )
        return arr.astype(np.int32)

    def _check_prompts(self, prompts: list[list[int]], lens: np.ndarray) -> None:
        biggest = self.prompt_buckets[-1]
        if lens.min() == 0:
            i = int(np.argmin(lens))
            raise ValueError(
                f"Prompt {i} is empty; every prompt needs at least one token (e.g. BOS)."
            )
        if lens.max() > biggest:
            i = int(np.argmax(lens))
            raise ValueError(
                f"Prompt {i} has {int(lens[i])} tokens, more than the largest prompt bucket "
                f"({biggest}); raise the Sampler's max_prompt_length or shorten the prompt."
            )
        v = self.config.vocab_size
        for i, p in enumerate(prompts):
            a = np.asarray(p)
            if a.dtype.kind not in "iu" or a.min() < 0 or a.max() >= v:
                raise ValueError(
                    f"Prompt {i} holds a value that is not a token id in [0, {v}); pass token ids, "
                    "not text or floats."
                )

    def _prepare(self, prompts: list[list[int]], limits: np.ndarray, row_ids: np.ndarray):
        """Left-pads one chunk to its buckets: tokens, mask [B, P]; limits, row ids [B]."""
        n = len(prompts)
        p = _bucket(max(len(x) for x in prompts), self.prompt_buckets)
        b = _bucket(n, self.batch_buckets)
        tokens = np.full((b, p), self.pad_id, np.int32)
        mask = np.zeros((b, p), np.int32)
        for i, x in enumerate(prompts):
            tokens[i, p - len(x) :] = x
            mask[i, p - len(x) :] = 1
        mask[n:, -1] = 1  # dummy rows: one real (pad) token, one new token
        lim = np.ones(b, np.int32)
        lim[:n] = limits
        ids = np.zeros(b, np.int32)
        ids[:n] = row_ids  # dummy rows keep 0: their draws are discarded
        return tokens, mask, lim, ids

    def _place(self, *arrays: np.ndarray) -> tuple:
        """Host inputs -> global arrays on their shardings (every host passes the same)."""
        if self.mesh is None:
            return arrays
        out = []
        for a in arrays:
            axes = ("batch", "length")[: a.ndim]
            sharding = sh.logical_to_sharding(axes, self.mesh, self.rules)
            out.append(jax.make_array_from_callback(a.shape, sharding, lambda i, a=a: a[i]))
        return tuple(out)

    def _collect(self, idx: np.ndarray, out, results: dict) -> None:
        tokens, logprobs, slogprobs, lengths = (_to_host(x) for x in out)
        for j, i in enumerate(idx):
            k = int(lengths[j])
            results[int(i)] = (
                tokens[j, :k].tolist(),
                logprobs[j, :k].tolist(),
                slogprobs[j, :k].tolist(),
            )


def _to_host(x: Array) -> np.ndarray:
    if not x.is_fully_addressable:  # multi-host: every host gets the whole batch
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


# ---------------------------------------------------------------------------------------
# The jitted functions (``self`` is bound with functools.partial: only config is read).


def _choose(
    method: SamplingMethod, logits: Array, rng: Array, step: Array, row_ids: Array
) -> tuple[Array, Array, Array]:
    """Next tokens [B], their model log-probs [B] and sampling log-probs [B]."""
    logits = logits.astype(jnp.float32)
    key = jax.random.fold_in(rng, step)
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, row_ids)
    lse = jax.nn.logsumexp(logits, axis=-1)
    if isinstance(method, Greedy):
        tokens = method.get_next_tokens(logits, keys)
        sampling_lp = jnp.zeros(tokens.shape, jnp.float32)
    else:
        adjusted = method.adjust_logits(logits)
        tokens = method.draw(adjusted, keys)
        picked = jnp.take_along_axis(adjusted, tokens[:, None], axis=-1)[:, 0]
        sampling_lp = picked - jax.nn.logsumexp(adjusted, axis=-1)
    logprobs = jnp.take_along_axis(logits, tokens[:, None], axis=-1)[:, 0] - lse
    return tokens, logprobs, sampling_lp


def _is_end(tokens: Array, eos_ids: tuple[int, ...]) -> Array:
    if not eos_ids:
        return jnp.zeros(tokens.shape, bool)
    return jnp.isin(tokens, jnp.asarray(eos_ids, jnp.int32))


def _constrain_cache(sampler: Sampler, cache: Cache) -> Cache:
    if sampler.mesh is None:
        return cache
    return jax.tree.map(jax.lax.with_sharding_constraint, cache, sampler._cache_shardings)


def _prefill(
    sampler: Sampler,
    method: SamplingMethod,
    params: Any,
    tokens: Array,
    mask: Array,
    limits: Array,
    row_ids: Array,
    seed: Array,
) -> SamplingState:
    """Prefills tokens / mask [B, P] (left-padded) and draws the first new token."""
    sampler.num_traces += 1
    model = nnx.merge(sampler._graphdef, params)
    b, p = tokens.shape
    m = sampler.max_new_tokens
    positions = default_positions(mask)
    chunk = sampler.prefill_chunk
    if chunk is None or p <= chunk:
        # One pass over P cache slots, then room for the new tokens (attention runs
        # over the P prompt slots only).
        cache = _init_cache(sampler.config, b, p, sampler.cache_dtype)
        cache = _constrain_cache(sampler, cache)
        x, cache, _ = model.hidden(tokens, segment_ids=mask, positions=positions, cache=cache)
        last = x[:, -1]
        pad_kv = lambda a: jnp.pad(a, ((0, 0), (0, m), (0, 0), (0, 0)))
        cache = Cache(
            layers=tuple(LayerCache(k=pad_kv(c.k), v=pad_kv(c.v)) for c in cache.layers),
            segment_ids=jnp.pad(cache.segment_ids, ((0, 0), (0, m))),
            end=cache.end,
        )
    else:
        # Chunks of the prompt in order, each appended to the cache (P % chunk == 0).
        cache = _init_cache(sampler.config, b, p + m, sampler.cache_dtype)
        split = lambda a: a.reshape(b, p // chunk, chunk).swapaxes(0, 1)  # [P/C, B, C]

        def step(cache, xs):
            tok_c, mask_c, pos_c = xs
            chunk_model = nnx.merge(sampler._graphdef, params)
            x, cache, _ = chunk_model.hidden(
                tok_c, segment_ids=mask_c, positions=pos_c, cache=_constrain_cache(sampler, cache)
            )
            return _constrain_cache(sampler, cache), x[:, -1]

        cache, lasts = jax.lax.scan(step, cache, (split(tokens), split(mask), split(positions)))
        last = lasts[-1]
    cache = _constrain_cache(sampler, cache)
    logits = model.logits(last)  # [B, V] at the last prompt slot
    rng = jax.random.key(seed)
    first, lp, slp = _choose(method, logits, rng, jnp.int32(0), row_ids)
    done = _is_end(first, sampler.eos_ids) | (limits <= 1)
    column = lambda x, dtype, fill: jnp.full((b, m), fill, dtype).at[:, 0].set(x)
    return SamplingState(
        tokens=column(first, jnp.int32, sampler.pad_id),
        logprobs=column(lp, jnp.float32, 0.0),
        sampling_logprobs=column(slp, jnp.float32, 0.0),
        last_tokens=first,
        positions=jnp.sum(mask, axis=1).astype(jnp.int32),
        lengths=jnp.ones((b,), jnp.int32),
        done=done,
        limits=limits,
        row_ids=row_ids,
        step=jnp.int32(1),
        cache=cache,
        rng=rng,
    )


def _decode(
    sampler: Sampler, method: SamplingMethod, params: Any, state: SamplingState
) -> SamplingState:
    """Runs the decode loop until every row is done or the buffer is full."""
    sampler.num_traces += 1
    m = state.tokens.shape[1]

    def cond(s: SamplingState) -> Array:
        return (s.step < m) & ~jnp.all(s.done) & (s.cache.end < s.cache.max_length)

    def body(s: SamplingState) -> SamplingState:
        model = nnx.merge(sampler._graphdef, params)
        b = s.last_tokens.shape[0]
        logits, cache = model(
            s.last_tokens[:, None],
            segment_ids=jnp.ones((b, 1), jnp.int32),
            positions=s.positions[:, None],
            cache=s.cache,
        )
        tok, lp, slp = _choose(method, logits[:, 0], s.rng, s.step, s.row_ids)
        active = ~s.done
        tok = jnp.where(active, tok, sampler.pad_id)
        lp = jnp.where(active, lp, 0.0)
        slp = jnp.where(active, slp, 0.0)
        put = lambda buf, x: jax.lax.dynamic_update_slice_in_dim(buf, x[:, None], s.step, axis=1)
        lengths = s.lengths + active.astype(jnp.int32)
        done = s.done | _is_end(tok, sampler.eos_ids) | (lengths >= s.limits)
        return s.replace(
            tokens=put(s.tokens, tok),
            logprobs=put(s.logprobs, lp),
            sampling_logprobs=put(s.sampling_logprobs, slp),
            last_tokens=tok,
            positions=s.positions + 1,
            lengths=lengths,
            done=done,
            step=s.step + 1,
            cache=_constrain_cache(sampler, cache),
        )

    return jax.lax.while_loop(cond, body, state)


# ---------------------------------------------------------------------------------------
# Convenience API

_SAMPLERS: collections.OrderedDict = collections.OrderedDict()
_MAX_CACHED_SAMPLERS = 4


def generate(
    model: Llama,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    eos_ids: int | Sequence[int] | None = None,
) -> list[list[int]]:
    """Generates continuations of token-id prompts; HF ``generate`` in one call.

    Args:
      model: a `Llama`.
      prompts: token-id lists (unpadded, any lengths up to the model's
        ``max_position_embeddings``).
      max_new_tokens: at most this many new tokens per prompt (>= 1).
      temperature: 0 for greedy decoding, else the sampling temperature.
      top_p: nucleus mass in (0, 1]; 1 = no cut.
      top_k: keep the k most likely tokens; 0 = no cut.
      seed: PRNG seed (same seed, same output).
      eos_ids: end ids (default: ``model.config.eos_token_id``; ``()`` for none).

    Returns:
      For each prompt, the new tokens up to and not including the first end id.

    Samplers are cached per model graph, so repeated calls with the same model shape
    and lengths in the same buckets do not recompile; for a long run, build a `Sampler`.
    """
    if not isinstance(max_new_tokens, int | np.integer) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}.")
    method = make_method(temperature, top_p, top_k)
    graphdef, params = nnx.split(model)
    m = max(16, 1 << (int(max_new_tokens) - 1).bit_length())
    eos = _normalize_eos(model.config.eos_token_id if eos_ids is None else eos_ids)
    key = (graphdef, m, eos)
    sampler = _SAMPLERS.pop(key, None)
    if sampler is None:
        longest = max(model.config.max_position_embeddings - m, 32)
        sampler = Sampler(model, max_new_tokens=m, max_prompt_length=longest, eos_ids=eos)
    _SAMPLERS[key] = sampler
    while len(_SAMPLERS) > _MAX_CACHED_SAMPLERS:
        _SAMPLERS.popitem(last=False)
    try:
        sampler.update_params(params)
        out = sampler.sample(prompts, seed=seed, max_new_tokens=max_new_tokens, method=method)
    finally:
        sampler._params = None  # do not keep the caller's weights alive
    return out.completions()
