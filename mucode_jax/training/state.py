"""The train state: a plain pytree, sharded as the config's mesh and rules say.

``TrainState(step, params, opt_state, rng)`` holds the parameters as a pure nested
dict of arrays (``nnx.to_pure_dict``), so optax, orbax and `jax.jit` shardings see an
ordinary pytree. The model's static structure (``graphdef``) is kept apart and merged
back inside the jitted step (``nnx.merge(graphdef, params)``).

Creation never materialises an unsharded copy: `jax.eval_shape` gives the abstract
state, the logical axes on every parameter give its `NamedSharding` (optax moments
get their parameter's sharding via `optax.tree_map_params`), and a jitted init with
``out_shardings`` produces each array on its devices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mucode_jax import sharding as sh


@struct.dataclass
class TrainState:
    """Everything a step reads and writes, and everything a checkpoint holds (with the
    data iterator's state).

    Attributes:
      step: [] int32, optimizer steps taken.
      params: nested dict of float32 master weights (the model's ``param_dtype``).
      opt_state: the optax state (AdamW moments shaped and sharded like ``params``).
      rng: [2] uint32 raw PRNG key, split once per step (for stochastic losses).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "params": self.params,
            "opt_state": self.opt_state,
            "rng": self.rng,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        return cls(step=d["step"], params=d["params"], opt_state=d["opt_state"], rng=d["rng"])


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, Any]:
    """``(graphdef, params)`` with params a pure dict; raises if the model has non-Param state."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    if jax.tree.leaves(rest):
        raise ValueError(
            f"{type(model).__name__} has state other than nnx.Param ({list(rest.keys())}); "
            "the trainer only handles parameters."
        )
    return graphdef, nnx.to_pure_dict(params)


def param_shardings(abstract_model: nnx.Module, mesh: Mesh, rules: sh.LogicalRules) -> Any:
    """Pure-dict tree of `NamedSharding`s from each parameter's logical axes."""
    state = nnx.state(abstract_model, nnx.Param)
    return nnx.to_pure_dict(sh.state_shardings(state, mesh, rules))


def train_state_shardings(
    optimizer: optax.GradientTransformation, abstract_params: Any, p_shardings: Any, mesh: Mesh
) -> TrainState:
    """Shardings of a whole `TrainState`: moments like their parameter, scalars replicated."""
    replicated = NamedSharding(mesh, PartitionSpec())
    abs_opt = jax.eval_shape(optimizer.init, abstract_params)
    opt_sh = optax.tree_map_params(
        optimizer,
        lambda _, s: s,
        abs_opt,
        p_shardings,
        transform_non_params=lambda _: replicated,
        is_leaf=lambda x: isinstance(x, NamedSharding),
    )
    return TrainState(step=replicated, params=p_shardings, opt_state=opt_sh, rng=replicated)


def create_train_state(
    make_model: Callable[[], nnx.Module] | nnx.Module,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    rules: sh.LogicalRules = sh.DEFAULT_RULES,
    *,
    seed: int = 0,
) -> tuple[nnx.GraphDef, TrainState, TrainState]:
    """Creates the sharded train state.

    Args:
      make_model: a zero-argument function building the model with its own `nnx.Rngs`
        (random init, traced abstractly then materialised sharded), or an existing model
        (e.g. from `load_pretrained`), whose parameters are moved onto their shardings.
      optimizer: the optax optimizer.
      mesh, rules: where parameters live (see `mucode_jax.sharding`).
      seed: seed of the state's PRNG key.

    Returns:
      ``(graphdef, state, shardings)``: ``shardings`` is a `TrainState` of `NamedSharding`s.
    """
    if isinstance(make_model, nnx.Module):
        graphdef, params = split_model(make_model)
        abstract = nnx.eval_shape(lambda: nnx.merge(graphdef, params))
        p_sh = param_shardings(abstract, mesh, rules)
        abs_params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
        shardings = train_state_shardings(optimizer, abs_params, p_sh, mesh)
        params = jax.device_put(params, p_sh)

        def init_from(params):
            return TrainState(
                step=jnp.zeros((), jnp.int32),
                params=params,
                opt_state=optimizer.init(params),
                rng=jax.random.PRNGKey(seed),
            )

        state = jax.jit(init_from, in_shardings=(p_sh,), out_shardings=shardings)(params)
        return graphdef, state, shardings

    abstract = nnx.eval_shape(make_model)
    graphdef, abs_params = split_model(abstract)
    p_sh = param_shardings(abstract, mesh, rules)
    shardings = train_state_shardings(optimizer, abs_params, p_sh, mesh)

    def init():
        _, params = split_model(make_model())
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=optimizer.init(params),
            rng=jax.random.PRNGKey(seed),
        )

    state = jax.jit(init, out_shardings=shardings)()
    return graphdef, state, shardings


def abstract_like(state: TrainState, shardings: TrainState) -> TrainState:
    """`jax.ShapeDtypeStruct`s with shardings: the restore target of a checkpoint."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
    )
