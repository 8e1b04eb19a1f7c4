"""grain input pipelines: deterministic shuffling, epochs, packing/padding, batching.

Two SFT batchings. `sft_step_dataset` (the default, ``data.batch_unit="examples"``): every
optimizer step consumes exactly ``batch_size`` *examples* (the official TRL run's 16), per
epoch, the last step of an epoch taking what is left; packing only changes the layout (a
step's examples are first-fit packed into as few rows as possible, padded up to a whole
number of micro-batches), never which examples a step trains on. `sft_dataset`
(``batch_unit="rows"``, our earlier behaviour): ``rows`` *rows* per step, each row packed with
as many examples as fit, the stream running across epoch boundaries.

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


def _check_nonempty(examples: Sequence[Any]) -> None:
    if len(examples) == 0:
        raise ValueError(
            "The dataset is empty: no examples are left to train on; check the input and the skip counts."
        )


def _source(examples: Sequence[Any], seed: int, num_epochs: int, shuffle: bool):
    _check_nonempty(examples)
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


def _pack_rows(
    group: Sequence[dict[str, np.ndarray]], seq_len: int, pack: bool
) -> list[list[dict[str, np.ndarray]]]:
    """First-fit (in order) of a step's examples into rows of ``seq_len`` tokens; one per row
    when ``pack`` is False."""
    rows: list[list[dict[str, np.ndarray]]] = []
    used: list[int] = []
    for ex in group:
        n = len(ex["inputs"])
        if n > seq_len:
            raise ValueError(
                f"An example of {n} tokens is longer than seq_len={seq_len}; truncate it first."
            )
        for i in range(len(rows) if pack else 0):
            if used[i] + n <= seq_len:
                rows[i].append(ex)
                used[i] += n
                break
        else:
            rows.append([ex])
            used.append(n)
    return rows


def _row_arrays(members: Sequence[dict[str, np.ndarray]], seq_len: int) -> dict[str, np.ndarray]:
    row = {k: np.zeros(seq_len, np.float32 if k == "weights" else np.int32) for k in SFT_KEYS}
    at = 0
    for seg, ex in enumerate(members, start=1):
        n = len(ex["inputs"])
        row["inputs"][at : at + n] = ex["inputs"]
        row["targets"][at : at + n] = ex["targets"]
        row["weights"][at : at + n] = ex["weights"]
        row["segment_ids"][at : at + n] = seg
        row["positions"][at : at + n] = np.arange(n)
        at += n
    return row


def step_groups(n: int, batch_size: int, *, seed: int, num_epochs: int, shuffle: bool):
    """The example indices of every optimizer step: each epoch a permutation (from ``seed``
    and the epoch) cut into steps of ``batch_size``, the last one of an epoch partial. So a run
    takes ``ceil(n / batch_size) * num_epochs`` steps."""
    groups = []
    for epoch in range(num_epochs):
        order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
        groups.extend(tuple(order[i : i + batch_size]) for i in range(0, n, batch_size))
    return groups


class StepDataset:
    """`sft_step_dataset`'s result: a grain iterator source plus its step count."""

    def __init__(self, ds: grain.IterDataset, num_steps: int):
        self.ds, self.num_steps = ds, num_steps

    def __iter__(self):
        return iter(self.ds)

    def __len__(self) -> int:
        return self.num_steps


def sft_step_dataset(
    examples: Sequence[dict[str, np.ndarray]],
    *,
    seq_len: int,
    batch_size: int,
    micro_rows: int,
    pack: bool = False,
    seed: int = 0,
    num_epochs: int = 1,
    shuffle: bool = True,
    keep_rows: Sequence[int] | None = None,
) -> StepDataset:
    """Batches of SFT rows in which every optimizer step holds exactly ``batch_size``
    examples (fewer only in an epoch's last step): keys `SFT_KEYS`, shape [R, seq_len].

    Without packing a step is ``batch_size`` rows, one example each (right-padded). With
    packing its examples are first-fit packed into rows (segment ids 1, 2, ...; positions
    restarting at 0), and the rows padded with empty rows (weight 0) up to R = a whole number
    of micro-batches of ``micro_rows`` (between 1 and ``batch_size / micro_rows``
    micro-batches: a bucket of row counts, one compiled step each). The loss of a step is its
    target tokens' mean either way (`mucode_jax.training.losses`), so packing changes the
    layout only, never the optimisation.

    Args:
      examples: from `mucode_jax.data.sft.sft_examples_from_conversations`.
      seq_len: row length.
      batch_size: examples per optimizer step.
      micro_rows: rows per micro-batch (``batch_size / grad_accum``).
      pack, seed, num_epochs, shuffle: as in `sft_dataset`.
      keep_rows: this process's global row indices of a full step of ``batch_size`` rows
        (`feed.BatchFeed.rows`); of a step of R rows it keeps those below R.
    """
    _check_nonempty(examples)
    if micro_rows < 1 or batch_size % micro_rows:
        raise ValueError(
            f"batch_size={batch_size} is not a multiple of the micro-batch of {micro_rows} rows; "
            "make the batch a whole number of micro-batches."
        )
    _check_keep(keep_rows, batch_size)
    examples = list(examples)
    groups = step_groups(
        len(examples), batch_size, seed=seed, num_epochs=num_epochs, shuffle=shuffle
    )
    keep = None if keep_rows is None else np.asarray(keep_rows, np.int64)

    def step(group):
        rows = _pack_rows([examples[i] for i in group], seq_len, pack)
        total = -(-len(rows) // micro_rows) * micro_rows
        arrays = [_row_arrays(r, seq_len) for r in rows]
        arrays += [_row_arrays([], seq_len)] * (total - len(rows))
        batch = {k: np.stack([a[k] for a in arrays]) for k in SFT_KEYS}
        return batch if keep is None else {k: v[keep[keep < total]] for k, v in batch.items()}

    ds = grain.MapDataset.source(groups).map(step).to_iter_dataset()
    return StepDataset(ds, len(groups))


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
