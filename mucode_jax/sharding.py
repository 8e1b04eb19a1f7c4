"""Meshes, logical axis rules and sharding helpers.

Every parameter carries logical axis names in its ``logical_axes`` metadata
(e.g. ``("embed", "mlp")``). A short rules table maps logical names to mesh axes,
so the same model file serves one CPU, an 8-GPU host and a TPU pod: only the
config's mesh and rules change (the maxtext approach).

Mesh axes used by the defaults:
  data:   pure data parallelism (parameters replicated).
  fsdp:   data parallelism with parameters, gradients and optimizer state sharded.
  tensor: tensor parallelism over heads and the MLP hidden dimension.

We use one way of sharding everywhere: parameters are created *unsharded in
abstract* (`nnx.eval_shape`), their logical axes are turned into `NamedSharding`s
with `logical_to_sharding`, and the real arrays are produced by a
`jax.jit(init, out_shardings=...)` or placed tensor by tensor when loading.
Flax's eager sharding is never used (no ``out_sharding`` metadata).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

LogicalRules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

# Logical axis -> mesh axis (or axes, or None for replicated). The first rule that
# names a logical axis wins; a mesh axis is used at most once per array.
DEFAULT_RULES: LogicalRules = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("norm", None),
    ("score", None),
    ("cache_length", None),
)

DEFAULT_MESH: tuple[tuple[str, int], ...] = (("data", 1), ("fsdp", -1), ("tensor", 1))


def make_mesh(
    axes: Mapping[str, int] | Sequence[tuple[str, int]] = DEFAULT_MESH,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """Builds a mesh with named axes; at most one size may be -1 ("the rest").

    Args:
      axes: ordered (name, size) pairs, e.g. ``{"data": 1, "fsdp": -1, "tensor": 2}``.
      devices: devices to use (default: all of `jax.devices()`).

    Raises:
      ValueError: if the sizes do not multiply to the number of devices.
    """
    items = list(axes.items()) if isinstance(axes, Mapping) else [tuple(a) for a in axes]
    devices = list(jax.devices() if devices is None else devices)
    names = [str(n) for n, _ in items]
    sizes = [int(s) for _, s in items]
    if len(set(names)) != len(names):
        raise ValueError(f"Mesh axis names must be distinct, got {names}; rename the duplicates.")
    if sizes.count(-1) > 1:
        raise ValueError(
            f"Mesh {dict(items)} has more than one -1 size; give all but one explicitly."
        )
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(
            f"Mesh {dict(items)} has a size that is not positive or -1; fix the config."
        )
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(
                f"Mesh {dict(items)} cannot fill {len(devices)} devices: {len(devices)} is not a "
                f"multiple of {known}; change the explicit axis sizes."
            )
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ValueError(
            f"Mesh {dict(zip(names, sizes))} needs {math.prod(sizes)} devices but "
            f"{len(devices)} are available; set one axis to -1 or match the device count."
        )
    try:
        from jax.experimental import mesh_utils

        device_array = mesh_utils.create_device_mesh(sizes, devices=devices)
    except Exception:  # noqa: BLE001 - fake CPU devices have no topology; plain reshape is fine
        device_array = np.asarray(devices, dtype=object).reshape(sizes)
    kwargs: dict[str, Any] = {}
    axis_type = getattr(jax.sharding, "AxisType", None)
    if axis_type is not None:
        # Auto axes: jit propagates shardings from in/out_shardings and constraints.
        kwargs["axis_types"] = (axis_type.Auto,) * len(names)
    return Mesh(device_array, tuple(names), **kwargs)


def logical_to_spec(
    logical_axes: Sequence[str | None] | None,
    rules: LogicalRules = DEFAULT_RULES,
    mesh: Mesh | None = None,
) -> PartitionSpec:
    """Maps logical axis names to a `PartitionSpec` using ``rules``.

    Mesh axes that are absent from ``mesh`` (when given) or already used by an
    earlier dimension are dropped, so a rule table can mention axes a small mesh
    does not have.
    """
    if logical_axes is None:
        return PartitionSpec()
    table: dict[str, Any] = {}
    for name, target in rules:
        table.setdefault(name, target)
    used: set[str] = set()
    out = []
    for name in logical_axes:
        target = table.get(name) if name is not None else None
        targets = () if target is None else (target,) if isinstance(target, str) else tuple(target)
        keep = []
        for t in targets:
            if t in used or (mesh is not None and t not in mesh.axis_names):
                continue
            if mesh is not None and mesh.shape[t] == 1:
                continue
            keep.append(t)
            used.add(t)
        out.append(None if not keep else keep[0] if len(keep) == 1 else tuple(keep))
    while out and out[-1] is None:
        out.pop()
    return PartitionSpec(*out)


def logical_to_sharding(
    logical_axes: Sequence[str | None] | None, mesh: Mesh, rules: LogicalRules = DEFAULT_RULES
) -> NamedSharding:
    return NamedSharding(mesh, logical_to_spec(logical_axes, rules, mesh))


def _is_var(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def host_to_global(x: Any, sharding: NamedSharding) -> jax.Array:
    """A host array that every process holds whole -> a global array on ``sharding``.

    Each process places only the slices its own devices hold, so this works with one
    process or many (the multi-process form of `jax.device_put`).
    """
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def global_to_host(x: jax.Array) -> np.ndarray:
    """A global array -> the whole value as numpy on every process (gathered if need be)."""
    if not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def state_shardings(state: Any, mesh: Mesh, rules: LogicalRules = DEFAULT_RULES) -> Any:
    """NamedShardings for every variable of an (abstract) `nnx.State`.

    The result has the same tree structure as ``state`` (Variables whose value is
    a `NamedSharding`), as `jax.jit(..., out_shardings=...)` expects for an NNX state.
    """

    def get(v):
        if _is_var(v):
            axes = v.get_metadata().get("logical_axes")
            if axes is not None and len(axes) != len(v.shape):
                raise ValueError(f"logical axes {axes} do not match the shape {v.shape}.")
            return v.replace(logical_to_sharding(axes, mesh, rules))
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree.map(get, state, is_leaf=_is_var)


def create_sharded(make: Any, mesh: Mesh | None, rules: LogicalRules = DEFAULT_RULES) -> nnx.Module:
    """Creates an NNX module directly in its sharded layout.

    ``make`` is a zero-argument function building the module (with its own
    `nnx.Rngs`). The module is traced abstractly (`nnx.eval_shape`), the
    parameter shardings come from the logical axes and ``rules``, and a jitted
    init materialises each array on its devices: no host ever holds it whole.
    """
    abstract = nnx.eval_shape(make)
    graphdef, abs_state = nnx.split(abstract)
    if mesh is None:
        return nnx.merge(graphdef, jax.jit(lambda: nnx.split(make())[1])())
    shardings = state_shardings(abs_state, mesh, rules)
    state = jax.jit(lambda: nnx.split(make())[1], out_shardings=shardings)()
    return nnx.merge(graphdef, state)


# ----------------------------------------------------------------------------
# Activation sharding: a context that holds the mesh and rules while tracing.


@dataclasses.dataclass(frozen=True)
class _Context:
    mesh: Mesh
    rules: LogicalRules


_CONTEXT: contextvars.ContextVar[_Context | None] = contextvars.ContextVar(
    "mucode_jax_sharding", default=None
)


@contextlib.contextmanager
def use_mesh(mesh: Mesh | None, rules: LogicalRules = DEFAULT_RULES) -> Iterator[None]:
    """Within this context `shard` constrains activations on ``mesh``.

    Enter it around tracing (the jitted function's first call or `.lower`).
    """
    token = _CONTEXT.set(None if mesh is None else _Context(mesh, tuple(rules)))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def current_mesh() -> Mesh | None:
    ctx = _CONTEXT.get()
    return None if ctx is None else ctx.mesh


def shard(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """Constrains an activation to the sharding its logical axes give (no-op without a mesh)."""
    ctx = _CONTEXT.get()
    if ctx is None:
        return x
    return jax.lax.with_sharding_constraint(
        x, logical_to_sharding(logical_axes, ctx.mesh, ctx.rules)
    )


def maybe_initialize_distributed() -> bool:
    """Calls `jax.distributed.initialize()` when the environment describes a multi-host job.

    Recognised: ``JAX_COORDINATOR_ADDRESS`` (with ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``),
    SLURM with more than one task, Open MPI with more than one rank, and Cloud TPU
    multi-host VMs (``TPU_WORKER_HOSTNAMES`` with several hosts). Must run before any
    other JAX call. Returns whether it initialised. See `mucode_jax.multihost.initialize`
    for the heartbeat that stops the job when a process dies.
    """
    from mucode_jax import multihost

    return multihost.initialize()
