"""Training: losses, train state, jitted steps, checkpoints, SFT and verifier trainers.

Public API (imported lazily, so ``import mucode_jax.training`` stays cheap):

  train_sft(config, conversations, workdir, *, tokenizer, init_params_from=None) -> TrainResult
  train_verifier(config, pairs_or_samples, workdir, *, tokenizer, init_params_from=None) -> TrainResult
  sft_defaults(), verifier_defaults()  -> ml_collections.ConfigDict
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "train_sft": "mucode_jax.training.sft",
    "TrainResult": "mucode_jax.training.sft",
    "train_verifier": "mucode_jax.training.verifier",
    "sft_defaults": "mucode_jax.training.config",
    "verifier_defaults": "mucode_jax.training.config",
    "TrainState": "mucode_jax.training.state",
    "create_train_state": "mucode_jax.training.state",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mucode_jax.training' has no attribute {name!r}")
