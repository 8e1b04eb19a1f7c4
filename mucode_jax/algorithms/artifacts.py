"""Content-addressed stage artifacts: resume at the first unfinished stage.

Every stage of a long job writes its output into ``ROOT/<stage>-<key>/`` where ``key`` is a
hash of the stage's name, its own settings and the keys of the artifacts it reads. A stage
works in ``ROOT/<stage>-<key>.partial/`` (where it may keep resumable state: a rollout
JSONL, training checkpoints) and is published by one atomic rename once it has finished,
so:

* a killed run finds every finished stage under its key and redoes only the rest (an
  unfinished stage resumes from what its ``.partial`` folder holds);
* a changed setting changes the keys of the stages it reaches, and only those are redone;
  artifacts of other settings stay beside them (several runs can share a root).

On several processes (`mucode_jax.multihost`) the root must be one shared directory (checked
at start, one sentence otherwise). Every process computes the same stage key (checked) and
runs the stage function in the same ``.partial`` folder, since stages that train or sample
need every process; a stage writes its host files from process 0 only. Process 0 publishes
the folder; the others wait at a barrier and then read it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mucode_jax import multihost

log = logging.getLogger("mucode_jax.artifacts")


def _canonical(obj: Any) -> Any:
    if isinstance(obj, Artifact):  # by identity only: not its path, not whether it was reused
        return {"artifact": obj.name, "key": obj.key}
    if hasattr(obj, "to_dict"):  # ml_collections.ConfigDict
        obj = obj.to_dict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return repr(obj)


def content_key(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (configs, artifact keys, strings)."""
    blob = json.dumps(_canonical(list(parts)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class Artifact:
    """A finished stage's output folder."""

    name: str
    key: str
    path: Path
    reused: bool = False


class Store:
    """Stage artifacts under one root folder, with the wall time of each stage run."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        multihost.check_shared_directory(self.root, "the artifact root")
        self.timings: dict[str, float] = {}

    def run(
        self,
        name: str,
        inputs: Mapping[str, Any],
        fn: Callable[[Path], None],
    ) -> Artifact:
        """Returns the artifact of ``name`` for ``inputs``, running ``fn(partial_dir)`` if needed.

        ``fn`` writes the stage's files into the folder it is given; it may be called again on
        the same folder after a crash and should resume from what it finds there.
        """
        key = content_key(name, inputs)
        final = self.root / f"{name}-{key}"
        multihost.check_same(key, f"the key of stage {name}")
        done = final.is_dir()
        multihost.check_same(done, f"whether stage {name} ({final.name}) is finished")
        if done:
            log.info("stage %s: reusing %s", name, final.name)
            return Artifact(name, key, final, reused=True)
        partial = self.root / f"{name}-{key}.partial"
        partial.mkdir(parents=True, exist_ok=True)
        if multihost.is_main():
            (partial / "inputs.json").write_text(
                json.dumps(_canonical(inputs), indent=2, sort_keys=True)
            )
        log.info("stage %s: running in %s", name, partial.name)
        start = time.monotonic()
        fn(partial)
        elapsed = time.monotonic() - start
        multihost.barrier(f"stage {name}-{key} ran")
        if multihost.is_main():
            (partial / "stage.json").write_text(
                json.dumps({"name": name, "key": key, "seconds": elapsed}, indent=2)
            )
            os.replace(partial, final)
        multihost.barrier(f"stage {name}-{key} published")
        self.timings[f"{name}-{key}"] = elapsed
        log.info("stage %s: done in %.1f s", name, elapsed)
        return Artifact(name, key, final)

    def discard_partials(self) -> None:
        """Removes unfinished stage folders (not needed for resuming; frees disk)."""
        for p in self.root.glob("*.partial"):
            shutil.rmtree(p, ignore_errors=True)
