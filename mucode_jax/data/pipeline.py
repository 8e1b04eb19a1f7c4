"""grain input pipelines: deterministic shuffling, epochs, packing/padding, batching.

Both pipelines are `grain.IterDataset`s whose iterators have ``get_state`` /
``set_state``; the trainer saves that state (a small JSON dict) with each
checkpoint, so a resumed run reads exactly the batches an uninterrupted run reads.
Order: shuffle (a new permutation every epoch, from ``seed``) -> repeat(epochs) ->
pack or pad to ``seq_len`` -> batch ``rows`` -> pad the last partial batch with
empty rows (weight 0), so no example is ever dropped.

Every batch array is ``[rows, ...]``; the trainer reshapes rows to
``[grad_accum, micro_batch, ...]``. With several processes each one runs this same pipeline
over the global stream and keeps only its own rows of every global batch (``keep_rows``,
from `mucode_jax.training.feed.BatchFeed`), so the batches do not depend on the number of
processes and every process yields the same number of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

SFT_KEYS = ("inputs", "targets", "weights", "segment_ids", "positions")


def _pad_to(x: np.ndarray, length: int) -> np.ndarray:
    pad = [(0, length - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
    return np.pad(x, pad)


def _unpacked_row(ex: dict[str, np.ndarray], seq_len: int) -> dict[str, np.ndarray]:
    n = len(ex["inputs"])
    if n > seq_len:
        raise ValueError(
            f"An example of {n} tokens is longer than seq_len={seq_len}; truncate it first."
        )
    return {
        "inputs": _pad_to(ex["inputs"], seq_len),
        "targets": _pad_to(ex["targets"], seq_len),
        "weights": _pad_to(ex["weights"], seq_len),
        "segment_ids": _pad_to(np.ones(n, np.int32), seq_len),
        "positions": _pad_to(np.arange(n, dtype=np.int32), seq_len),
    }


def _packed_row(row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        "inputs": row["inputs"],
        "targets": row["targets"],
        "weights": row["weights"] * (row["inputs_segment_ids"] != 0),
        "segment_ids": row["inputs_segment_ids"].astype(np.int32),
        "positions": row["inputs_positions"].astype(np.int32),
    }


class _PadBatch(grain.transforms.Map):
    """Pads a partial last batch to ``rows`` with empty rows (all zeros: weight 0), then
    keeps this process's rows (``keep``: global row indices; None keeps all)."""

    def __init__(self, rows: int, keep: Sequence[int] | None = None):
        self.rows = rows
        self.keep = None if keep is None else np.asarray(keep, np.int64)

    def map(self, batch):
        out = {k: _pad_to(v, self.rows) for k, v in batch.items()}
        return out if self.keep is None else {k: v[self.keep] for k, v in out.items()}


def _check_keep(keep_rows: Sequence[int] | None, rows: int) -> None:
    if keep_rows is not None and (len(keep_rows) == 0 or max(keep_rows) >= rows):
        raise ValueError(
            f"keep_rows must be row indices in [0, {rows}) (this process's rows of the global "
            "batch); build them with mucode_jax.training.feed.BatchFeed."
        )


def _source(examples: Sequence[Any], seed: int, num_epochs: int, shuffle: bool):
    if len(examples) == 0:
        raise ValueError(
            "The dataset is empty: no examples are left to train on; check the input and the skip counts."
        )
    ds = grain.MapDataset.source(list(examples))
    if shuffle:
        ds = ds.shuffle(seed=seed)
    return ds.repeat(num_epochs)


def sft_dataset(
    examples: Sequence[dict[str, np.ndarray]],
    *,
    seq_len: int,
    rows: int,
    pack: bool = True,
    seed: int = 0,
    num_epochs: int = 1,
    shuffle: bool = True,
    keep_rows: Sequence[int] | None = None,
) -> grain.IterDataset:
    """Batches of SFT rows: each key in `SFT_KEYS`, shape [rows, seq_len] (or
    [len(keep_rows), seq_len]).

    Args:
      examples: from `mucode_jax.data.sft.sft_examples_from_conversations` (each at most
        ``seq_len`` long).
      seq_len: row length.
      rows: rows per global batch.
      pack: first-fit pack several examples per row (segment ids 1, 2, ... and positions
        restarting at 0 in each); otherwise one example per row, right-padded.
      seed: shuffling seed (each epoch gets its own permutation).
      num_epochs: passes over the data.
      shuffle: shuffle at all.
      keep_rows: the global row indices this process keeps (None: all rows).
    """
    _check_keep(keep_rows, rows)
    ds = _source(examples, seed, num_epochs, shuffle)
    if pack:
        ds = ds.map(
            lambda ex: {k: ex[k] for k in ("inputs", "targets", "weights")}
        ).to_iter_dataset()
        ds = grain.experimental.FirstFitPackIterDataset(
            ds,
            length_struct={"inputs": seq_len, "targets": seq_len, "weights": seq_len},
            num_packing_bins=rows,
            shuffle_bins=False,
        )
        ds = ds.map(_packed_row)
    else:
        ds = ds.map(lambda ex: _unpacked_row(ex, seq_len)).to_iter_dataset()
    return ds.batch(rows, drop_remainder=False).map(_PadBatch(rows, keep_rows))


def verifier_pair_dataset(
    pairs: Sequence[dict[str, np.ndarray]],
    *,
    seq_len: int,
    rows: int,
    seed: int = 0,
    num_epochs: int = 1,
    shuffle: bool = True,
    pad_id: int = 0,
    keep_rows: Sequence[int] | None = None,
) -> grain.IterDataset:
    """Batches of verifier pairs: ``tokens``/``mask`` [rows, 2, seq_len], ``weights`` [rows].

    Args:
      pairs: dicts with ``chosen`` and ``rejected`` int32 token arrays (at most ``seq_len``).
      seq_len: padded length (right padding with ``pad_id``; the score is read at the last
        real token).
      rows: rows per global batch; ``keep_rows``: this process's rows of it (None: all).
    """
    _check_keep(keep_rows, rows)
    ds = _source(pairs, seed, num_epochs, shuffle)

    def row(p):
        toks = np.full((2, seq_len), pad_id, np.int32)
        mask = np.zeros((2, seq_len), np.int32)
        for j, key in enumerate(("chosen", "rejected")):
            x = np.asarray(p[key], np.int32)
            if len(x) > seq_len:
                raise ValueError(
                    f"A verifier sample of {len(x)} tokens is longer than seq_len={seq_len}."
                )
            toks[j, : len(x)] = x
            mask[j, : len(x)] = 1
        return {"tokens": toks, "mask": mask, "weights": np.float32(1.0)}

    ds = ds.map(row).to_iter_dataset()
    return ds.batch(rows, drop_remainder=False).map(_PadBatch(rows, keep_rows))
