"""Where a run reports: ``metrics.jsonl``, TensorBoard event files, a progress bar.

``metrics.jsonl`` holds one JSON object per logged step (at least ``step`` and
``loss``). It is append-safe across restarts: a resumed run first drops every line
beyond the restored step (and any half-written last line a SIGKILL left), so the
file never duplicates or loses a step.

TensorBoard event files are written by a dependency-free writer (TFRecord framing
with masked CRC32C around hand-encoded ``Event`` protos with scalar summaries), so
neither TensorFlow nor tensorboardX is needed to log; ``tensorboard --logdir
WORKDIR`` reads them.
"""

from __future__ import annotations

import json
import math
import os
import socket
import struct
import sys
import time
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

_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_bytes(num: int, payload: bytes) -> bytes:
    return _varint((num << 3) | 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int, *, file_version: str | None = None, scalars=None) -> bytes:
    msg = b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step)
    if file_version is not None:
        msg += _field_bytes(3, file_version.encode())
    if scalars:
        summary = b""
        for tag, value in scalars.items():
            v = _field_bytes(1, tag.encode()) + b"\x15" + struct.pack("<f", float(value))
            summary += _field_bytes(1, v)
        msg += _field_bytes(5, summary)
    return msg


def _record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return (
        header
        + struct.pack("<I", _masked_crc(header))
        + data
        + struct.pack("<I", _masked_crc(data))
    )


class TensorBoardWriter:
    """Scalars to ``logdir/events.out.tfevents.*`` (one new file per process start).

    Args:
      logdir: the directory (created).
      resume_step: the step a resumed run restarts from (0 for a fresh run).
    """

    def __init__(self, logdir: str | os.PathLike, resume_step: int = 0):
        logdir = Path(logdir)
        logdir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        self._f = open(logdir / name, "ab")  # noqa: SIM115
        self._f.write(_record(_event(time.time(), 0, file_version="brain.Event:2")))
        if resume_step > 0:
            # SessionLog(status=START) at the first new step: TensorBoard then discards the
            # points a killed run logged beyond its last checkpoint, as metrics.jsonl does.
            start = _event(time.time(), resume_step + 1) + _field_bytes(7, b"\x08\x01")
            self._f.write(_record(start))
        self._f.flush()

    def scalars(self, step: int, values: Mapping[str, Any]) -> None:
        clean = {}
        for k, v in values.items():
            v = _py(v)
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                clean[k] = v
        if clean:
            self._f.write(_record(_event(time.time(), int(step), scalars=clean)))
            self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_tensorboard_scalars(path: str | os.PathLike) -> list[tuple[int, str, float]]:
    """Parses an event file written by `TensorBoardWriter` (for tests): (step, tag, value)."""
    data = Path(path).read_bytes()
    out, pos = [], 0
    while pos < len(data):
        (n,) = struct.unpack_from("<Q", data, pos)
        (hcrc,) = struct.unpack_from("<I", data, pos + 8)
        assert hcrc == _masked_crc(data[pos : pos + 8]), "bad header crc"
        msg = data[pos + 12 : pos + 12 + n]
        (dcrc,) = struct.unpack_from("<I", data, pos + 12 + n)
        assert dcrc == _masked_crc(msg), "bad data crc"
        pos += 16 + n
        step, tags = 0, []
        for num, val in _parse(msg):
            if num == 2:
                step = val
            elif num == 5:
                for vnum, vval in _parse(val):
                    if vnum == 1:
                        fields = dict(_parse(vval))
                        tags.append((fields[1].decode(), struct.unpack("<f", fields[2])[0]))
        out.extend((step, t, v) for t, v in tags)
    return out


def _parse(msg: bytes):
    pos = 0
    while pos < len(msg):
        key, pos = _read_varint(msg, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _read_varint(msg, pos)
        elif wire == 1:
            val, pos = msg[pos : pos + 8], pos + 8
        elif wire == 5:
            val, pos = msg[pos : pos + 4], pos + 4
        else:
            n, pos = _read_varint(msg, pos)
            val, pos = msg[pos : pos + n], pos + n
        yield num, val


def _read_varint(b: bytes, pos: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        c = b[pos]
        pos += 1
        out |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return out, pos


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
