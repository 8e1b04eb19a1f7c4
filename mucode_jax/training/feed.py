"""Host batches -> global arrays: each process supplies only the rows of its own devices.

Every process runs the same deterministic grain pipeline over the *global* stream (the
shuffle, the epochs and first-fit packing are functions of the seed and the data only),
and keeps just the rows its devices hold (`BatchFeed.rows`, given to the pipeline). The
global batch is then assembled from the processes' rows (`BatchFeed.put`, the
`jax.make_array_from_process_local_data` idea, with an explicit row map so any device
order works). So:

* a 2-process run trains on exactly the batches of a 1-process run on the same mesh (same
  packing, same padding rows), which is what makes their losses equal;
* every process yields the same number of batches by construction (the trainer still
  checks it, with the data's fingerprint, before the first step: `multihost.check_same`);
* a partial last batch is padded with fully masked rows on every process alike.

Batch arrays are ``[A, B, ...]`` (A = grad_accum micro-batches of B rows); the batch axis is
sharded over ("data", "fsdp") (`steps.batch_shardings`). Global row ``a * B + j`` of the
pipeline's flat batch is micro-batch ``a``, row ``j``.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from mucode_jax import sharding as sh
from mucode_jax.training import steps as steps_lib


class BatchFeed:
    """Which global rows this process reads, and how its rows become global arrays.

    Args:
      global_rows: rows per optimizer step (``config.batch_size``).
      accum: micro-batches per step (``config.grad_accum``).
      mesh, rules: the train step's mesh and logical rules.
    """

    def __init__(self, global_rows: int, accum: int, mesh: Mesh, rules: sh.LogicalRules):
        if global_rows % accum:
            raise ValueError(
                f"batch_size={global_rows} is not a multiple of grad_accum={accum}; make the "
                "batch a whole number of micro-batches."
            )
        self.accum, self.micro = accum, global_rows // accum
        self.mesh, self.rules = mesh, rules
        two_d = sh.logical_to_sharding(("accum", "batch"), mesh, rules)
        mine: set[int] = set()
        for index in two_d.addressable_devices_indices_map((accum, self.micro)).values():
            mine.update(range(*index[1].indices(self.micro)))
        self.micro_rows = np.array(sorted(mine), np.int64)  # positions j this process holds
        self.rows = (np.arange(accum)[:, None] * self.micro + self.micro_rows[None]).reshape(-1)
        self._local = {int(j): i for i, j in enumerate(self.micro_rows)}

    @property
    def local_rows(self) -> int:
        return len(self.rows)

    def num_micro(self, local: dict[str, np.ndarray]) -> int:
        """Micro-batches in a local batch: ``accum``, or fewer for a packed step of
        `pipeline.sft_step_dataset` that needs fewer rows (a prefix of this process's rows)."""
        n = int(np.shape(next(iter(local.values())))[0])
        a, rem = divmod(n, len(self.micro_rows))
        if rem or not 1 <= a <= self.accum:
            raise ValueError(
                f"A batch of {n} local rows is not 1..{self.accum} micro-batches of "
                f"{len(self.micro_rows)} rows; build the pipeline with this feed's rows."
            )
        return a

    def global_spec(self, local: dict[str, np.ndarray]) -> dict[str, jax.ShapeDtypeStruct]:
        """Shapes of the global ``[A, B, ...]`` arrays, from one local batch."""
        a = self.num_micro(local)
        return {
            k: jax.ShapeDtypeStruct((a, self.micro, *np.shape(v)[1:]), np.asarray(v).dtype)
            for k, v in local.items()
        }

    def put(self, local: dict[str, np.ndarray], shardings: dict[str, Any]) -> dict[str, jax.Array]:
        """This process's rows ``[A * len(micro_rows), ...]`` -> global sharded arrays."""
        out = {}
        a = self.num_micro(local)
        for k, x in local.items():
            x = np.asarray(x).reshape(a, len(self.micro_rows), *np.shape(x)[1:])
            shape = (a, self.micro, *x.shape[2:])
            if jax.process_count() == 1:
                out[k] = jax.device_put(x, shardings[k])
                continue

            def piece(index, x=x):
                rows = range(*index[1].indices(self.micro))
                return x[(index[0], [self._local[j] for j in rows], *index[2:])]

            out[k] = jax.make_array_from_callback(shape, shardings[k], piece)
        return out

    def shardings(self, spec: dict[str, jax.ShapeDtypeStruct]) -> dict[str, Any]:
        return steps_lib.batch_shardings(spec, self.mesh, self.rules)
