"""The RL train state (policy, value, frozen reference), its jitted steps, and weight sync.

`RLTrainer` holds an `RLState`: two `training.state.TrainState`s (the policy and the value
model, each with its own AdamW state) and the reference parameters (a frozen copy of the
initial policy), all sharded by the config's mesh and logical rules. Its three compiled
programs are built once, on one fixed batch shape ``[grad_accum, minibatch / grad_accum,
max_length - 1]`` (a round's rows are padded to whole minibatches with zero-weight rows), so
nothing recompiles in steady state:

* the policy step and the value step: `training.steps.make_train_step` on the losses of
  `rl.losses` (sums over micro-batches, one division, clipping, AdamW), jitted by
  `training.steps.compile_step` with the state donated;
* the scoring pass: log π_old and log π_ref of every target and V at every row's last
  prompt token, for one minibatch.

`sync(sampler)` hands the policy's current weights to the sampler on device
(`Sampler.update_params`, cast to the sampler's dtypes, copied so that donating the train
state never frees the sampler's buffers): no checkpoint round trip, no recompilation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx, struct

from mucode_jax import multihost
from mucode_jax import sharding as sh
from mucode_jax.algorithms.rl import losses as L
from mucode_jax.training import optim, steps
from mucode_jax.training.state import TrainState, abstract_like, create_train_state

POLICY_KEYS = (
    "inputs",
    "targets",
    "weights",
    "segment_ids",
    "positions",
    "advantages",
    "old_logp",
    "ref_logp",
    "sampler_logp",
)
VALUE_KEYS = ("inputs", "value_mask", "returns", "old_values", "turn_weight")
FLOAT_KEYS = ("weights", "advantages", "old_logp", "ref_logp", "sampler_logp")


@struct.dataclass
class RLState:
    """What a checkpoint holds besides the loop's counters."""

    policy: TrainState
    value: TrainState
    reference: Any

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.as_dict(),
            "value": self.value.as_dict(),
            "reference": self.reference,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RLState:
        return cls(
            policy=TrainState.from_dict(d["policy"]),
            value=TrainState.from_dict(d["value"]),
            reference=d["reference"],
        )


def _copy_fn(shardings: Any, dtypes: Any = None) -> Callable:
    """A jitted copy (optionally a cast) onto ``shardings``: new buffers, never aliases of
    the input (so donating the input later cannot free the copy)."""

    def copy(tree):
        if dtypes is None:
            return jax.tree.map(lambda x: x * jnp.ones((), x.dtype), tree)
        return [x.astype(d) * jnp.ones((), d) for x, d in zip(tree, dtypes)]

    return jax.jit(copy) if shardings is None else jax.jit(copy, out_shardings=shardings)


def batch_specs(cfg: ml_collections.ConfigDict) -> tuple[dict, dict]:
    """The fixed ``[grad_accum, micro, max_length - 1]`` shapes of the policy and value steps'
    batches (what the steps are compiled for, and what the real configs are lowered on)."""
    a = int(cfg.grad_accum)
    b, t = int(cfg.minibatch_size) // a, int(cfg.max_length) - 1
    spec = jax.ShapeDtypeStruct
    policy = {
        k: spec((a, b, t), jnp.float32 if k in FLOAT_KEYS else jnp.int32) for k in POLICY_KEYS
    }
    value = {
        "inputs": spec((a, b, t), jnp.int32),
        "value_mask": spec((a, b, t), jnp.int32),
        "returns": spec((a, b), jnp.float32),
        "old_values": spec((a, b), jnp.float32),
        "turn_weight": spec((a, b), jnp.float32),
    }
    return policy, value


