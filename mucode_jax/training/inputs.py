"""Where the launchers' tokenizer and data come from: built-in toy data or local files.

``config.tokenizer``: ``"toy"`` builds the small local BPE (`mucode_jax.data.tokenizer`)
on the toy corpus, cached under ``$MUCODE_CACHE`` (default ``~/.cache/mucode_jax``);
anything else is a local tokenizer directory. ``config.data.source``: ``"toy"`` for the
built-in tiny dataset, or a ``.jsonl`` path (SFT: one conversation per line; verifier:
one sample or pair per line).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import ml_collections


def cache_dir() -> Path:
    return Path(os.environ.get("MUCODE_CACHE", Path.home() / ".cache" / "mucode_jax"))


def tokenizer_from_config(config: ml_collections.ConfigDict) -> Any:
    from mucode_jax.data import tokenizer as tk

    if config.tokenizer in ("toy", "toy_fixed"):
        from mucode_jax.data import toy

        vocab = int(config.get("tokenizer_vocab_size", 1024))
        if config.tokenizer == "toy_fixed":  # the demo's: a shipped word list, no BPE training
            return tk.fixed_tokenizer(toy.demo_vocabulary(vocab))
        return tk.build_tokenizer(toy.toy_corpus(), vocab, cache_dir=cache_dir() / "tokenizers")
    return tk.load_tokenizer(config.tokenizer)


def _jsonl(path: str) -> list[Any]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data.source {path!r} is not a file; give a .jsonl path or 'toy'.")
    rows = []
    for i, line in enumerate(p.read_text().splitlines()):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"Line {i + 1} of {path} is not JSON ({e.msg}); fix or remove it."
                ) from None
    return rows


def sft_conversations_from_config(config: ml_collections.ConfigDict) -> list[Any]:
    if config.data.source == "toy":
        from mucode_jax.data.sft import toy_trajectories

        return toy_trajectories(config.data.num_problems, seed=config.seed)
    return _jsonl(config.data.source)


def verifier_rows_from_config(config: ml_collections.ConfigDict) -> list[Any]:
    if config.data.source == "toy":
        from mucode_jax.data.sft import toy_trajectories
        from mucode_jax.data.verifier_data import verifier_samples_from_trajectories

        trajectories = toy_trajectories(config.data.num_problems, seed=config.seed, per_problem=4)
        return verifier_samples_from_trajectories(trajectories)
    return _jsonl(config.data.source)


def quiet_checkpoint_logs() -> None:
    """Hides orbax's per-save INFO lines (warnings and errors still show)."""
    import logging

    class _Filter(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return record.levelno >= logging.WARNING or "orbax" not in record.pathname

    for handler in logging.getLogger().handlers + logging.getLogger("absl").handlers:
        handler.addFilter(_Filter())
    logging.getLogger("absl").addFilter(_Filter())
