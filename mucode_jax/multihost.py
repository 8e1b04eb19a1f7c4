"""Several processes, one job: start-up, agreement checks and barriers with timeouts.

A multi-host job (a TPU VM slice, several GPU nodes, or 2 processes x 4 CPU devices in the
tests) runs the same command in every process. Each process computes the same things from
the same config and data; what crosses processes is only (a) the jitted programs'
collectives and (b) the small agreements here, which go through the `jax.distributed`
coordination service's key-value store and barriers, never through a device collective, so
each has a timeout and fails with one sentence instead of hanging:

* `check_same(value, what)`: every process hashes ``value`` (a config, a step count, a data
  fingerprint) and compares with the others; a mismatch raises `MultihostError` naming the
  thing and the processes that differ.
* `barrier(name)`: e.g. the others wait while process 0 writes ``metrics.jsonl`` and the HF
  export.
* `all_gather(value, what)`: every process's small JSON-able value, e.g. the conversations
  each contributes to the next collective sampler call (`rollout._Scheduler`).
* `initialize()`: `jax.distributed.initialize` with a heartbeat timeout
  (``MUCODE_HEARTBEAT_TIMEOUT_S``, default 60 s): when a process dies, the coordination
  service notices the missing heartbeats and terminates every other process with JAX's
  sentence "Terminating process because the JAX distributed service detected fatal errors.
  This most likely indicates that another task died" within about that time (at once when
  the coordinator's process is the one that died).

With one process every function is a cheap no-op.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import re
import zlib
from typing import Any

import jax
import numpy as np

log = logging.getLogger("mucode_jax.multihost")

DEFAULT_HEARTBEAT_TIMEOUT_S = 60
DEFAULT_SHUTDOWN_TIMEOUT_S = 60
DEFAULT_AGREE_TIMEOUT_S = 600  # how long a process waits for the others at a check or barrier

_counter = itertools.count()


class MultihostError(RuntimeError):
    """The processes of one job disagree, or one did not arrive in time."""


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer number of seconds; fix it.") from None


def wants_distributed(env: dict[str, str] | None = None) -> bool:
    """Whether the environment describes a multi-process job.

    Recognised: ``JAX_COORDINATOR_ADDRESS`` (with ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``),
    SLURM with more than one task, Open MPI with more than one rank, and Cloud TPU multi-host
    VMs (``TPU_WORKER_HOSTNAMES`` with several hosts).
    """
    env = dict(os.environ if env is None else env)
    return (
        "JAX_COORDINATOR_ADDRESS" in env
        or int(env.get("SLURM_NTASKS", "1")) > 1
        or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
        or len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1
    )


def initialize() -> bool:
    """Calls `jax.distributed.initialize()` when the environment describes a multi-host job.

    Must run before any other JAX call. Timeouts (seconds) come from
    ``MUCODE_HEARTBEAT_TIMEOUT_S`` (a dead process is noticed after this long; default 60)
    and ``MUCODE_SHUTDOWN_TIMEOUT_S`` (how long a finished process waits for the others at
    exit; default 60). Returns whether it initialised.
    """
    env = os.environ
    if not wants_distributed():
        return False
    kwargs: dict[str, Any] = {
        "heartbeat_timeout_seconds": _env_int(
            "MUCODE_HEARTBEAT_TIMEOUT_S", DEFAULT_HEARTBEAT_TIMEOUT_S
        ),
        "shutdown_timeout_seconds": _env_int(
            "MUCODE_SHUTDOWN_TIMEOUT_S", DEFAULT_SHUTDOWN_TIMEOUT_S
        ),
    }
    if "JAX_COORDINATOR_ADDRESS" in env:
        kwargs["coordinator_address"] = env["JAX_COORDINATOR_ADDRESS"]
        if "JAX_NUM_PROCESSES" in env:
            kwargs["num_processes"] = int(env["JAX_NUM_PROCESSES"])
        if "JAX_PROCESS_ID" in env:
            kwargs["process_id"] = int(env["JAX_PROCESS_ID"])
    jax.distributed.initialize(**kwargs)
    log.info(
        "process %d of %d, %d local / %d global devices; a dead process stops the job within ~%d s",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        kwargs["heartbeat_timeout_seconds"],
    )
    return True


def is_main() -> bool:
    """Process 0: the one that writes shared files (metrics, exports, artifacts)."""
    return jax.process_index() == 0


def _client():
    # The coordination service client of `jax.distributed` (key-value store and barriers
    # with timeouts); there is no public handle to it in jax 0.10 / 0.11.
    from jax._src import distributed

    client = distributed.global_state.client
    if client is None:
        raise MultihostError(
            f"{jax.process_count()} processes but jax.distributed is not initialised; call "
            "mucode_jax.multihost.initialize() before any other JAX call."
        )
    return client


def _timeout_ms(timeout_s: float | None) -> int:
    if timeout_s is None:
        timeout_s = _env_int("MUCODE_AGREE_TIMEOUT_S", DEFAULT_AGREE_TIMEOUT_S)
    return int(timeout_s * 1000)


def fingerprint(value: Any) -> str:
    """A stable short hash of a JSON-able value (ConfigDicts via ``to_dict``), or of bytes."""
    if isinstance(value, bytes):
        blob = value
    else:
        if hasattr(value, "to_dict"):
            value = value.to_dict()
        blob = json.dumps(value, sort_keys=True, default=_stable_repr).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _stable_repr(obj: Any) -> str:
    # Without the memory address a repr names the same object on every process.
    return re.sub(r" at 0x[0-9a-f]+", "", repr(obj))


def check_same(value: Any, what: str, *, timeout_s: float | None = None) -> None:
    """Raises `MultihostError` unless every process passes an equal ``value``.

    Every process must call it, in the same order. ``what`` names the thing in the error
    ("the training config", "the number of training steps").
    """
    if jax.process_count() == 1:
        return
    mine = fingerprint(value)
    client = _client()
    n, me = jax.process_count(), jax.process_index()
    key = f"mucode/check/{next(_counter)}"
    client.key_value_set(f"{key}/{me}", mine)
    got = {}
    for p in range(n):
        try:
            got[p] = client.blocking_key_value_get(f"{key}/{p}", _timeout_ms(timeout_s))
        except Exception:  # noqa: BLE001 - the service raises a generic runtime error
            raise MultihostError(
                f"Process {p} did not reach the check of {what} within "
                f"{_timeout_ms(timeout_s) // 1000} s; see its log (it may have died or be stuck)."
            ) from None
    differ = sorted(p for p, h in got.items() if h != got[0])
    if differ:
        extra = f" (here: {value!r})" if len(repr(value)) <= 80 else ""
        raise MultihostError(
            f"{what[:1].upper()}{what[1:]} differs between processes (process 0 vs {differ}){extra}; "
            "start every process with the same command, config and data."
        )


def barrier(name: str, *, timeout_s: float | None = None) -> None:
    """Waits until every process has arrived (no-op with one process)."""
    if jax.process_count() == 1:
        return
    label = f"mucode/barrier/{next(_counter)}/{name}"
    try:
        _client().wait_at_barrier(label, _timeout_ms(timeout_s))
    except MultihostError:
        raise
    except Exception as e:  # noqa: BLE001
        raise MultihostError(
            f"Not every process reached the barrier {name!r} within "
            f"{_timeout_ms(timeout_s) // 1000} s ({str(e).splitlines()[0][:120]}); see the other "
            "processes' logs."
        ) from None


def check_shared_directory(path: Any, what: str = "the workdir") -> None:
    """Raises `MultihostError` unless every process sees the same directory at ``path``.

    Checkpoints (orbax writes each process's shards into one directory) and the files
    process 0 writes for the others assume a shared filesystem: a mounted bucket on a TPU
    VM slice, NFS or Lustre on a GPU cluster. Process 0 writes a token file there; every
    other process must read it back.
    """
    if jax.process_count() == 1:
        return
    from pathlib import Path

    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    client = _client()
    key = f"mucode/shared/{next(_counter)}"
    if is_main():
        token = os.urandom(8).hex()
        marker = directory / f".mucode_shared_{token}"
        marker.write_text(token)
        client.key_value_set(key, token)
    else:
        try:
            token = client.blocking_key_value_get(key, _timeout_ms(None))
        except Exception:  # noqa: BLE001
            raise MultihostError(
                f"Process 0 did not reach the shared-directory check of {what} in time; see its log."
            ) from None
        marker = directory / f".mucode_shared_{token}"
    seen = marker.is_file() and marker.read_text() == token
    client.key_value_set(f"{key}/{jax.process_index()}", "1" if seen else "0")
    blind = []
    for p in range(jax.process_count()):
        try:
            if client.blocking_key_value_get(f"{key}/{p}", _timeout_ms(None)) != "1":
                blind.append(p)
        except Exception:  # noqa: BLE001
            raise MultihostError(
                f"Process {p} did not reach the shared-directory check of {what} in time; see its log."
            ) from None
    barrier(f"shared directory {key}")
    if is_main():
        marker.unlink(missing_ok=True)
    if blind:
        raise MultihostError(
            f"{what[:1].upper()}{what[1:]} {str(directory)!r} is not shared between processes "
            f"(processes {blind} do not see the file process 0 wrote there); put it on a "
            "filesystem every host mounts (a bucket on a TPU VM slice, NFS or Lustre on a GPU "
            "cluster)."
        )


def all_gather(value: Any, what: str, *, timeout_s: float | None = None) -> list[Any]:
    """Every process's ``value`` (JSON-able), in process order; ``[value]`` with one process.

    Every process must call it, in the same order. The values travel through the
    coordination service's key-value store (zlib-compressed JSON, no device collective), so
    a process that does not arrive within the timeout fails with one sentence naming
    ``what`` instead of hanging. Meant for small host data exchanged in lock-step (the
    conversations of one generation call); bulk data goes through the shared workdir.
    """
    if jax.process_count() == 1:
        return [value]
    client = _client()
    n, me = jax.process_count(), jax.process_index()
    round_ = next(_counter)
    key = f"mucode/gather/{round_}"
    client.key_value_set_bytes(f"{key}/{me}", zlib.compress(json.dumps(value).encode(), 1))
    got = []
    for p in range(n):
        try:
            blob = client.blocking_key_value_get_bytes(f"{key}/{p}", _timeout_ms(timeout_s))
        except Exception:  # noqa: BLE001
            raise MultihostError(
                f"Process {p} did not reach the exchange of {what} within "
                f"{_timeout_ms(timeout_s) // 1000} s; see its log (it may have died or be stuck)."
            ) from None
        got.append(json.loads(zlib.decompress(blob)))
    # Every process has written this round's value, so it has read all of the previous
    # gather's: ours from then can go (the store stays small over a long run).
    if _gathered and _gathered[-1] is not None:
        client.key_value_delete(_gathered[-1])
    _gathered[:] = [f"{key}/{me}"]
    return got


_gathered: list[str] = []  # this process's key of the previous all_gather, deleted after the next


def to_host(x: jax.Array) -> np.ndarray:
    """A device array -> host numpy; on several processes every process gets the whole
    array (gathered when it is not fully addressable here)."""
    if not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))
