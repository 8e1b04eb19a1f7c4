"""Batched autoregressive sampling, the host side: `Sampler` (buckets, shardings, chunks).

The device side — the pure prefill and decode functions it jits — is `sampling.loop`.
How a call to `Sampler.sample` runs:

1. Prompts are LEFT-padded to a prompt-length bucket ``P`` and the batch is padded to
   a batch-size bucket ``B`` with dummy rows (dropped from the results), so a long
   run compiles once per (``P``, ``B``) pair and never again (`Sampler.warmup` does
   all pairs up front). Batches larger than the largest bucket are split into chunks
   (sorted by prompt length, so a chunk pads little).
2. `loop.prefill` runs the whole padded prompt through the model in one forward, writing
   the KV cache at slots ``[0, P)``, and draws the first new token from the logits of
   the last slot. The cache then gets ``max_new_tokens`` empty slots appended.
3. `loop.decode` is one `jax.lax.while_loop` over a `SamplingState` (the KV cache, the
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

Determinism: the draw of prompt ``i`` at new-token index ``t`` uses the key
``fold_in(fold_in(key(seed), t), r_i)`` with ``r_i`` its row seed (``row_seeds[i]``, by
default ``i``), so for a fixed seed, prompts and weights the output does not depend on the
batch bucket, on chunking, or on the other prompts in the batch (up to floating-point
differences between compiled shapes); with per-row seeds (e.g. one per search) a prompt's
samples do not depend on its position in the call either.

Several processes (`mucode_jax.multihost`): every process calls `Sampler.sample` with the same
prompts; each places only its own devices' rows and gets every row back. A program (method,
prompt bucket, batch bucket) is compiled ahead of its first run and every process waits at a
barrier before running it, so one process compiling slowly never leaves the others waiting
inside a collective (CPU collectives give up after 30 s).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from mucode_jax import multihost
from mucode_jax import sharding as sh
from mucode_jax.models.llama import Llama, cache_logical_axes
from mucode_jax.sampling import loop
from mucode_jax.sampling.loop import SamplingState
from mucode_jax.sampling.methods import Greedy, SamplingMethod, make_method

Array = jax.Array


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
      compact_every: decode in phases of this many steps; after a phase in which at most
        half of the batch bucket is still running, the running rows move to the smallest
        batch bucket that holds them (`loop.compact`), so finished rows stop costing
        compute. None: one decode loop per call. `stats` counts the row-steps computed and
        those that produced a token.
      share_prefill: a chunk of the call that repeats prompts (the searches of one problem
        share their first prompt, the candidates of one turn share theirs) prefills each
        distinct prompt once, in the smallest batch bucket that holds them, and gathers its
        cache to the rows that continue it (`loop.prefill_shared`); every row still draws
        with its own seed, so the tokens are those of the repeated prefill. `stats` counts
        ``prefill_rows`` (batch rows prefilled) and ``prompt_rows`` (the rows asked for).
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
        compact_every: int | None = 32,
        share_prefill: bool = True,
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

        if compact_every is not None and int(compact_every) < 1:
            raise ValueError(f"compact_every must be >= 1 or None, got {compact_every}.")
        self.compact_every = None if compact_every is None else int(compact_every)
        self.share_prefill = bool(share_prefill)
        self.stats = _new_stats()
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
        self._compiled: set[tuple] = set()  # signatures compiled (several processes)
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

    @property
    def num_traces(self) -> int:
        """How often prefill / decode were traced (= compiled)."""
        return self._spec.traces.n

    def _build_jits(self, params) -> None:
        cache_sh = None
        if self.mesh is not None:
            named = lambda axes: sh.logical_to_sharding(axes, self.mesh, self.rules)
            is_axes = lambda x: isinstance(x, tuple) and all(isinstance(a, str) for a in x)
            cache_sh = jax.tree.map(named, cache_logical_axes(self.config), is_leaf=is_axes)
        self._spec = loop.LoopSpec(
            graphdef=self._graphdef,
            config=self.config,
            max_new_tokens=self.max_new_tokens,
            eos_ids=self.eos_ids,
            pad_id=self.pad_id,
            cache_dtype=self.cache_dtype,
            prefill_chunk=self.prefill_chunk,
            cache_shardings=cache_sh,
        )
        prefill = functools.partial(loop.prefill, self._spec)
        shared = functools.partial(loop.prefill_shared, self._spec)
        decode = functools.partial(loop.decode, self._spec)
        if self.mesh is None:
            self._param_shardings = None
            self._prefill = jax.jit(prefill, static_argnums=0)
            self._prefill_shared = jax.jit(shared, static_argnums=0)
            self._decode = jax.jit(decode, static_argnums=(0, 1), donate_argnums=3)
            self._compact = jax.jit(loop.compact)
            return
        mesh, rules = self.mesh, self.rules

        def named(axes):
            return sh.logical_to_sharding(axes, mesh, rules)

        self._param_shardings = sh.state_shardings(params, mesh, rules)
        row, rows = named(("batch",)), named(("batch", "length"))
        repl = NamedSharding(mesh, PartitionSpec())
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
        self._prefill_shared = jax.jit(
            shared,
            static_argnums=0,
            in_shardings=(self._param_shardings, rows, rows, row, row, row, repl),
            out_shardings=state_sh,
        )
        self._decode = jax.jit(
            decode,
            static_argnums=(0, 1),
            in_shardings=(self._param_shardings, state_sh, repl),
            out_shardings=state_sh,
            donate_argnums=3,
        )
        self._compact = jax.jit(loop.compact, in_shardings=(state_sh, repl), out_shardings=state_sh)

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
        row_seeds: Sequence[int] | None = None,
    ) -> SampleOutput:
        """Samples a continuation of every prompt.

        Args:
          prompts: token-id lists (no padding), each at most the largest prompt bucket.
          seed: PRNG seed; the same seed, prompts and weights give the same tokens.
          row_seeds: one int in [0, 2**31) per prompt: prompt ``i``'s random stream is
            ``(seed, row_seeds[i])``, whatever else is in the call (default: its index ``i``).
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
        rows = _row_seeds(row_seeds, n)
        lens = np.array([len(p) for p in prompts])
        self._check_prompts(prompts, lens)

        order = np.argsort(lens, kind="stable") if n > self.batch_buckets[-1] else np.arange(n)
        chunk = self.batch_buckets[-1]
        pieces = [order[i : i + chunk] for i in range(0, n, chunk)]
        results: dict[int, tuple] = {}
        pending = None
        with sh.use_mesh(self.mesh, self.rules):
            for idx in pieces:
                state = self._start(method, [prompts[i] for i in idx], limits[idx], rows[idx], seed)
                owner = np.full(state.done.shape[0], -1)  # caller index per batch row; -1: dummy
                owner[: len(idx)] = idx
                self.stats["row_steps"] += len(owner)  # the prefill drew one token per row
                if self.compact_every is None:
                    m = np.int32(self.max_new_tokens)
                    state = self._call("decode", self._decode, method, None, self._params, state, m)
                    steps = int(multihost.to_host(state.step)) - 1
                    self.stats["row_steps"] += len(owner) * steps
                    self._count_tokens(state, np.flatnonzero(owner >= 0))
                else:
                    state, owner = self._decode_in_phases(method, state, owner, results)
                out = (state.tokens, state.logprobs, state.sampling_logprobs, state.lengths)
                del state  # frees the cache once decode is done
                if pending is not None:
                    self._collect(*pending, results)
                pending = (owner, out)
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

        Defaults to all buckets. Runs each pair once with one new token, and compiles the
        compaction gathers from each batch bucket to the smaller ones.
        """
        ps = self.prompt_buckets if prompt_lengths is None else prompt_lengths
        bs = self.batch_buckets if batch_sizes is None else batch_sizes
        method = self.method if method is None else method
        for p in sorted({_bucket(int(x), self.prompt_buckets) for x in ps}):
            for b in sorted({_bucket(int(x), self.batch_buckets) for x in bs}):
                # Distinct prompts: the plain prefill (repeats would take `prefill_shared`).
                distinct = [
                    [self.pad_id] * (p - 1) + [i % self.config.vocab_size] for i in range(b)
                ]
                self.sample(distinct, max_new_tokens=1, method=method)
                if self.compact_every is None:
                    continue
                ones = np.ones(b, np.int32)
                arrays = self._prepare([[self.pad_id] * p] * b, ones, np.arange(b))
                with sh.use_mesh(self.mesh, self.rules):
                    arrays = self._place(*arrays, np.uint32(0))
                    state = self._call("prefill", self._prefill, method, self._params, *arrays)
                    for x in self.batch_buckets:  # the gathers compaction from this bucket uses
                        if x <= b // 2:
                            keep = self._replicated(np.arange(x, dtype=np.int32))
                            self._call("compact", self._compact, state, keep)
                    for w in self._windows(p):  # the later phases' decode windows
                        stop = np.int32(2)
                        state = self._call(
                            "decode", self._decode, method, w, self._params, state, stop
                        )

    def _start(self, method, prompts, limits, row_ids, seed: int):
        """Prefill of one chunk (each distinct prompt once when that saves a batch bucket)."""
        seed = np.uint32(seed % 2**32)
        tokens, mask, lim, ids = self._prepare(prompts, limits, row_ids)
        self.stats["prompt_rows"] += len(prompts)
        if self.share_prefill:
            index: dict[tuple[int, ...], int] = {}
            source = [index.setdefault(tuple(p), len(index)) for p in prompts]
            distinct = [list(k) for k in index]  # in order of first appearance
            if _bucket(len(distinct), self.batch_buckets) < tokens.shape[0]:
                u_tokens, u_mask, _, _ = self._prepare(
                    distinct, limits[: len(distinct)], row_ids[: len(distinct)]
                )
                self.stats["prefill_rows"] += u_tokens.shape[0]
                src = np.zeros(tokens.shape[0], np.int32)  # dummy rows continue prompt 0
                src[: len(source)] = source
                arrays = self._place(u_tokens, u_mask, src, lim, ids, seed)
                return self._call(
                    "prefill_shared", self._prefill_shared, method, self._params, *arrays
                )
        self.stats["prefill_rows"] += tokens.shape[0]
        arrays = self._place(tokens, mask, lim, ids, seed)
        return self._call("prefill", self._prefill, method, self._params, *arrays)

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
        ids[:n] = row_ids  # the rows' seeds; dummy rows keep 0 (their draws are discarded)
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

    def _call(self, name: str, fn, *args):
        """``fn(*args)``; on several processes a new signature is compiled first, then every
        process waits at a barrier before running it.

        Compilation times differ between processes (one may be starved of CPU); without the
        barrier, the first to finish waits inside the program's first collective, and CPU
        (gloo) collectives give up after 30 s. The barrier has no such limit.
        """
        if jax.process_count() > 1:
            signature = (name, *(_signature(x) for x in jax.tree.leaves(args)))
            if signature not in self._compiled:
                fn.lower(*args).compile()  # fills the jit's caches: the call below reuses it
                multihost.barrier(f"sampler {name} compiled")
                self._compiled.add(signature)
        return fn(*args)

    def _decode_in_phases(self, method, state, owner: np.ndarray, results: dict):
        """Decode ``compact_every`` steps at a time; between phases, collect finished rows
        and gather the running ones into a smaller bucket when at most half still run."""
        m, step = self.max_new_tokens, 1
        while True:
            stop = min(m, step + self.compact_every)
            window = self._window(state.cache.max_length, stop)
            state = self._call(
                "decode", self._decode, method, window, self._params, state, np.int32(stop)
            )
            done = multihost.to_host(state.done)
            new_step = int(multihost.to_host(state.step))
            self.stats["row_steps"] += len(owner) * (new_step - step)
            step = new_step
            live = np.flatnonzero(~done & (owner >= 0))
            if live.size == 0 or step >= m:
                self._count_tokens(state, np.flatnonzero(owner >= 0))
                return state, owner
            b = _bucket(live.size, self.batch_buckets)
            if b > len(owner) // 2:
                continue
            finished = np.flatnonzero(done & (owner >= 0))
            out = (state.tokens, state.logprobs, state.sampling_logprobs, state.lengths)
            self._collect(owner, out, results, rows=finished)
            self._count_tokens(state, finished)
            spare = np.flatnonzero(done)[: b - live.size]  # finished rows pad the new bucket
            keep = np.concatenate([live, spare]).astype(np.int32)
            state = self._call("compact", self._compact, state, self._replicated(keep))
            owner = np.concatenate([owner[live], np.full(spare.size, -1)])

    def _window(self, slots: int, stop: int) -> int | None:
        """The cache slots a decode phase ending at step ``stop`` attends over: the prompt
        bucket plus the new-token columns up to ``stop`` rounded up to a quarter of M (so at
        most four decode shapes per bucket pair); None when that is the whole cache."""
        m = self.max_new_tokens
        quarter = -(-m // 4)
        prompt = slots - m  # the prompt bucket (the cache holds P + M slots)
        window = prompt + -(-(stop - 1) // quarter) * quarter
        return None if window >= slots else window

    def _windows(self, prompt_bucket: int) -> list[int | None]:
        """Every window `_window` can return for this prompt bucket."""
        slots = prompt_bucket + self.max_new_tokens
        if self.compact_every is None:
            return [None]
        stops = range(
            1 + self.compact_every, self.max_new_tokens + self.compact_every, self.compact_every
        )
        return sorted(
            {self._window(slots, min(s, self.max_new_tokens)) for s in stops},
            key=lambda w: w or slots,
        )

    def _count_tokens(self, state, rows: np.ndarray) -> None:
        """Add the tokens of batch rows ``rows`` (real prompts) to the useful row-steps."""
        self.stats["useful_row_steps"] += int(multihost.to_host(state.lengths)[rows].sum())

    def reset_stats(self) -> dict[str, int]:
        """Returns `stats` (row-steps computed, and those that produced a prompt's token) and
        starts counting anew."""
        out, self.stats = self.stats, _new_stats()
        return out

    def _replicated(self, a: np.ndarray):
        if self.mesh is None:
            return a
        sharding = NamedSharding(self.mesh, PartitionSpec())
        return jax.make_array_from_callback(a.shape, sharding, lambda i: a[i])

    def _collect(self, owner: np.ndarray, out, results: dict, rows=None) -> None:
        """Results of batch rows ``rows`` (default: every row with an owner >= 0)."""
        tokens, logprobs, slogprobs, lengths = (multihost.to_host(x) for x in out)
        rows = np.flatnonzero(owner >= 0) if rows is None else rows
        for j in rows:
            i = owner[j]
            k = int(lengths[j])
            results[int(i)] = (
                tokens[j, :k].tolist(),
                logprobs[j, :k].tolist(),
                slogprobs[j, :k].tolist(),
            )


def _new_stats() -> dict[str, int]:
    return {"row_steps": 0, "useful_row_steps": 0, "prefill_rows": 0, "prompt_rows": 0}


def _row_seeds(row_seeds: Sequence[int] | None, n: int) -> np.ndarray:
    if row_seeds is None:
        return np.arange(n, dtype=np.int32)
    arr = np.asarray(row_seeds)
    if arr.shape != (n,) or arr.dtype.kind not in "iu":
        raise ValueError(f"row_seeds must be {n} ints (one per prompt), got shape {arr.shape}.")
    if n and (arr.min() < 0 or arr.max() >= 2**31):
        raise ValueError("row_seeds must lie in [0, 2**31); reduce them, e.g. modulo 2**31.")
    return arr.astype(np.int32)


def _signature(x: Any) -> Any:
    """What decides a compiled program: an array's shape and dtype, a static value itself."""
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return (tuple(x.shape), str(x.dtype))
    return x


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
