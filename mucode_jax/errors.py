"""What the launchers report as one sentence (``<launcher>: <sentence>``) instead of a traceback:
a user's mistake (a bad config value, a wrong path, a damaged file), never a bug of ours."""

from __future__ import annotations

import os
from pathlib import Path

from mucode_jax.multihost import MultihostError

USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, MultihostError)


def check_workdir(path: str | os.PathLike) -> None:
    """Raises ValueError when ``--workdir`` names something that is not a directory."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"--workdir {str(p)!r} is a file; give a directory (new or a run's).")
