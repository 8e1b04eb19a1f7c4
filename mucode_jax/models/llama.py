"""Llama 3.x in Flax NNX, numerically equal to HF `transformers` `LlamaForCausalLM`.

Axis letters used in shapes, einsum strings and parameter names:
  B batch, T time (queries), S time (keys / cache slots), D embed, N query heads,
  K key-value heads, G query heads per kv head (N = K*G), H head dim, F mlp, V vocab, L layers.

Attention masking is one rule for every case (padding, packing, caching):
query i may attend key j iff ``seg[j] == seg[i] != 0`` and ``slot[j] <= slot[i]``, where
``seg`` are segment ids (0 = padding; a plain batch uses its attention mask as the
segment ids) and ``slot`` is the index in the sequence or in the KV cache. Positions
for RoPE are separate inputs: by default the running count of real tokens
(``cumsum(mask) - 1``), which is what HF `generate` uses for left-padded prompts.

Parameters are stored in ``config.param_dtype`` and cast to ``config.dtype`` for
compute; RMSNorm statistics, softmax and the returned logits are float32.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from mucode_jax.sharding import shard

Array = jax.Array


ATTENTION_IMPLS = ("auto", "xla", "cudnn", "grouped")
REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "dots_all": jax.checkpoint_policies.dots_saveable,
}
# "auto": the train step's compiler picks "dots" where its planned memory fits the device and
# "full" otherwise (`training.steps.compile_step`); anywhere else it means "full".
REMAT_CHOICES = (*REMAT_POLICIES, "auto")
_REMAT_OVERRIDE: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mucode_jax_remat_policy", default=None
)


@contextlib.contextmanager
def remat_policy_override(name: str | None):
    """Models traced inside use remat policy ``name`` instead of their config's (None: theirs).

    The step compiler traces one program per candidate policy under it; the policy is read at
    trace time, so a program already traced keeps the policy it was traced with.
    """
    if name is not None and name not in REMAT_POLICIES:
        raise ValueError(f"remat policy {name!r} is unknown; use one of {list(REMAT_POLICIES)}.")
    token = _REMAT_OVERRIDE.set(name)
    try:
        yield
    finally:
        _REMAT_OVERRIDE.reset(token)


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Shape and numerics of a Llama model (field names follow HF `LlamaConfig`)."""

    vocab_size: int
    hidden_size: int  # D
    intermediate_size: int  # F
    num_hidden_layers: int  # L
    num_attention_heads: int  # N
    num_key_value_heads: int  # K
    head_dim: int  # H
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500_000.0
    # HF `rope_scaling` / `rope_parameters` of type "llama3", or None.
    rope_scaling: tuple[tuple[str, Any], ...] | None = None
    max_position_embeddings: int = 131_072
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    bos_token_id: int | None = 128_000
    eos_token_id: int | tuple[int, ...] | None = 128_001
    pad_token_id: int | None = None
    param_dtype: Any = jnp.float32
    dtype: Any = jnp.float32  # compute dtype
    remat: bool = False  # rematerialise each decoder layer in the backward pass
    # What a rematerialised layer keeps for the backward pass: "full" (its input only),
    # "dots" (also the results of its matmuls without batch dimensions: the projections and
    # the MLP, not the attention scores), "dots_all" (every matmul result), "auto" ("dots"
    # where the compiled train step fits the device's memory, else "full"; see
    # `training.steps.compile_step`).
    remat_policy: str = "full"
    # How attention without a cache (training, scoring, prefill) is computed (`attention`):
    # "auto" (cuDNN's fused flash kernel on a CUDA GPU where it applies: bf16/fp16, head_dim
    # a multiple of 8; XLA's `jax.nn.dot_product_attention` otherwise), "xla" (always XLA's,
    # which builds the [B, N, T, S] scores), "cudnn" (always cuDNN's; an error where it does
    # not apply) or "grouped" (each (batch, kv head) as two plain matmuls in the decode
    # kernel's layout, `cached_attention`: on XLA:CPU about half the attention time fwd+bwd,
    # a train step ~10 % faster (docs/benchmarks.md); equal to float32 rounding, not bitwise).
    attention: str = "auto"

    def __post_init__(self):
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}; fix the model config."
            )
        if self.remat_policy not in REMAT_CHOICES:
            raise ValueError(
                f"remat_policy={self.remat_policy!r} is unknown; use one of "
                f"{', '.join(map(repr, REMAT_CHOICES))}."
            )
        if self.attention not in ATTENTION_IMPLS:
            raise ValueError(
                f"attention={self.attention!r} is unknown; use one of "
                f"{', '.join(map(repr, ATTENTION_IMPLS))}."
            )
        if isinstance(self.rope_scaling, Mapping):
            object.__setattr__(self, "rope_scaling", tuple(sorted(self.rope_scaling.items())))
        if self.rope_scaling is not None:
            kind = dict(self.rope_scaling).get("rope_type", dict(self.rope_scaling).get("type"))
            if kind not in ("llama3", "default", None):
                raise ValueError(
                    f"rope scaling of type {kind!r} is not supported; only 'llama3' (Llama 3.1/3.2) "
                    "and no scaling are."
                )

    def replace(self, **kw) -> LlamaConfig:
        return dataclasses.replace(self, **kw)

    # --- presets (values from each model's HF config.json) -------------------------------

    @classmethod
    def llama3_2_1b(cls, **kw) -> LlamaConfig:
        """meta-llama/Llama-3.2-1B(-Instruct): 1,235,814,400 parameters, tied embeddings."""
        return cls(
            vocab_size=128_256,
            hidden_size=2048,  # hidden_size
            intermediate_size=8192,  # intermediate_size
            num_hidden_layers=16,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=64,
            rope_scaling=_LLAMA3_SCALING_32,
            tie_word_embeddings=True,
            **kw,
        )

    @classmethod
    def llama3_2_3b(cls, **kw) -> LlamaConfig:
        """meta-llama/Llama-3.2-3B(-Instruct): 3,212,749,824 parameters, tied embeddings."""
        return cls(
            vocab_size=128_256,
            hidden_size=3072,
            intermediate_size=8192,
            num_hidden_layers=28,
            num_attention_heads=24,
            num_key_value_heads=8,
            head_dim=128,
            rope_scaling=_LLAMA3_SCALING_32,
            tie_word_embeddings=True,
            **kw,
        )

    @classmethod
    def llama3_1_8b(cls, **kw) -> LlamaConfig:
        """meta-llama/Llama-3.1-8B(-Instruct): 8,030,261,248 parameters."""
        return cls(
            vocab_size=128_256,
            hidden_size=4096,
            intermediate_size=14_336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
            rope_scaling=_LLAMA3_SCALING_8,
            **kw,
        )

    @classmethod
    def llama3_1_70b(cls, **kw) -> LlamaConfig:
        """meta-llama/Llama-3.1-70B(-Instruct): 70,553,706,496 parameters."""
        return cls(
            vocab_size=128_256,
            hidden_size=8192,
            intermediate_size=28_672,
            num_hidden_layers=80,
            num_attention_heads=64,
            num_key_value_heads=8,
            head_dim=128,
            rope_scaling=_LLAMA3_SCALING_8,
            **kw,
        )

    @classmethod
    def tiny(cls, **kw) -> LlamaConfig:
        """A few-layer model for tests and CPU demos (GQA, llama3 rope scaling, tied)."""
        defaults = dict(
            vocab_size=512,
            hidden_size=64,
            intermediate_size=160,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            rope_scaling=(
                ("factor", 8.0),
                ("high_freq_factor", 4.0),
                ("low_freq_factor", 1.0),
                ("original_max_position_embeddings", 256),
                ("rope_type", "llama3"),
            ),
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            bos_token_id=None,
            eos_token_id=None,
        )
        defaults.update(kw)
        return cls(**defaults)

    @classmethod
    def preset(cls, name: str, **kw) -> LlamaConfig:
        """A preset by name: tiny, llama3.2-1b, llama3.2-3b, llama3.1-8b, llama3.1-70b."""
        table = {
            "tiny": cls.tiny,
            "llama3.2-1b": cls.llama3_2_1b,
            "llama3.2-3b": cls.llama3_2_3b,
            "llama3.1-8b": cls.llama3_1_8b,
            "llama3.1-70b": cls.llama3_1_70b,
        }
        if name not in table:
            raise ValueError(f"Unknown model preset {name!r}; choose one of {sorted(table)}.")
        return table[name](**kw)

    # --- HF interop ---------------------------------------------------------------------

    @classmethod
    def from_hf(cls, hf: Any, **kw) -> LlamaConfig:
        """From a `transformers.LlamaConfig` or its dict (config.json), any transformers version."""
        d = hf.to_dict() if hasattr(hf, "to_dict") else dict(hf)
        for key in ("attention_bias", "mlp_bias"):
            if d.get(key):
                raise ValueError(
                    f"HF config has {key}=True, which Llama 3 does not use and we do not support."
                )
        if d.get("hidden_act", "silu") != "silu":
            raise ValueError(
                f"HF config has hidden_act={d['hidden_act']!r}; only 'silu' is supported."
            )
        if d.get("pretraining_tp", 1) not in (1, None):
            raise ValueError("HF config has pretraining_tp != 1, which is not supported.")
        rope = d.get("rope_parameters") or {}
        scaling = d.get("rope_scaling") or None
        theta = rope.get("rope_theta", d.get("rope_theta", 10_000.0))
        if rope.get("rope_type", "default") != "default":
            scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
        if scaling is not None and scaling.get("rope_type", scaling.get("type")) in (
            "default",
            None,
        ):
            scaling = None
        heads = d["num_attention_heads"]
        eos = d.get("eos_token_id")
        return cls(
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"],
            num_hidden_layers=d["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=d.get("num_key_value_heads") or heads,
            head_dim=d.get("head_dim") or d["hidden_size"] // heads,
            rms_norm_eps=d.get("rms_norm_eps", 1e-6),
            rope_theta=float(theta),
            rope_scaling=None if scaling is None else tuple(sorted(scaling.items())),
            max_position_embeddings=d.get("max_position_embeddings", 2048),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            initializer_range=d.get("initializer_range", 0.02),
            bos_token_id=d.get("bos_token_id"),
            eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
            pad_token_id=d.get("pad_token_id"),
            **kw,
        )

    def hf_dict(self) -> dict[str, Any]:
        """The fields of an HF `LlamaConfig` (keyword arguments for its constructor)."""
        out = dict(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            head_dim=self.head_dim,
            rms_norm_eps=self.rms_norm_eps,
            rope_theta=self.rope_theta,
            rope_scaling=None if self.rope_scaling is None else dict(self.rope_scaling),
            max_position_embeddings=self.max_position_embeddings,
            tie_word_embeddings=self.tie_word_embeddings,
            initializer_range=self.initializer_range,
            bos_token_id=self.bos_token_id,
            eos_token_id=list(self.eos_token_id)
            if isinstance(self.eos_token_id, tuple)
            else self.eos_token_id,
            pad_token_id=self.pad_token_id,
            hidden_act="silu",
            attention_bias=False,
            mlp_bias=False,
        )
        return out

    @property
    def num_params(self) -> int:
        """Parameter count of the causal LM (as HF counts it: tied embeddings once)."""
        d, f, v = self.hidden_size, self.intermediate_size, self.vocab_size
        n, k, h = self.num_attention_heads, self.num_key_value_heads, self.head_dim
        layer = d * (n * h) * 2 + d * (k * h) * 2 + 3 * d * f + 2 * d
        return v * d * (1 if self.tie_word_embeddings else 2) + self.num_hidden_layers * layer + d


_LLAMA3_SCALING_32 = (
    ("factor", 32.0),
    ("high_freq_factor", 4.0),
    ("low_freq_factor", 1.0),
    ("original_max_position_embeddings", 8192),
    ("rope_type", "llama3"),
)
_LLAMA3_SCALING_8 = (
    ("factor", 8.0),
    ("high_freq_factor", 4.0),
    ("low_freq_factor", 1.0),
    ("original_max_position_embeddings", 8192),
    ("rope_type", "llama3"),
)


# ---------------------------------------------------------------------------------------
# Building blocks


def _layer_fn(inv_freq: np.ndarray, last_only: bool):
    """A layer call for ``nnx.remat`` with its static options closed over (remat traces
    every argument it is given, defaults included)."""

    def fn(layer, x, positions, mask):
        return layer(x, positions, mask, inv_freq, last_only=last_only)[0]

    return fn


def rope_inv_freq(config: LlamaConfig) -> np.ndarray:
    """Inverse RoPE frequencies [H/2], float32, with llama3 scaling as HF computes them."""
    dim = config.head_dim
    exponent = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    inv_freq = (1.0 / (np.float32(config.rope_theta) ** exponent)).astype(np.float32)
    if config.rope_scaling is None:
        return inv_freq
    s = dict(config.rope_scaling)
    if s.get("rope_type", s.get("type")) in ("default", None):
        return inv_freq
    factor = s["factor"]
    low, high = s["low_freq_factor"], s["high_freq_factor"]
    old_len = s["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def apply_rope(x: Array, positions: Array, inv_freq: np.ndarray) -> Array:
    """Rotates ``x`` [B, T, heads, H] by ``positions`` [B, T] (HF's rotate-half layout)."""
    freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # [B, T, H/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    cos = jnp.cos(emb).astype(x.dtype)[:, :, None, :]
    sin = jnp.sin(emb).astype(x.dtype)[:, :, None, :]
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def _param(rngs: nnx.Rngs, shape, axes, std, dtype, init: str = "normal") -> nnx.Param:
    if init == "ones":
        value = jnp.ones(shape, dtype)
    else:
        value = (std * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype)
    return nnx.Param(value, logical_axes=axes)


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, eps: float, *, param_dtype, rngs: nnx.Rngs):
        self.eps = eps
        self.scale = _param(rngs, (dim,), ("norm",), 0.0, param_dtype, init="ones")

    def __call__(self, x: Array) -> Array:
        dtype = x.dtype
        x32 = x.astype(jnp.float32)
        var = jnp.mean(x32 * x32, axis=-1, keepdims=True)
        normed = (x32 * jax.lax.rsqrt(var + self.eps)).astype(dtype)
        return self.scale[...].astype(dtype) * normed


@struct.dataclass
class LayerCache:
    """KV cache of one layer: keys [B, K, H, S], values [B, K, S, H].

    Each is stored as the decode step's matmul reads it, batched over B and K: scores =
    queries [G, H] x keys [H, S], outputs = probabilities [G, S] x values [S, H], with no
    per-step relayout (a [B, S, K, H] cache made XLA transpose every layer's whole cache at
    every decode step) and both cache operands in the plain [contracted, kept] layout (keys
    as [S, H] took XLA:CPU's GEMM about 2.5x as long for the scores).
    """

    k: Array
    v: Array

    @property
    def max_length(self) -> int:
        return self.v.shape[2]


KEY_SLOT_AXIS, VALUE_SLOT_AXIS = 3, 2  # the slot axis S of LayerCache.k and LayerCache.v


@struct.dataclass
class Cache:
    """The KV cache of a whole model.

    Attributes:
      layers: one `LayerCache` per decoder layer.
      segment_ids: [B, S] int32 segment id of each filled slot (0 = empty or padding).
      end: [] int32, the number of slots written so far (the same for the whole batch:
        prompts are left-padded, so every row writes its next token at slot ``end``).
    """

    layers: tuple[LayerCache, ...]
    segment_ids: Array
    end: Array

    @property
    def max_length(self) -> int:
        return self.segment_ids.shape[1]


class Attention(nnx.Module):
    def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
        c = config
        d, n, k, h = c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim
        std, pd = c.initializer_range, c.param_dtype
        self.config = config
        self.q = _param(rngs, (d, n, h), ("embed", "q_heads", "head_dim"), std, pd)
        self.k = _param(rngs, (d, k, h), ("embed", "kv_heads", "head_dim"), std, pd)
        self.v = _param(rngs, (d, k, h), ("embed", "kv_heads", "head_dim"), std, pd)
        self.o = _param(rngs, (n, h, d), ("q_heads", "head_dim", "embed"), std, pd)

    def __call__(
        self,
        x: Array,
        positions: Array,
        mask: Array,
        inv_freq: np.ndarray,
        cache: LayerCache | None = None,
        cache_end: Array | None = None,
        last_only: bool = False,
    ) -> tuple[Array, LayerCache | None]:
        """x [B, T, D], positions [B, T], mask [B, T, S] bool -> [B, T, D].

        ``last_only``: the output of the last position only, [B, 1, D] (keys and values of
        every position still go to the cache).
        """
        c = self.config
        dt = c.dtype
        k = jnp.einsum("btd,dkh->btkh", x, self.k[...].astype(dt))
        v = jnp.einsum("btd,dkh->btkh", x, self.v[...].astype(dt))
        if last_only:
            x, mask, q_positions = x[:, -1:], mask[:, -1:], positions[:, -1:]
        else:
            q_positions = positions
        q = jnp.einsum("btd,dnh->btnh", x, self.q[...].astype(dt))
        q = shard(apply_rope(q, q_positions, inv_freq), ("batch", "length", "q_heads", "head_dim"))
        k = shard(apply_rope(k, positions, inv_freq), ("batch", "length", "kv_heads", "head_dim"))
        v = shard(v, ("batch", "length", "kv_heads", "head_dim"))
        if cache is None or cache.max_length == k.shape[1]:
            # No cache, or a prefill that fills the whole cache: attend over the new keys.
            if c.attention == "grouped":
                out = cached_attention(q, k.transpose(0, 2, 3, 1), v.swapaxes(1, 2), mask)
            else:
                out = attention(q, k, v, mask, c.attention)
        if cache is not None:
            put = lambda buf, new, axis: jax.lax.dynamic_update_slice_in_dim(
                buf, new.astype(buf.dtype), cache_end, axis=axis
            )
            cache = LayerCache(
                k=put(cache.k, k.transpose(0, 2, 3, 1), KEY_SLOT_AXIS),  # [B, K, H, T]
                v=put(cache.v, v.swapaxes(1, 2), VALUE_SLOT_AXIS),  # [B, K, T, H]
            )
            if cache.max_length != k.shape[1]:
                out = cached_attention(q, cache.k.astype(dt), cache.v.astype(dt), mask)
        # Contract (n, h) in this order: jnp.einsum("btnh,nhd->btd") lists them as (h, n),
        # for which XLA:CPU transposed the weight and the activations at every step.
        out = jax.lax.dot_general(out, self.o[...].astype(dt), (((2, 3), (0, 1)), ((), ())))
        return out, cache


def attention(q: Array, k: Array, v: Array, mask: Array, impl: str = "auto") -> Array:
    """q [B, T, N, H], k and v [B, S, K, H], mask [B, T, S] bool -> [B, T, N, H].

    `jax.nn.dot_product_attention`, whose own default is always XLA's implementation (the
    [B, N, T, S] scores in memory). ``impl``: "auto" takes cuDNN's fused flash kernel where
    `cudnn_may_apply` says it will work, and XLA's otherwise or when cuDNN refuses the call
    while tracing; "cudnn" takes cuDNN's or raises; "xla" takes XLA's. A query row with
    nothing to attend to (padding) gets the mean of the values, as in `attention_reference`
    (cuDNN turns the mask into a large negative bias: -2^41 in bf16, so such a row is uniform
    there too; -32768 in fp16, where it is a softmax of the raw scores; such rows are padding
    and feed no loss).
    """
    bias_mask = mask[:, None]
    if impl == "cudnn" or (impl == "auto" and cudnn_may_apply(q, k)):
        try:
            return jax.nn.dot_product_attention(q, k, v, mask=bias_mask, implementation="cudnn")
        except (NotImplementedError, RuntimeError, ValueError, TypeError) as e:
            if impl == "cudnn":
                raise ValueError(
                    f"attention='cudnn' does not apply to q {q.dtype.name}{list(q.shape)} with "
                    f"k {list(k.shape)} on {jax.default_backend()} ({e}); use "
                    "LlamaConfig.attention='auto' or 'xla'."
                ) from None
    return jax.nn.dot_product_attention(q, k, v, mask=bias_mask, implementation="xla")


def cudnn_may_apply(q: Array, k: Array) -> bool:
    """Whether "auto" attention takes cuDNN: a GPU default backend, 16-bit inputs, a head dim
    that every cuDNN flash kernel takes (a multiple of 8, at most 128), even lengths, and
    `cudnn_compiles` for these head counts on this process's GPU.

    cuDNN checks the shapes of its training kernel only when the backward pass is traced
    (under `nnx.remat`, outside `attention`'s fallback), and the GPU generation (flash
    attention needs compute capability 8.0) only when the program is compiled, after any
    fallback could act; both are settled here, before the choice.
    """
    h, t, s = q.shape[-1], q.shape[1], k.shape[1]
    return (
        jax.default_backend() == "gpu"
        and q.dtype in (jnp.bfloat16, jnp.float16)
        and h % 8 == 0
        and h <= 128
        and t % 2 == 0
        and s % 2 == 0
        and cudnn_compiles(q.dtype.name, q.shape[2], k.shape[2], h)
    )


@functools.cache
def cudnn_compiles(dtype: str, heads: int, kv_heads: int, head_dim: int) -> bool:
    """Whether cuDNN's attention, forward and gradient, compiles on this process's first GPU
    for these head counts: one tiny masked [1, 64] program each, once per process."""
    dev = jax.devices()[0]
    capability = getattr(dev, "compute_capability", None)
    try:
        if capability is not None and float(capability) < 8.0:
            return False
    except ValueError:
        pass
    dt = jnp.dtype(dtype)
    q = jax.ShapeDtypeStruct((1, 64, heads, head_dim), dt)
    kv = jax.ShapeDtypeStruct((1, 64, kv_heads, head_dim), dt)
    mask = jax.ShapeDtypeStruct((1, 1, 64, 64), jnp.bool_)

    def total(q, k, v, mask):
        out = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="cudnn")
        return out.astype(jnp.float32).sum()

    try:
        jax.jit(total).lower(q, kv, kv, mask).compile()
        jax.jit(jax.grad(total, argnums=(0, 1, 2))).lower(q, kv, kv, mask).compile()
    except Exception:  # noqa: BLE001 - any refusal means: use XLA's
        return False
    return True


