"""Length-prefixed frames between client, service and workers (all trusted processes).

A frame is ``u32 total length | u32 header length | header JSON | blob bytes ...``; the header's
``"_blobs"`` lists the blob lengths. Blobs carry raw bytes (a child's stdout, stderr and result
records) without JSON-escaping them.
"""

from __future__ import annotations

import json
import os
import struct

_HEAD = struct.Struct(">II")
MAX_FRAME = 1 << 31
# Bytes asked of one read: a pipe holds 64 KiB by default, and a larger request makes
# ``os.read`` allocate a buffer of that size (an mmap above glibc's threshold) and shrink it.
READ_SIZE = 1 << 16
# One encoder and decoder for every frame (``json.dumps`` with arguments builds an encoder per
# call). Headers are ASCII JSON: every process here writes them with ``ensure_ascii``.
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=True).encode
_decode = json.JSONDecoder().decode


def pack(header: dict, blobs: tuple[bytes, ...] = ()) -> bytes:
    if blobs:
        header = dict(header, _blobs=[len(b) for b in blobs])
    head = _encode(header).encode()
    total = len(head) + sum(len(b) for b in blobs)
    return b"".join((_HEAD.pack(total, len(head)), head, *blobs))


def unpack(body: bytes, head_len: int) -> tuple[dict, list[bytes]]:
    header = _decode(body[:head_len].decode())
    blobs, pos = [], head_len
    for n in header.pop("_blobs", ()):
        blobs.append(body[pos : pos + n])
        pos += n
    return header, blobs


def write_bytes(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_frame(fd: int, header: dict, blobs: tuple[bytes, ...] = ()) -> None:
    write_bytes(fd, pack(header, blobs))


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, READ_SIZE))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> tuple[dict, list[bytes]] | None:
    """Blocking read of one frame; None at end of file."""
    head = _read_exact(fd, _HEAD.size)
    if head is None:
        return None
    total, head_len = _HEAD.unpack(head)
    body = _read_exact(fd, total)
    if body is None:
        return None
    return unpack(body, head_len)


class FrameStream:
    """Blocking frames from one fd, read in large chunks (one ``read`` serves several frames
    when they arrive together)."""

    def __init__(self, fd: int):
        self._fd = fd
        self._reader = FrameReader()
        self._frames: list[tuple[dict, list[bytes]]] = []

    def next(self) -> tuple[dict, list[bytes]] | None:
        """The next frame; None at end of file."""
        while not self._frames:
            data = os.read(self._fd, READ_SIZE)
            if not data:
                return None
            self._frames = self._reader.feed(data)
        return self._frames.pop(0)


class FrameReader:
    """Incremental frame parser for non-blocking reads."""

    def __init__(self):
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[dict, list[bytes]]]:
        self._buf += data
        frames = []
        while len(self._buf) >= _HEAD.size:
            total, head_len = _HEAD.unpack_from(self._buf)
            if len(self._buf) < _HEAD.size + total:
                break
            body = bytes(self._buf[_HEAD.size : _HEAD.size + total])
            del self._buf[: _HEAD.size + total]
            frames.append(unpack(body, head_len))
        return frames
