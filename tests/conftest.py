"""Shared test fixtures: the real benchmark data beside the repo, and tiny HF models."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Launchers started by tests keep their compiled programs out of $HOME, in one cache shared with
# the multi-process tests (entries are keyed by program and JAX version: never stale).
os.environ.setdefault(
    "MUCODE_JAX_COMPILATION_CACHE",
    os.environ.get(
        "MUCODE_TEST_XLA_CACHE", os.path.join(tempfile.gettempdir(), "mucode_jax_test_xla_cache")
    ),
)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is not present (the benchmark data lives beside the repo)")
    return SHARED_DATA
