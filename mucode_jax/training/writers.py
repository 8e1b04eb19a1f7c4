"""Where a run reports: ``metrics.jsonl``, TensorBoard event files, a progress bar.

``metrics.jsonl`` holds one JSON object per logged step (at least ``step`` and
``loss``). It is append-safe across restarts: a resumed run first drops every line
beyond the restored step (and any half-written last line a SIGKILL left), so the
file never duplicates or loses a step.

TensorBoard event files are written with tensorboardX (no TensorFlow needed);
``tensorboard --logdir WORKDIR`` reads them. In a multi-process job only process 0
opens these writers (`mucode_jax.training.loop`).
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


class MetricsLog:
    """``WORKDIR/metrics.jsonl``, truncated to ``resume_step`` when opened."""

    def __init__(self, path: str | os.PathLike, resume_step: int = 0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                if isinstance(rec, dict) and rec.get("step", math.inf) <= resume_step:
                    kept.append(line)
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)
        self._f = open(self.path, "a")  # noqa: SIM115 - kept open for the run

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        rec = {"step": int(step), **{k: _py(v) for k, v in metrics.items()}}
        self._f.write(json.dumps(rec) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (skipping a truncated last line)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def _py(v: Any) -> Any:
    if isinstance(v, np.ndarray | np.generic) or hasattr(v, "__array__"):
        v = np.asarray(v)
        return v.item() if v.size == 1 else v.tolist()
    return v


# ---------------------------------------------------------------------------------------
# TensorBoard event files.


class TensorBoardWriter:
    """Scalars to ``logdir/events.out.tfevents.*`` through tensorboardX (one new file per
    process start).

    Args:
      logdir: the directory (created).
      resume_step: the step a resumed run restarts from (0 for a fresh run). A resumed run
        starts its file with SessionLog(START) at ``resume_step + 1`` (tensorboardX's
        ``purge_step``): TensorBoard then discards the points a killed run logged beyond its
        last checkpoint, as `MetricsLog` does.
    """

    def __init__(self, logdir: str | os.PathLike, resume_step: int = 0):
        from tensorboardX import SummaryWriter

        Path(logdir).mkdir(parents=True, exist_ok=True)
        self._w = SummaryWriter(
            str(logdir), purge_step=resume_step + 1 if resume_step > 0 else None, flush_secs=10
        )

    def scalars(self, step: int, values: Mapping[str, Any]) -> None:
        """Writes the finite numeric entries of ``values`` (others are skipped) and flushes."""
        wrote = False
        for k, v in values.items():
            v = _py(v)
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                self._w.add_scalar(k, v, int(step))
                wrote = True
        if wrote:
            self._w.flush()

    def close(self) -> None:
        self._w.close()


def read_tensorboard_scalars(path: str | os.PathLike) -> list[tuple[int, str, float]]:
    """The scalars of one event file, as (step, tag, value) (for tests; TFRecord framing
    around `Event` protos, CRCs not checked)."""
    from tensorboardX.proto import event_pb2

    data = Path(path).read_bytes()
    out, pos = [], 0
    while pos + 12 <= len(data):
        (n,) = struct.unpack_from("<Q", data, pos)
        event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + n])
        pos += 16 + n
        for value in event.summary.value:
            out.append((int(event.step), value.tag, float(value.simple_value)))
    return out


class Progress:
    """A tqdm bar over optimizer steps with tokens/s, loss and ETA (stderr, process 0)."""

    def __init__(self, total: int, initial: int = 0, enabled: bool = True, desc: str = "train"):
        self._bar = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit="step",
                file=sys.stderr,
                dynamic_ncols=True,
            )

    def update(self, n: int, **postfix: Any) -> None:
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix({k: _fmt(v) for k, v in postfix.items()}, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
