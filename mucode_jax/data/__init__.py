"""Datasets: benchmark loaders (`load_problems`), the toy task family, and data pipelines.

`load_problems(name, path=..., split=...)` turns MBPP, sanitized MBPP, HumanEval, MBPP+ and
CodeContests rows into `mucode_jax.types.Problem`s with executor test suites (see
`mucode_jax.data.problems`). Submodules are imported on demand, so importing this package stays
cheap (no JAX, no `datasets` until a hub load).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DATASETS": "mucode_jax.data.problems",
    "RowError": "mucode_jax.data.problems",
    "load_problems": "mucode_jax.data.problems",
    "public_tests_text": "mucode_jax.data.problems",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mucode_jax.data' has no attribute {name!r}")
