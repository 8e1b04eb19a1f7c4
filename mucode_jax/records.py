"""The versioned JSONL codec of the records that stages write for each other.

One record per line, ``{"version": VERSION, "kind": ..., ...fields}``:

* ``trajectory``: a `types.Trajectory` (the rollout engine's output, one line per finished
  search, appended as searches finish);
* ``score``: one verifier score, keyed by (problem id, search, turn, candidate), all 0-based
  but the search index (`write_scores`, `read_scores`).

A last line cut short by a crash is cut from the file when it is read, so an appending writer
continues after the last complete record. A record of another version is refused with one
sentence naming the file: the package never reads what an older layout wrote.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from mucode_jax.types import Trajectory

log = logging.getLogger("mucode_jax.records")

VERSION = 1

ScoreKey = tuple[str, int, int, int]  # (problem id, search, turn, candidate)
Scores = Mapping[ScoreKey, float]


def _line(kind: str, fields: dict[str, Any]) -> str:
    return json.dumps({"version": VERSION, "kind": kind, **fields}) + "\n"


def append_trajectory(f: IO[str], trajectory: Trajectory) -> None:
    """Appends one trajectory line to an open file and flushes it."""
    f.write(_line("trajectory", trajectory.to_json()))
    f.flush()


def _read(path: Path, kind: str, *, repair: bool = False) -> list[dict[str, Any]]:
    """The complete ``kind`` lines of ``path``.

    Only the *last* line may be incomplete (a writer killed mid-line): it is skipped, and with
    ``repair`` (a writer about to append) cut from the file, with a warning either way. Any
    other line that is not a JSON object raises `ValueError` naming the file and line; the file
    is never changed then (so a wrong path or a damaged file loses nothing).
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    rows, good_end = [], 0
    for lineno, raw in enumerate(lines, 1):
        try:
            row = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            if lineno < len(lines):
                raise ValueError(
                    f"{path}:{lineno} is not a JSON {kind} record ({e}); fix or remove that "
                    "line, or pass the right file (the file was not changed)."
                ) from None
            what = "cut from the file" if repair else "skipped"
            log.warning("%s: the incomplete last line (%d bytes) is %s.", path, len(raw), what)
            if repair:
                with open(path, "r+b") as f:
                    f.truncate(good_end)
            return rows
        if not isinstance(row, dict) or row.get("version") != VERSION:
            version = row.get("version") if isinstance(row, dict) else None
            raise ValueError(
                f"{path} holds records of version {version}, but this mucode_jax reads version "
                f"{VERSION}; rerun the stage that wrote it into a fresh workdir."
            )
        if row.get("kind") != kind:
            raise ValueError(
                f"{path} holds {row.get('kind')!r} records, not {kind!r} records; pass the file "
                "of the stage that writes them."
            )
        rows.append(row)
        good_end += len(raw)
    if repair and not data.endswith(b"\n") and data:  # a complete last line without its newline
        with open(path, "ab") as f:
            f.write(b"\n")
    return rows


def read_trajectories(path: str | os.PathLike, *, repair: bool = False) -> list[Trajectory]:
    """The trajectories of a rollout JSONL, in file order (none if it does not exist).

    An incomplete last line (a crash mid-write) is skipped; ``repair=True`` (a writer that will
    append to the file) also cuts it from the file. Any other bad line raises `ValueError`."""
    return [Trajectory.from_json(r) for r in _read(Path(path), "trajectory", repair=repair)]


def write_trajectories(path: str | os.PathLike, trajectories: Iterable[Trajectory]) -> None:
    """Writes a rollout JSONL at once (atomically), in the order given."""
    _write_atomic(Path(path), (_line("trajectory", t.to_json()) for t in trajectories))


def _write_atomic(path: Path, lines: Iterable[str]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(lines)
    os.replace(tmp, path)


def write_scores(path: str | os.PathLike, scores: Scores) -> None:
    """Writes verifier scores, one line per (problem, search, turn, candidate)."""
    _write_atomic(
        Path(path),
        (
            _line("score", {"key": list(k), "score": float(s)})
            for k, s in sorted(scores.items(), key=lambda kv: kv[0])
        ),
    )


def read_scores(path: str | os.PathLike) -> dict[ScoreKey, float]:
    """The scores `write_scores` wrote."""
    out: dict[ScoreKey, float] = {}
    for r in _read(Path(path), "score"):
        pid, search, turn, cand = r["key"]
        out[(pid, search, turn, cand)] = r["score"]
    return out
