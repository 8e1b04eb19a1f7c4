"""The sampler's device side: pure functions that `Sampler` jits (prefill, then the decode loop).

`LoopSpec` is everything they read besides their array arguments — the model graph, the
buffer length, end and pad ids, the cache's dtype and shardings — fixed when the `Sampler` is
built and bound with ``functools.partial``, so the jitted functions take only
``(method, params, arrays...)`` and new weights of the same shapes never recompile.

* `prefill`: the whole left-padded prompt [B, P] through the model (in chunks of
  ``prefill_chunk`` when it is longer, a `jax.lax.scan`), the KV cache written at slots
  ``[0, P)``, room for ``M`` new tokens appended, the first token drawn. `prefill_shared`
  does the same for a batch that repeats prompts (the searches of one problem share their
  first prompt; the candidates of one turn share theirs) with each distinct prompt
  prefilled once and its cache gathered to the rows that continue it.
* `decode`: one `jax.lax.while_loop` over a `SamplingState` (donated by the caller, so the
  cache is updated in place) until every row is done, the buffer is full, or a step the host
  chose (it decodes in phases, and between phases `compact` gathers the rows still running
  into a smaller batch bucket, so finished rows stop costing compute). Every row writes
  its next token at cache slot ``cache.end`` (the same for the batch); RoPE positions are per
  row (real tokens so far), as HF `generate` uses for left-padded batches.

Random stream: the draw of a row at new-token index ``t`` uses
``fold_in(fold_in(key(seed), t), row_seed)``; with per-row seeds a row's samples depend only on
its seed, its prompt and the weights, never on the other rows of its batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx, struct

from mucode_jax.models.llama import (
    KEY_SLOT_AXIS,
    VALUE_SLOT_AXIS,
    Cache,
    LayerCache,
    LlamaConfig,
    default_positions,
    init_cache,
)
from mucode_jax.sampling.methods import Greedy, SamplingMethod

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
      row_ids: [B] int32 each row's seed (by default its prompt's index in the caller's list).
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


class TraceCount:
    """How often the loop functions were traced (= compiled), for no-recompilation checks."""

    def __init__(self):
        self.n = 0


@dataclasses.dataclass(frozen=True, eq=False)
class LoopSpec:
    """What prefill and decode read besides their arguments (fixed per `Sampler`)."""

    graphdef: Any
    config: LlamaConfig
    max_new_tokens: int
    eos_ids: tuple[int, ...]
    pad_id: int
    cache_dtype: Any
    prefill_chunk: int | None
    cache_shardings: Any = None  # a Cache of NamedShardings, or None without a mesh
    traces: TraceCount = dataclasses.field(default_factory=TraceCount)


def choose(
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


def is_end(tokens: Array, eos_ids: tuple[int, ...]) -> Array:
    if not eos_ids:
        return jnp.zeros(tokens.shape, bool)
    return jnp.isin(tokens, jnp.asarray(eos_ids, jnp.int32))


def constrain_cache(spec: LoopSpec, cache: Cache) -> Cache:
    if spec.cache_shardings is None:
        return cache
    return jax.tree.map(jax.lax.with_sharding_constraint, cache, spec.cache_shardings)


def prefill_cache(spec: LoopSpec, params: Any, tokens: Array, mask: Array) -> tuple[Cache, Array]:
    """Prefills tokens / mask [B, P] (left-padded): the cache (room for M new tokens) and the
    float32 logits [B, V] at each row's last prompt slot."""
    model = nnx.merge(spec.graphdef, params)
    b, p = tokens.shape
    m = spec.max_new_tokens
    positions = default_positions(mask)
    chunk = spec.prefill_chunk
    if chunk is None or p <= chunk:
        # One pass over P cache slots (attention over the prompt only), then room for the
        # new tokens.
        cache = constrain_cache(spec, init_cache(spec.config, b, p, spec.cache_dtype))
        x, cache, _ = model.hidden(
            tokens, segment_ids=mask, positions=positions, cache=cache, last_only=True
        )
        last = x[:, -1]
        pad = lambda a, axis: jnp.pad(a, [(0, m) if i == axis else (0, 0) for i in range(4)])
        cache = Cache(
            layers=tuple(
                LayerCache(k=pad(c.k, KEY_SLOT_AXIS), v=pad(c.v, VALUE_SLOT_AXIS))
                for c in cache.layers
            ),
            segment_ids=jnp.pad(cache.segment_ids, ((0, 0), (0, m))),
            end=cache.end,
        )
    else:
        # Chunks of the prompt in order, each appended to the cache (P % chunk == 0).
        cache = init_cache(spec.config, b, p + m, spec.cache_dtype)
        split = lambda a: a.reshape(b, p // chunk, chunk).swapaxes(0, 1)  # [P/C, B, C]

        def step(cache, xs):
            tok_c, mask_c, pos_c = xs
            chunk_model = nnx.merge(spec.graphdef, params)
            x, cache, _ = chunk_model.hidden(
                tok_c,
                segment_ids=mask_c,
                positions=pos_c,
                cache=constrain_cache(spec, cache),
                last_only=True,
            )
            return constrain_cache(spec, cache), x[:, -1]

        cache, lasts = jax.lax.scan(step, cache, (split(tokens), split(mask), split(positions)))
        last = lasts[-1]
    return constrain_cache(spec, cache), model.logits(last)


def start(
    spec: LoopSpec,
    method: SamplingMethod,
    cache: Cache,
    logits: Array,
    lengths: Array,
    limits: Array,
    row_ids: Array,
    seed: Array,
) -> SamplingState:
    """The decode state after a prefill: the first new token drawn from ``logits`` [B, V];
    ``lengths`` [B] are the prompts' real lengths (the next RoPE position)."""
    b, m = logits.shape[0], spec.max_new_tokens
    rng = jax.random.key(seed)
    first, lp, slp = choose(method, logits, rng, jnp.int32(0), row_ids)
    done = is_end(first, spec.eos_ids) | (limits <= 1)
    column = lambda x, dtype, fill: jnp.full((b, m), fill, dtype).at[:, 0].set(x)
    return SamplingState(
        tokens=column(first, jnp.int32, spec.pad_id),
        logprobs=column(lp, jnp.float32, 0.0),
        sampling_logprobs=column(slp, jnp.float32, 0.0),
        last_tokens=first,
        positions=lengths.astype(jnp.int32),
        lengths=jnp.ones((b,), jnp.int32),
        done=done,
        limits=limits,
        row_ids=row_ids,
        step=jnp.int32(1),
        cache=cache,
        rng=rng,
    )


def prefill(
    spec: LoopSpec,
    method: SamplingMethod,
    params: Any,
    tokens: Array,
    mask: Array,
    limits: Array,
    row_ids: Array,
    seed: Array,
) -> SamplingState:
    """Prefills tokens / mask [B, P] (left-padded) and draws the first new token."""
    spec.traces.n += 1
    cache, logits = prefill_cache(spec, params, tokens, mask)
    return start(spec, method, cache, logits, jnp.sum(mask, axis=1), limits, row_ids, seed)


def prefill_shared(
    spec: LoopSpec,
    method: SamplingMethod,
    params: Any,
    tokens: Array,
    mask: Array,
    source: Array,
    limits: Array,
    row_ids: Array,
    seed: Array,
) -> SamplingState:
    """`prefill` of a batch whose rows repeat prompts: tokens / mask [U, P] hold each distinct
    prompt once and batch row ``r`` [B] continues prompt ``source[r]``. The U prompts are
    prefilled once; their caches and last logits are gathered to the B rows, which then
    draw with their own seeds exactly as `prefill` of the repeated batch would."""
    spec.traces.n += 1
    cache, logits = prefill_cache(spec, params, tokens, mask)
    take = lambda a: jnp.take(a, source, axis=0)
    cache = constrain_cache(spec, take_cache(cache, source))
    lengths = take(jnp.sum(mask, axis=1))
    return start(spec, method, cache, take(logits), lengths, limits, row_ids, seed)


def decode(
    spec: LoopSpec,
    method: SamplingMethod,
    window: int | None,
    params: Any,
    state: SamplingState,
    stop: Array,
) -> SamplingState:
    """Runs the decode loop until every row is done, the buffer is full, or ``step == stop``
    (a traced [] int32: the host decodes in phases between which it may `compact`).

    ``window`` (static): attend over the cache's first ``window`` slots only — the loop runs on
    that slice of the cache, which is written back when it ends, so a phase early in a long
    generation does not read the unwritten slots after it. The host picks a window that
    holds every slot the phase writes (``cache.end + stop - step``); None: the whole cache.
    """
    spec.traces.n += 1
    m = state.tokens.shape[1]
    full = state.cache
    if window is not None and window < full.max_length:
        state = state.replace(cache=constrain_cache(spec, window_cache(full, window)))

    def cond(s: SamplingState) -> Array:
        going = (s.step < m) & (s.step < stop) & ~jnp.all(s.done)
        return going & (s.cache.end < s.cache.max_length)

    def body(s: SamplingState) -> SamplingState:
        model = nnx.merge(spec.graphdef, params)
        b = s.last_tokens.shape[0]
        logits, cache = model(
            s.last_tokens[:, None],
            segment_ids=jnp.ones((b, 1), jnp.int32),
            positions=s.positions[:, None],
            cache=s.cache,
        )
        tok, lp, slp = choose(method, logits[:, 0], s.rng, s.step, s.row_ids)
        active = ~s.done
        tok = jnp.where(active, tok, spec.pad_id)
        lp = jnp.where(active, lp, 0.0)
        slp = jnp.where(active, slp, 0.0)
        put = lambda buf, x: jax.lax.dynamic_update_slice_in_dim(buf, x[:, None], s.step, axis=1)
        lengths = s.lengths + active.astype(jnp.int32)
        done = s.done | is_end(tok, spec.eos_ids) | (lengths >= s.limits)
        return s.replace(
            tokens=put(s.tokens, tok),
            logprobs=put(s.logprobs, lp),
            sampling_logprobs=put(s.sampling_logprobs, slp),
            last_tokens=tok,
            positions=s.positions + 1,
            lengths=lengths,
            done=done,
            step=s.step + 1,
            cache=constrain_cache(spec, cache),
        )

    state = jax.lax.while_loop(cond, body, state)
    if state.cache.max_length < full.max_length:
        state = state.replace(cache=constrain_cache(spec, unwindow_cache(full, state.cache)))
    return state


def window_cache(cache: Cache, window: int) -> Cache:
    """The cache's first ``window`` slots (a copy)."""
    head = lambda a, axis: jax.lax.slice_in_dim(a, 0, window, axis=axis)
    return Cache(
        layers=tuple(
            LayerCache(k=head(c.k, KEY_SLOT_AXIS), v=head(c.v, VALUE_SLOT_AXIS))
            for c in cache.layers
        ),
        segment_ids=cache.segment_ids[:, :window],
        end=cache.end,
    )


def unwindow_cache(full: Cache, window: Cache) -> Cache:
    """``full`` with its first slots replaced by ``window``'s (in place when donated)."""
    put = lambda a, b, axis: jax.lax.dynamic_update_slice_in_dim(a, b, 0, axis=axis)
    return Cache(
        layers=tuple(
            LayerCache(k=put(f.k, w.k, KEY_SLOT_AXIS), v=put(f.v, w.v, VALUE_SLOT_AXIS))
            for f, w in zip(full.layers, window.layers)
        ),
        segment_ids=jax.lax.dynamic_update_slice_in_dim(
            full.segment_ids, window.segment_ids, 0, axis=1
        ),
        end=window.end,
    )


def compact(state: SamplingState, rows: Array) -> SamplingState:
    """The state of the batch rows ``rows`` [B'] (in that order): every per-row array and the
    cache gathered along the batch axis; the step, the cache end and the key are shared."""
    take = lambda a: jnp.take(a, rows, axis=0)
    return state.replace(
        tokens=take(state.tokens),
        logprobs=take(state.logprobs),
        sampling_logprobs=take(state.sampling_logprobs),
        last_tokens=take(state.last_tokens),
        positions=take(state.positions),
        lengths=take(state.lengths),
        done=take(state.done),
        limits=take(state.limits),
        row_ids=take(state.row_ids),
        cache=take_cache(state.cache, rows),
    )


def take_cache(cache: Cache, rows: Array) -> Cache:
    """The cache of batch rows ``rows`` (gathered along the batch axis; same end)."""
    take = lambda a: jnp.take(a, rows, axis=0)
    return Cache(
        layers=tuple(LayerCache(k=take(c.k), v=take(c.v)) for c in cache.layers),
        segment_ids=take(cache.segment_ids),
        end=cache.end,
    )
