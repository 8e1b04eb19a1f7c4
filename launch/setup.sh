#!/usr/bin/env bash
# Sets up .venv for mucode_jax on a fresh Debian machine (no GPU needed).
#   bash launch/setup.sh          library + test extras (torch CPU 2.13.0 for the PyTorch parity checks)
# Installs bubblewrap (the code executor's sandbox) when run as root with apt-get available.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v bwrap >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq bubblewrap) >/dev/null 2>&1 \
    || echo "setup: could not install bubblewrap; the executor will use its rlimit-only fallback." >&2
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>/dev/null || true
# torch first, pinned: it is the CPU build on disk; anything else would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e '.[test]'
