"""The persistent XLA compilation cache that every launcher turns on.

A real run compiles its train step, sampler buckets and scorer for minutes; with the cache a
resumed or repeated run (and every later stage of the μCode driver) loads the executables
instead. The directory comes from ``$MUCODE_JAX_COMPILATION_CACHE`` (``off`` or an empty value
turns it off), else JAX's own ``$JAX_COMPILATION_CACHE_DIR``, else ``~/.cache/mucode_jax/xla``.
Entries are keyed by the
program, the JAX/XLA versions and the devices, so a stale entry is never used; processes of a
multi-host job may share the directory.
"""

from __future__ import annotations

import os

ENV = "MUCODE_JAX_COMPILATION_CACHE"
DEFAULT = "~/.cache/mucode_jax/xla"


def enable(
    path: str | os.PathLike | None = None, *, min_compile_seconds: float = 1.0
) -> str | None:
    """Points JAX's persistent cache at `path` (default: the environment's or `DEFAULT`).

    Only programs that took at least `min_compile_seconds` to compile are stored. Returns the
    directory, or None when the cache is off. Call it before the first compilation.
    """
    import jax

    if path is None:
        path = os.environ.get(ENV)
        if path is None:
            path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or DEFAULT
    path = os.fspath(path)
    if path.strip().lower() in ("", "off", "0", "none"):
        return None
    path = os.path.abspath(os.path.expanduser(path))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise ValueError(
            f"The compilation cache directory {path!r} cannot be created ({e.strerror}); "
            f"set {ENV} to a writable directory or to 'off'."
        ) from None
    jax.config.update("jax_compilation_cache_dir", path)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
