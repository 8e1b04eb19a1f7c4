"""mucode_jax: multi-turn code generation with execution feedback, in JAX/Flax NNX.

The top-level names are imported lazily: `mucode_jax.execution` (the sandboxed
executor service) must be importable without importing JAX.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# One entry point per stage (problems -> rollouts -> verifier -> relabel -> trainer ->
# evaluation -> the whole loop), plus the models.
_EXPORTS = {
    "Llama": "mucode_jax.models.llama",
    "LlamaConfig": "mucode_jax.models.llama",
    "Verifier": "mucode_jax.models.verifier",
    "load_pretrained": "mucode_jax.models.hf",
    "save_pretrained": "mucode_jax.models.hf",
    "generate": "mucode_jax.sampling",
    "load_problems": "mucode_jax.data.problems",
    "run_search": "mucode_jax.rollout",
    "train_verifier": "mucode_jax.training",
    "build_sft_data": "mucode_jax.algorithms.relabel",
    "train_sft": "mucode_jax.training",
    "evaluate_from_config": "mucode_jax.evaluation",
    "run_mucode": "mucode_jax.algorithms.mucode",
}
_NAMES = {"run_mucode": "run"}  # exported name -> name in its module

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), _NAMES.get(name, name))
    raise AttributeError(f"module 'mucode_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))