class RLTrainer:
    """Sharded policy / value / reference state and the compiled steps of one RL run.

    Args:
      cfg: ``config.rl`` (`rl.config.rl_defaults`).
      policy_model: the initial policy (a `Llama`, e.g. loaded from the base directory).
      value_model: the value model (a `Verifier`, e.g. `training.sft.verifier_from_base`).
      mesh, rules: where everything lives.
      seed: the train states' PRNG seed.
      log: where the compiled steps' memory lines go.
    """

    def __init__(
        self,
        cfg: ml_collections.ConfigDict,
        policy_model: nnx.Module,
        value_model: nnx.Module,
        mesh: jax.sharding.Mesh,
        rules: sh.LogicalRules,
        *,
        seed: int = 0,
        log: Callable[[str], None] | None = None,
    ):
        self.cfg, self.mesh, self.rules = cfg, mesh, rules
        self.accum = int(cfg.grad_accum)
        self.micro = int(cfg.minibatch_size) // self.accum
        steps.check_batch_divides(self.micro, mesh, rules)
        self.length = int(cfg.max_length) - 1
        hint = int(cfg.iterations) * int(cfg.epochs) * 64  # constant schedules ignore it
        opt_p, sched_p = optim.make_optimizer(cfg.policy_optim, hint)
        opt_v, sched_v = optim.make_optimizer(cfg.value_optim, hint)
        self.policy_graphdef, pstate, p_sh = create_train_state(
            policy_model, opt_p, mesh, rules, seed=seed
        )
        self.value_graphdef, vstate, v_sh = create_train_state(
            value_model, opt_v, mesh, rules, seed=seed + 1
        )
        reference = _copy_fn(p_sh.params)(pstate.params)
        self.state = RLState(policy=pstate, value=vstate, reference=reference)
        self.shardings = RLState(policy=p_sh, value=v_sh, reference=p_sh.params)

        self.policy_spec, self.value_spec = batch_specs(cfg)
        ploss = L.policy_loss_fn(
            self.policy_graphdef, clip_eps=cfg.clip_eps, kl_coef=cfg.kl_coef, kl=cfg.kl
        )
        vloss = L.value_loss_fn(self.value_graphdef, clip=cfg.value_clip)
        self.policy_step = steps.compile_step(
            steps.make_train_step(ploss, opt_p, sched_p),
            p_sh,
            abstract_like(pstate, p_sh),
            self.policy_spec,
            mesh,
            rules,
            log=log,
        )
        self.value_step = steps.compile_step(
            steps.make_train_step(vloss, opt_v, sched_v),
            v_sh,
            abstract_like(vstate, v_sh),
            self.value_spec,
            mesh,
            rules,
            log=log,
        )
        self.p_batch_sh = steps.batch_shardings(self.policy_spec, mesh, rules)
        self.v_batch_sh = steps.batch_shardings(self.value_spec, mesh, rules)
        self._score = self._build_score()

    # -- the scoring pass ---------------------------------------------------------------------

    def _build_score(self):
        pg, vg = self.policy_graphdef, self.value_graphdef
        score_keys = ("inputs", "targets", "segment_ids", "positions", "value_mask")
        self.score_spec = {k: self.policy_spec["inputs"] for k in score_keys}
        in_sh = steps.batch_shardings(self.score_spec, self.mesh, self.rules)
        out_spec = {
            "old_logp": self.policy_spec["old_logp"],
            "ref_logp": self.policy_spec["ref_logp"],
            "values": self.value_spec["returns"],
        }
        out_sh = steps.batch_shardings(out_spec, self.mesh, self.rules)

        def score(policy, reference, value, batch):
            def one(mb):
                logp, _ = L.policy_forward(nnx.merge(pg, policy), mb)
                ref, _ = L.policy_forward(nnx.merge(pg, reference), mb)
                v = L.value_forward(nnx.merge(vg, value), mb)
                return {"old_logp": logp, "ref_logp": ref, "values": v}

            return jax.lax.map(one, batch)

        p_sh, v_sh = self.shardings.policy.params, self.shardings.value.params
        jitted = jax.jit(score, in_shardings=(p_sh, p_sh, v_sh, in_sh), out_shardings=out_sh)
        self.score_in_sh = in_sh
        s = self.abstract_state()
        # Compiled now, like the steps: on several processes every one has its programs
        # before the first collective runs (CPU collectives give up after 30 s).
        compiled = jitted.lower(s.policy.params, s.reference, s.value.params, self.score_spec)
        compiled = compiled.compile()
        multihost.barrier("rl trainer compiled")
        return compiled

    def score(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """log π_old, log π_ref per target ([N, T]) and V per row ([N]) of ``rows``."""
        n = len(rows["inputs"])
        if n == 0:
            t = self.length
            return {
                "old_logp": np.zeros((0, t)),
                "ref_logp": np.zeros((0, t)),
                "values": np.zeros(0),
            }
        mb = self.accum * self.micro
        outs = []
        with sh.use_mesh(self.mesh, self.rules):
            for start in range(0, n, mb):
                idx = np.arange(start, min(start + mb, n))
                batch = {k: self._shape(_take(rows[k], idx, mb)) for k in self.score_spec}
                s = self.state
                outs.append(
                    self._score(
                        s.policy.params,
                        s.reference,
                        s.value.params,
                        put_global(batch, self.score_in_sh),
                    )
                )
        # Fetched once every chunk is dispatched.
        host = [jax.tree.map(multihost.to_host, o) for o in outs]
        cat = {
            k: np.concatenate([h[k].reshape(mb, *h[k].shape[2:]) for h in host])[:n]
            for k in host[0]
        }
        return cat

    def _shape(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(self.accum, self.micro, *x.shape[1:])

    # -- updates ------------------------------------------------------------------------------

    def minibatches(self, data: dict[str, np.ndarray], n: int, rng: np.random.Generator):
        """Shuffled minibatches of the ``n`` rows of ``data`` (the last padded with
        zero-weight rows): host dicts of [A, B, ...] arrays."""
        mb = self.accum * self.micro
        order = rng.permutation(n)
        for start in range(0, n, mb):
            idx = order[start : start + mb]
            yield {k: self._shape(_take(v, idx, mb)) for k, v in data.items()}

    def update(
        self,
        data: dict[str, np.ndarray],
        n: int,
        rng: np.random.Generator,
        *,
        epochs: int,
        train_policy: bool,
        train_value: bool,
    ) -> list[dict[str, Any]]:
        """PPO epochs over ``data``'s rows; returns the device metrics of every minibatch
        (``{"policy": ..., "value": ...}``, fetched by the caller once the round is done)."""
        out = []
        with sh.use_mesh(self.mesh, self.rules):
            for _ in range(epochs):
                for batch in self.minibatches(data, n, rng):
                    m: dict[str, Any] = {}
                    s = self.state
                    policy, value = s.policy, s.value
                    if train_policy:
                        pb = put_global({k: batch[k] for k in POLICY_KEYS}, self.p_batch_sh)
                        policy, m["policy"] = self.policy_step(policy, pb)
                    if train_value:
                        vb = put_global({k: batch[k] for k in VALUE_KEYS}, self.v_batch_sh)
                        value, m["value"] = self.value_step(value, vb)
                    self.state = RLState(policy=policy, value=value, reference=s.reference)
                    out.append(m)
        return out

    # -- weight sync --------------------------------------------------------------------------

    def sync(self, sampler: Any) -> None:
        """The policy's current weights -> ``sampler`` (on device, no recompilation)."""
        state = nnx.state(nnx.merge(self.policy_graphdef, self.state.policy.params))
        target = sampler._abstract  # noqa: SLF001 - the sampler's own shapes and dtypes
        treedef = jax.tree.structure(target)
        leaves = jax.tree.leaves(state)
        if len(leaves) != treedef.num_leaves:
            raise ValueError(
                f"The policy has {len(leaves)} parameter arrays and the sampler's model "
                f"{treedef.num_leaves}; build the sampler from the same base model."
            )
        if not hasattr(self, "_sync_copy"):
            shards = sampler._param_shardings  # noqa: SLF001
            self._sync_copy = _copy_fn(
                None if shards is None else jax.tree.leaves(shards),
                [a.dtype for a in jax.tree.leaves(target)],
            )
        sampler.update_params(jax.tree.unflatten(treedef, self._sync_copy(leaves)))

    def abstract_state(self) -> RLState:
        return abstract_like(self.state, self.shardings)


def put_global(batch: dict[str, np.ndarray], shardings: dict[str, Any]) -> dict[str, jax.Array]:
    """A host batch that every process holds whole -> global sharded arrays (each process
    places only its own devices' slices)."""
    if jax.process_count() == 1:
        return {k: jax.device_put(x, shardings[k]) for k, x in batch.items()}
    return {
        k: jax.make_array_from_callback(x.shape, shardings[k], lambda i, x=x: x[i])
        for k, x in batch.items()
    }


def _take(x: np.ndarray, idx: np.ndarray, size: int) -> np.ndarray:
    """Rows ``idx`` of ``x``, padded with zero rows to ``size``."""
    out = np.zeros((size, *x.shape[1:]), x.dtype)
    out[: len(idx)] = x[idx]
    return out
