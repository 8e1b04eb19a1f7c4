"""A persistent cache of reference solutions' CPU cost, one JSON line per test suite.

The CPU limit of a suite with a reference is ``max(cpu_seconds, cpu_factor x reference CPU)``
(`Limits.with_reference`). The reference's cost is measured once per suite by the service; with
a cache file (``Executor(reference_cache=...)``, the CLI's ``--reference-cache``, a rollout's
workdir) it is measured once per workdir instead of once per executor, so a resumed or repeated
stage applies exactly the same limits as the first.

File format: ``{"key": <sha256 of the suite>, "cpu": <seconds>}`` per line, appended as suites
are first measured (several processes may append to one file: each line is one ``write`` of
well under the pipe-atomic size). A torn or malformed line is skipped. Only ``assert`` and
``stdio`` suites are cached: for them the reference sets nothing but the limit; ``function`` and
``check`` suites need the reference's outputs, so their reference runs in every executor.

The cost belongs to the machine it was measured on: delete the file when moving a workdir to a
machine of a different speed.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

CACHED_KINDS = ("assert", "stdio")


def suite_key(suite: dict[str, Any]) -> str | None:
    """The cache key of a suite whose reference only sets the CPU limit, else None."""
    if suite.get("kind") not in CACHED_KINDS or not isinstance(suite.get("reference"), str):
        return None
    import hashlib  # here: an executor without a cache file never loads OpenSSL

    blob = json.dumps(suite, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


class ReferenceCostCache:
    """Reference CPU seconds by suite key, backed by an append-only JSONL file."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._costs: dict[str, float] = {}
        parent = os.path.dirname(self.path)
        try:
            if parent:
                os.makedirs(parent, exist_ok=True)
            with open(self.path, "a", encoding="utf-8"):
                pass
        except OSError as e:
            raise ValueError(
                f"reference_cache={self.path!r} cannot be written ({e.strerror}); "
                "give a path in a writable directory."
            ) from None
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    key, cpu = rec["key"], rec["cpu"]
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line (a killed writer) or a foreign line
                if isinstance(key, str) and type(cpu) in (int, float) and cpu >= 0:
                    self._costs.setdefault(key, float(cpu))

    def __len__(self) -> int:
        return len(self._costs)

    def get(self, key: str) -> float | None:
        with self._lock:
            return self._costs.get(key)

    def put(self, key: str, cpu: float) -> None:
        """Record a measured cost (the first one of a key wins, in memory and on disk)."""
        with self._lock:
            if key in self._costs:
                return
            self._costs[key] = cpu
            line = json.dumps({"key": key, "cpu": cpu}) + "\n"
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
