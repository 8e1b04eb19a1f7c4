"""Resource limits of one sandboxed run, and how the CPU limit is derived from a reference.

Every run of a program (one per assert/function suite, one per stdin/stdout case) gets:

* CPU time ``cpu_seconds`` (RLIMIT_CPU rounded up, plus a /proc poll for fractional limits):
  scores must not depend on machine speed or load, so the primary limit is CPU time. When the
  suite carries a reference solution, the limit becomes ``max(cpu_seconds, cpu_factor x ref)``
  where ``ref`` is the reference's CPU time on the same run (the evalplus rule).
* wall time ``wall_seconds`` (default ``3 x cpu + 2``): a backstop for programs that sleep or
  block; the whole process group (and every leftover descendant) is killed.
* ``timeout_reruns`` (default 1): a timeout that load could have caused is re-run that many
  times before it is reported (the service's rule, `load_suspect`): CPU time inflates on a
  busy host, so a run killed at a limit close to a real program's cost is confirmed first.
* address space ``memory_mb`` (RLIMIT_AS), file size ``file_size_mb`` (RLIMIT_FSIZE), open files
  ``open_files`` (RLIMIT_NOFILE), processes+threads ``processes`` (RLIMIT_NPROC; enforced only
  where the run gets its own uid), and ``output_bytes`` for each of stdout and stderr.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

_INT_FIELDS = (
    "memory_mb",
    "output_bytes",
    "file_size_mb",
    "open_files",
    "processes",
    "timeout_reruns",
)
_FLOAT_FIELDS = ("cpu_seconds", "wall_seconds", "cpu_factor", "rerun_margin")
_MINIMUM = {
    "cpu_seconds": 0.05,
    "wall_seconds": 0.1,
    "cpu_factor": 1.0,
    "memory_mb": 64,
    "output_bytes": 1024,
    "file_size_mb": 1,
    "open_files": 16,
    "processes": 1,
    "timeout_reruns": 0,
    "rerun_margin": 0.0,
}


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-run limits; see the module docstring. Defaults suit MBPP/HumanEval/CodeContests."""

    cpu_seconds: float = 4.0
    wall_seconds: float | None = None
    memory_mb: int = 1024
    output_bytes: int = 1 << 20
    file_size_mb: int = 16
    open_files: int = 64
    processes: int = 16
    cpu_factor: float = 4.0
    timeout_reruns: int = 1
    rerun_margin: float = 1.0

    def __post_init__(self):
        for name in _INT_FIELDS + _FLOAT_FIELDS:
            value = getattr(self, name)
            if value is None and name == "wall_seconds":
                continue
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if name in _INT_FIELDS:
                ok = ok and float(value).is_integer()
            if not ok or not math.isfinite(value) or value < _MINIMUM[name]:
                kind = "an integer" if name in _INT_FIELDS else "a number"
                raise ValueError(
                    f"Limit {name}={value!r} is invalid; give {kind} >= {_MINIMUM[name]}."
                )
            if name in _INT_FIELDS:
                object.__setattr__(self, name, int(value))
        # Every submitted job sends its limits: build their JSON form once (not a field).
        object.__setattr__(self, "_json", {name: getattr(self, name) for name in _NAMES})

    @property
    def wall(self) -> float:
        """The wall-clock backstop in seconds."""
        return self.wall_seconds if self.wall_seconds is not None else 3 * self.cpu_seconds + 2

    def with_reference(self, reference_cpu: float | None) -> Limits:
        """The limits for a suite whose reference used `reference_cpu` CPU seconds per run."""
        if reference_cpu is None:
            return self
        cpu = max(self.cpu_seconds, self.cpu_factor * reference_cpu)
        if cpu == self.cpu_seconds:
            return self
        wall = None if self.wall_seconds is None else max(self.wall_seconds, 3 * cpu + 2)
        return dataclasses.replace(self, cpu_seconds=round(cpu, 3), wall_seconds=wall)

    def load_suspect(self, reference_cpu: float | None) -> bool:
        """Whether a CPU-limit kill under these limits may be an artefact of load.

        True when there is no reference to compare with, or when the limit is within
        ``rerun_margin`` of the reference-derived one: ``cpu <= (1 + margin) x factor x ref``.
        A limit far above it (the base limit of a suite whose reference takes milliseconds)
        is only reached by a program hundreds of times slower than the reference, whatever
        the load.
        """
        if reference_cpu is None:
            return True
        return self.cpu_seconds <= (1 + self.rerun_margin) * self.cpu_factor * reference_cpu

    def to_json(self) -> dict[str, Any]:
        return dict(self._json)  # all plain numbers (or None)

    @classmethod
    def from_json(cls, d: dict[str, Any] | None, base: Limits | None = None) -> Limits:
        """Limits from a JSON dict (unknown keys are an error), on top of `base`."""
        base = base or _DEFAULT
        if d is None:
            return base
        if not isinstance(d, dict):
            raise ValueError(
                f"'limits' must be an object like {{\"cpu_seconds\": 2}}, got {type(d).__name__}."
            )
        unknown = sorted(set(d) - set(_NAMES))
        if unknown:
            raise ValueError(f"Unknown limit {unknown[0]!r}; known limits are {sorted(_NAMES)}.")
        try:
            # The same few limits come with every job; the key keeps each value's type (2 and
            # 2.0 and True are equal, but not the same limit).
            return _replace(base, tuple(sorted((k, type(v), v) for k, v in d.items())))
        except TypeError:  # an unhashable value: let the validation name it
            return dataclasses.replace(base, **d)


@functools.lru_cache(maxsize=256)
def _replace(base: Limits, items: tuple) -> Limits:
    return dataclasses.replace(base, **{k: v for k, _, v in items})


_NAMES = tuple(f.name for f in dataclasses.fields(Limits))
_DEFAULT = Limits()
