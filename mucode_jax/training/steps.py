"""Jitted train steps: gradient accumulation, clipping, AdamW, explicit shardings.

A step is a pure function ``(state, batch) -> (state, metrics)`` jitted once with
the train state's shardings in and out, the batch sharded over ("data", "fsdp")
and the state donated. Every array of a batch has a leading micro-batch axis:
``[A, B_micro, ...]`` with ``A = grad_accum``.

Why an explicit `lax.scan` over micro-batches and not `optax.MultiSteps`:
MultiSteps averages the *per-micro-batch mean* gradients, which weighs a
micro-batch with 10 target tokens like one with 1,000; here each micro-batch
returns the *sum* of its losses and its count, the scan adds sums, gradients and
counts, and the step divides once. So the loss and gradient of an accumulated
step are exactly those of the whole batch at once (sum of token CE over all target
tokens of the accumulated batch / their number), whatever the packing or padding.
It also keeps one optimizer update per step in the compiled program.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from mucode_jax import multihost
from mucode_jax import sharding as sh
from mucode_jax.models.llama import remat_policy_override
from mucode_jax.training import losses
from mucode_jax.training.state import TrainState

# (params, micro_batch) -> (loss_sum, count, aux_sums)
LossFn = Callable[[Any, dict[str, jax.Array]], tuple[jax.Array, jax.Array, dict[str, jax.Array]]]


LOGITS_CHUNK = 512  # positions whose logits the SFT loss holds at once


def sft_loss_fn(graphdef: nnx.GraphDef, logits_chunk: int | None = LOGITS_CHUNK) -> LossFn:
    """Token cross-entropy of a causal LM on a (packed) micro-batch.

    Micro-batch keys, each [B, T]: ``inputs`` tokens, ``targets`` the next tokens,
    ``weights`` 1.0 on assistant target tokens, ``segment_ids`` (0 = padding) and
    ``positions`` (restarting at 0 in each packed segment). The logits are computed
    ``logits_chunk`` positions at a time (`losses.chunked_sft_loss_sums`), never as a whole
    [B, T, V] float32 array; None computes them at once.
    """

    def fn(params, mb):
        model = nnx.merge(graphdef, params)
        hidden = model(
            mb["inputs"],
            segment_ids=mb["segment_ids"],
            positions=mb["positions"],
            return_logits=False,
        )
        total, count = losses.chunked_sft_loss_sums(
            hidden, model.logits, mb["targets"], mb["weights"], logits_chunk
        )
        aux = {"tokens": jnp.sum(mb["segment_ids"] != 0).astype(jnp.float32)}
        return total, count, aux

    return fn


def verifier_loss_fn(graphdef: nnx.GraphDef, loss: str = "bt", l2: float = 0.0) -> LossFn:
    """Bradley–Terry or pointwise BCE loss of the verifier on a micro-batch of pairs.

    Micro-batch keys: ``tokens`` and ``mask`` [B, 2, T] (index 0 the correct program,
    1 the incorrect one, right-padded), ``weights`` [B] (0.0 for padding pairs).
    BCE treats the two members of each pair as samples labelled 1 and 0.
    """
    if loss not in ("bt", "bce"):
        raise ValueError(f"verifier loss must be 'bt' or 'bce', got {loss!r}.")

    def fn(params, mb):
        model = nnx.merge(graphdef, params)
        b, _, t = mb["tokens"].shape
        scores = model(mb["tokens"].reshape(b * 2, t), attention_mask=mb["mask"].reshape(b * 2, t))
        scores = scores.reshape(b, 2)
        chosen, rejected = scores[:, 0], scores[:, 1]
        w = mb["weights"]
        if loss == "bt":
            total, count, aux = losses.bt_loss_sums(chosen, rejected, w, l2)
        else:
            labels = jnp.tile(jnp.array([1.0, 0.0]), (b,))
            total, count = losses.bce_loss_sums(scores.reshape(-1), labels, jnp.repeat(w, 2))
            margin = chosen - rejected
            aux = {"correct": jnp.sum(w * (margin > 0)), "margin": jnp.sum(w * margin)}
        aux = dict(aux, pairs=jnp.sum(w), tokens=jnp.sum(mb["mask"]).astype(jnp.float32))
        return total, count, aux

    return fn


def make_train_step(
    loss_fn: LossFn, optimizer: optax.GradientTransformation, schedule: optax.Schedule | None = None
) -> Callable[[TrainState, dict[str, jax.Array]], tuple[TrainState, dict[str, jax.Array]]]:
    """The un-jitted step: accumulate sums over micro-batches, normalise once, update.

    Metrics: ``loss`` (sum / count), ``grad_norm`` (of the normalised gradient, before
    clipping), ``lr``, ``count`` (target tokens or pairs), and each aux sum (``_mean``
    variants divided by ``count`` are left to the caller).
    """
    grad_fn = jax.value_and_grad(lambda p, mb: _split_aux(loss_fn(p, mb)), has_aux=True)

    def step(state: TrainState, batch: dict[str, jax.Array]):
        params = state.params
        num_micro = jax.tree.leaves(batch)[0].shape[0]
        if num_micro == 1:
            (total, (count, aux)), grads = grad_fn(params, jax.tree.map(lambda x: x[0], batch))
        else:

            def body(carry, mb):
                g_acc, t_acc, c_acc, a_acc = carry
                (t, (c, a)), g = grad_fn(params, mb)
                g_acc = jax.tree.map(jnp.add, g_acc, g)
                a_acc = jax.tree.map(jnp.add, a_acc, a)
                return (g_acc, t_acc + t, c_acc + c, a_acc), None

            first = jax.tree.map(lambda x: x[0], batch)
            (total, (count, aux)), grads = grad_fn(params, first)
            rest = jax.tree.map(lambda x: x[1:], batch)
            (grads, total, count, aux), _ = jax.lax.scan(body, (grads, total, count, aux), rest)
        denom = jnp.maximum(count, 1.0)
        grads = jax.tree.map(lambda g: g / denom, grads)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, params)
        new_params = optax.apply_updates(params, updates)
        rng, _ = jax.random.split(state.rng)
        metrics = {"loss": total / denom, "grad_norm": grad_norm, "count": count, **aux}
        if schedule is not None:
            metrics["lr"] = jnp.asarray(schedule(state.step), jnp.float32)
        new_state = TrainState(step=state.step + 1, params=new_params, opt_state=opt_state, rng=rng)
        return new_state, metrics

    return step


def _split_aux(out):
    total, count, aux = out
    return total, (count, aux)


def batch_shardings(
    batch_spec: dict[str, Any], mesh: Mesh, rules: sh.LogicalRules
) -> dict[str, NamedSharding]:
    """Shardings of a batch whose arrays are [A, B, ...]: B over ("data", "fsdp")."""

    def one(x):
        axes = ("accum", "batch") + ("length",) * (len(x.shape) - 2)
        return sh.logical_to_sharding(axes, mesh, rules)

    return {k: one(v) for k, v in batch_spec.items()}


def check_batch_divides(micro_batch: int, mesh: Mesh, rules: sh.LogicalRules) -> None:
    """Raises the one-sentence error when the micro-batch cannot be split over the mesh."""
    spec = sh.logical_to_spec(("batch",), rules, mesh)
    axes = spec[0] if len(spec) else None
    axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    ways = 1
    for a in axes:
        ways *= mesh.shape[a]
    if micro_batch % ways:
        raise ValueError(
            f"The micro-batch of {micro_batch} rows (batch_size / grad_accum) does not divide over "
            f"the {ways} data-parallel devices of mesh axes {axes}; make it a multiple of {ways}."
        )


def put_batch(batch: dict[str, Any], shardings: dict[str, NamedSharding]) -> dict[str, jax.Array]:
    """Host numpy batch (this process's rows) -> global sharded arrays."""
    out = {}
    for k, x in batch.items():
        s = shardings[k]
        if jax.process_count() == 1:
            out[k] = jax.device_put(x, s)
        else:  # pragma: no cover - multi-host
            out[k] = jax.make_array_from_process_local_data(s, x)
    return out


def compile_step(
    step: Callable,
    state_shardings: TrainState,
    abstract_state: TrainState,
    abstract_batch: dict[str, jax.ShapeDtypeStruct],
    mesh: Mesh,
    rules: sh.LogicalRules,
    *,
    log: Callable[[str], None] | None = print,
    remat_policies: Sequence[str] = (),
    memory_budget: int | None = None,
):
    """Jits ``step`` with explicit shardings and donation, compiles it ahead of time and
    reports the memory it needs. Returns the compiled executable.

    ``remat_policies``: candidate remat policies of the model's rematerialised layers, best
    first (e.g. ``("dots", "full")`` for ``remat_policy="auto"``): the step is compiled with
    each in turn and the first whose planned memory fits ``memory_budget`` bytes per device
    (default: `device_memory_budget`) is kept, else the last (also when the memory is not
    reported); on several processes a policy is kept only if it fits on all of them. Empty:
    the model config's own policy.
    """
    b_sh = batch_shardings(abstract_batch, mesh, rules)
    replicated = NamedSharding(mesh, jax.sharding.PartitionSpec())
    abs_batch = {
        k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=b_sh[k])
        for k, v in abstract_batch.items()
    }

    def build(policy: str | None):
        # A new function per policy: JAX caches traces by function, and the policy is read
        # while tracing.
        @functools.wraps(step)
        def traced(state, batch):
            return step(state, batch)

        jitted = jax.jit(
            traced,
            in_shardings=(state_shardings, b_sh),
            out_shardings=(state_shardings, replicated),
            donate_argnums=(0,),
        )
        with sh.use_mesh(mesh, rules), remat_policy_override(policy):
            return jitted.lower(abstract_state, abs_batch).compile()

    if not remat_policies:
        compiled = build(None)
        if log is not None:
            log(describe_memory(compiled))
        return compiled
    budget = device_memory_budget() if memory_budget is None else int(memory_budget)
    for i, policy in enumerate(remat_policies):
        compiled = build(policy)
        need = planned_bytes(compiled)
        # Unknown memory (a backend that reports neither) keeps the last, the leanest, policy.
        fits = budget is not None and need is not None and need <= budget
        fits = all(multihost.all_gather(bool(fits), "whether the train step fits in memory"))
        if log is not None:
            gib = lambda x: "unknown" if x is None else f"{x / 2**30:.3f} GiB"
            verdict = "kept" if fits or i == len(remat_policies) - 1 else "too big"
            log(f"remat policy {policy!r}: {verdict} (planned {gib(need)}, budget {gib(budget)})")
        if fits:
            break
    if log is not None:
        log(describe_memory(compiled))
    return compiled


