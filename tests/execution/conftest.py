"""Fixtures for the executor tests: one executor service per test process, and the real data."""

from __future__ import annotations

from pathlib import Path

import pytest

from mucode_jax.execution import Executor

# ../shared/data beside the repository root (tests/execution/ is two levels below it).
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="session")
def executor():
    with Executor(workers=2) as ex:
        yield ex


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is not present (the benchmark data lives beside the repo)")
    return SHARED_DATA