def _einsum_attention(q: Array, k: Array, v: Array, mask: Array, kv: str) -> Array:
    """Masked softmax attention as einsums; ``kv`` names the key/value layout."""
    b, t, n, h = q.shape
    kh = k.shape[kv.index("k")]
    qg = q.reshape(b, t, kh, n // kh, h)
    scores = jnp.einsum(f"btkgh,{kv}->bkgts", qg, k, preferred_element_type=jnp.float32)
    scores = scores * (h**-0.5)
    scores = jnp.where(mask[:, None, None, :, :], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum(f"bkgts,{kv}->btkgh", probs, v).reshape(b, t, n, h)


def attention_reference(q: Array, k: Array, v: Array, mask: Array) -> Array:
    """`attention` as plain einsums (the reference its tests compare with)."""
    return _einsum_attention(q, k, v, mask, "bskh")


def cached_attention(q: Array, k: Array, v: Array, mask: Array) -> Array:
    """q [B, T, N, H] against a cache in its layout, k [B, K, H, S] and v [B, K, S, H], with
    mask [B, T, S].

    Both products are plain batched matmuls over (B, K) with the queries of a kv head as
    rows (M = G * T, in the order g, t): ``[M, H] x [H, S]`` and ``[M, S] x [S, H]``,
    operands in their stored layouts. XLA:CPU hands such dots to its GEMM library; the
    einsum form of `attention_reference` made it emit the second one with the contracted
    slot axis leading, which it ran as a slow loop (6 of ~40 ms of a decode step of the
    benchmark model at batch 32). With T = 1 (decoding) no transpose is left.
    """
    b, t, n, h = q.shape
    kh = v.shape[1]
    g = n // kh
    qm = q.reshape(b, t, kh, g, h).transpose(0, 2, 3, 1, 4).reshape(b, kh, g * t, h)
    scores = jnp.einsum("bkmh,bkhs->bkms", qm, k, preferred_element_type=jnp.float32)
    scores = (scores * (h**-0.5)).reshape(b, kh, g, t, -1)
    scores = jnp.where(mask[:, None, None, :, :], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype).reshape(b, kh, g * t, -1)
    out = jnp.einsum("bkms,bksh->bkmh", probs, v)
    return out.reshape(b, kh, g, t, h).transpose(0, 3, 1, 2, 4).reshape(b, t, n, h)


class MLP(nnx.Module):
    def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
        d, f = config.hidden_size, config.intermediate_size
        std, pd = config.initializer_range, config.param_dtype
        self.dtype = config.dtype
        self.gate = _param(rngs, (d, f), ("embed", "mlp"), std, pd)
        self.up = _param(rngs, (d, f), ("embed", "mlp"), std, pd)
        self.down = _param(rngs, (f, d), ("mlp", "embed"), std, pd)

    def __call__(self, x: Array) -> Array:
        dt = self.dtype
        gate = jnp.einsum("btd,df->btf", x, self.gate[...].astype(dt))
        up = jnp.einsum("btd,df->btf", x, self.up[...].astype(dt))
        hidden = shard(jax.nn.silu(gate) * up, ("batch", "length", "mlp"))
        return jnp.einsum("btf,fd->btd", hidden, self.down[...].astype(dt))


class DecoderLayer(nnx.Module):
    def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
        c = config
        self.input_norm = RMSNorm(
            c.hidden_size, c.rms_norm_eps, param_dtype=c.param_dtype, rngs=rngs
        )
        self.attn = Attention(c, rngs=rngs)
        self.post_attn_norm = RMSNorm(
            c.hidden_size, c.rms_norm_eps, param_dtype=c.param_dtype, rngs=rngs
        )
        self.mlp = MLP(c, rngs=rngs)

    def __call__(self, x, positions, mask, inv_freq, cache=None, cache_end=None, last_only=False):
        h, cache = self.attn(
            self.input_norm(x), positions, mask, inv_freq, cache, cache_end, last_only
        )
        x = (x[:, -1:] if last_only else x) + h
        x = x + self.mlp(self.post_attn_norm(x))
        return shard(x, ("batch", "length", "embed")), cache


def default_positions(segment_ids: Array) -> Array:
    """Positions that restart at 0 in each segment and skip padding: [B, T] int32."""
    valid = (segment_ids != 0).astype(jnp.int32)
    # Count real tokens of the same segment so far; restart when the segment id changes.
    idx = jnp.arange(segment_ids.shape[1])[None, :]
    starts = jnp.concatenate(
        [jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1
    )
    start_idx = jax.lax.cummax(jnp.where(starts, idx, 0), axis=1)
    csum = jnp.cumsum(valid, axis=1)
    before = jnp.take_along_axis(csum - valid, start_idx, axis=1)
    return jnp.maximum(csum - before - 1, 0).astype(jnp.int32)


class Llama(nnx.Module):
    """Llama decoder. ``model(tokens)`` -> float32 logits [B, T, V].

    Call signature (all keyword arguments optional):
      tokens: [B, T] int32.
      attention_mask: [B, T] 1 for real tokens, 0 for padding (left or right).
      segment_ids: [B, T] int32 for packed sequences (0 = padding); overrides the mask.
      positions: [B, T] int32 RoPE positions (default: `default_positions`).
      cache: a `Cache` to read and extend; then the call returns ``(logits, cache)``.
      return_hidden: also return the hidden states after the embedding and each layer,
        the last one after the final norm, exactly as HF's ``output_hidden_states`` lists
        them (L + 1 arrays [B, T, D]); then returns ``(logits, hidden_states)``.
      return_logits: set False to return the final (normed) hidden states [B, T, D] instead.
    """

    def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
        c = config
        self.config = config
        self.embed = _param(
            rngs,
            (c.vocab_size, c.hidden_size),
            ("vocab", "embed"),
            c.initializer_range,
            c.param_dtype,
        )
        self.layers = nnx.List([DecoderLayer(c, rngs=rngs) for _ in range(c.num_hidden_layers)])
        self.final_norm = RMSNorm(
            c.hidden_size, c.rms_norm_eps, param_dtype=c.param_dtype, rngs=rngs
        )
        if not c.tie_word_embeddings:
            self.lm_head = _param(
                rngs,
                (c.hidden_size, c.vocab_size),
                ("embed", "vocab"),
                c.initializer_range,
                c.param_dtype,
            )

    def init_cache(self, batch_size: int, max_length: int, dtype: Any = None) -> Cache:
        return init_cache(self.config, batch_size, max_length, dtype)

    def hidden(
        self,
        tokens: Array,
        *,
        attention_mask: Array | None = None,
        segment_ids: Array | None = None,
        positions: Array | None = None,
        cache: Cache | None = None,
        collect: bool = False,
        last_only: bool = False,
    ) -> tuple[Array, Cache | None, list[Array]]:
        """Final normed hidden states [B, T, D], the updated cache, and per-layer states.

        ``last_only``: the final hidden state of the last position only, [B, 1, D]. The last
        layer then computes its queries, attention output and MLP for that position alone (a
        prefill needs only the last position's logits, and the last layer's outputs at the
        other positions feed nothing; every layer's keys and values still go to the cache).
        Not with ``collect``.
        """
        c = self.config
        if last_only and collect:
            raise ValueError("hidden(last_only=True) cannot collect every position's states.")
        tokens = jnp.asarray(tokens, jnp.int32)
        b, t = tokens.shape
        if segment_ids is None:
            segment_ids = (
                jnp.ones((b, t), jnp.int32)
                if attention_mask is None
                else jnp.asarray(attention_mask).astype(jnp.int32)
            )
        segment_ids = jnp.asarray(segment_ids, jnp.int32)
        if positions is None:
            if cache is not None:
                raise ValueError("Pass positions explicitly when decoding with a cache.")
            positions = default_positions(segment_ids)
        positions = jnp.asarray(positions, jnp.int32)

        if cache is None:
            q_slot = jnp.arange(t)
            k_seg, k_slot, end = segment_ids, jnp.arange(t), None
        else:
            end = cache.end
            q_slot = end + jnp.arange(t)
            k_seg = jax.lax.dynamic_update_slice_in_dim(cache.segment_ids, segment_ids, end, axis=1)
            k_slot = jnp.arange(cache.max_length)
        mask = (
            (k_seg[:, None, :] == segment_ids[:, :, None])
            & (k_seg[:, None, :] != 0)
            & (k_slot[None, None, :] <= q_slot[None, :, None])
        )

        x = jnp.take(self.embed[...], tokens, axis=0).astype(c.dtype)
        x = shard(x, ("batch", "length", "embed"))
        inv_freq = rope_inv_freq(c)
        states = [x] if collect else []
        new_layers = []
        for i, layer in enumerate(self.layers):
            layer_cache = None if cache is None else cache.layers[i]
            last = last_only and i == len(self.layers) - 1
            if c.remat and cache is None:
                name = _REMAT_OVERRIDE.get() or c.remat_policy
                policy = REMAT_POLICIES.get(name)  # "auto" outside the step compiler: "full"
                fn = nnx.remat(_layer_fn(inv_freq, last), policy=policy)
                x = fn(layer, x, positions, mask)
            else:
                x, layer_cache = layer(x, positions, mask, inv_freq, layer_cache, end, last)
            new_layers.append(layer_cache)
            if collect:
                states.append(x)
        x = self.final_norm(x)
        if collect:
            states[-1] = x  # as HF: the last hidden state is after the final norm
        new_cache = None
        if cache is not None:
            new_cache = Cache(layers=tuple(new_layers), segment_ids=k_seg, end=cache.end + t)
        return x, new_cache, states

    def logits(self, x: Array) -> Array:
        """Hidden states [..., D] -> float32 logits [..., V]."""
        dt = self.config.dtype
        if self.config.tie_word_embeddings:
            w = self.embed[...].astype(dt)
            out = jnp.einsum("...d,vd->...v", x, w, preferred_element_type=jnp.float32)
        else:
            w = self.lm_head[...].astype(dt)
            out = jnp.einsum("...d,dv->...v", x, w, preferred_element_type=jnp.float32)
        return out

    def __call__(
        self,
        tokens: Array,
        *,
        attention_mask: Array | None = None,
        segment_ids: Array | None = None,
        positions: Array | None = None,
        cache: Cache | None = None,
        return_hidden: bool = False,
        return_logits: bool = True,
    ):
        x, new_cache, states = self.hidden(
            tokens,
            attention_mask=attention_mask,
            segment_ids=segment_ids,
            positions=positions,
            cache=cache,
            collect=return_hidden,
        )
        out = self.logits(x) if return_logits else x
        if cache is not None:
            return out, new_cache
        if return_hidden:
            return out, states
        return out


def init_cache(config: LlamaConfig, batch_size: int, max_length: int, dtype: Any = None) -> Cache:
    """An empty KV cache of ``max_length`` slots in ``dtype`` (default: the compute dtype)."""
    dtype = config.dtype if dtype is None else dtype
    b, k, s, h = batch_size, config.num_key_value_heads, max_length, config.head_dim
    layers = tuple(
        LayerCache(k=jnp.zeros((b, k, h, s), dtype), v=jnp.zeros((b, k, s, h), dtype))
        for _ in range(config.num_hidden_layers)
    )
    return Cache(
        layers=layers,
        segment_ids=jnp.zeros((batch_size, max_length), jnp.int32),
        end=jnp.zeros((), jnp.int32),
    )


def cache_logical_axes(config: LlamaConfig) -> Cache:
    """Logical axes of each cache array, for sharding the cache like the activations."""
    k = ("batch", "kv_heads", "head_dim", "cache_length")
    v = ("batch", "kv_heads", "cache_length", "head_dim")
    return Cache(
        layers=tuple(LayerCache(k=k, v=v) for _ in range(config.num_hidden_layers)),
        segment_ids=("batch", "cache_length"),
        end=(),
    )