def _memory(compiled: Any) -> dict[str, int] | None:
    """XLA's per-device memory analysis of a compiled program in bytes (None: not reported)."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        return None
    if m is None:
        return None
    names = ("argument", "output", "temp", "alias", "generated_code")
    out = {n: int(getattr(m, f"{n}_size_in_bytes", 0) or 0) for n in names}
    out["total"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
    out["total"] += out["generated_code"]
    return out


def planned_bytes(compiled: Any) -> int | None:
    """Per-device bytes a compiled program needs (XLA's analysis), or None if not reported."""
    m = _memory(compiled)
    return None if m is None else m["total"]


def device_memory_budget(fraction: float = 0.9) -> int | None:
    """Bytes a program may plan per local device: ``fraction`` of the accelerator's memory
    limit, or on CPU of the host's physical memory shared by its local devices; None when an
    accelerator does not report its limit (e.g. JAX's "platform" allocator)."""
    dev = jax.local_devices()[0]
    try:
        stats = dev.memory_stats()
    except Exception:  # noqa: BLE001 - not every backend reports
        stats = None
    if stats and stats.get("bytes_limit"):
        return int(fraction * stats["bytes_limit"])
    if dev.platform != "cpu":
        return None
    try:
        host = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
    return int(fraction * host / max(1, jax.local_device_count()))


def describe_memory(compiled: Any) -> str:
    """One line with the per-device memory of a compiled step (from XLA's analysis)."""
    m = _memory(compiled)
    if m is None:
        return "train step memory: not reported by this backend"
    g = {k: v / 1024**3 for k, v in m.items()}
    return (
        f"train step memory per device: {g['total']:.3f} GiB "
        f"(arguments {g['argument']:.3f}, outputs {g['output']:.3f}, temporaries "
        f"{g['temp']:.3f}, donated/aliased {g['alias']:.3f}, code {g['generated_code']:.3f})"
    )
