"""How worker processes are started: inside one bubblewrap sandbox each, or the fallback.

Trade-off (measured in docs/execution.md): a fresh ``bwrap`` per program costs ~5 ms plus a fresh
interpreter (~20-40 ms), far too slow for hundreds of programs per second per core. So each
*worker* is one long-lived bubblewrap sandbox — own pid (the worker is its pid 1: it adopts every
orphan, and nothing inside can signal it), network, ipc, uts and mount namespaces; read-only binds of the system and the Python install only (no home directories, no
repository, no datasets); a size-capped private tmpfs /tmp; a clean environment — and forks one
child per run inside it. Each child gets its own process group, a fresh scratch directory that
is wiped afterwards, rlimits, no_new_privs and (when the service runs as root) an unprivileged
uid of its own, so it cannot signal, trace or read its worker. Runs in one worker are sequential;
everything a run leaves behind (processes, files) is removed before the next one starts.

Workers run Python with ``-I -S -B``: no site start-up (an installation's ``.pth`` files may
import whole libraries at every interpreter start); `worker` adds the site-packages directory
and the ``exit``/``quit`` built-ins itself, once.

Fallback (no usable ``bwrap``): workers run as plain processes with the same per-child limits,
uid switch (when root), process-group kill and scratch wipe, but without namespaces — a program
can then read world-readable files and use the network. The executor warns once.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))  # .../mucode_jax/execution
SANDBOX_ROOT = "/opt/mucode"  # where the package directory appears inside the sandbox
SCRATCH = "/tmp/run"
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")

# Imports only `mucode_jax.execution.<module>`: the top-level `mucode_jax` package (which may
# import JAX lazily or not) is replaced by an empty namespace, so no JAX ever loads here.
BOOT = (
    "import sys, types\n"
    "pkg = types.ModuleType('mucode_jax'); pkg.__path__ = [sys.argv[1] + '/mucode_jax']\n"
    "sys.modules['mucode_jax'] = pkg\n"
    "import importlib\n"
    "importlib.import_module('mucode_jax.execution.' + sys.argv[2]).main(sys.argv[3])\n"
)


def _which_bwrap() -> str | None:
    import shutil  # here: the client imports this module too, and never needs shutil

    return shutil.which("bwrap")


def package_root() -> str:
    """The directory that contains the ``mucode_jax`` package directory (host side)."""
    return os.path.dirname(os.path.dirname(PACKAGE_DIR))


def python_executable() -> str:
    return os.path.realpath(sys.executable)


def _python_binds(python: str) -> list[str]:
    """Read-only binds of the interpreter's prefix when it lives outside the system dirs.

    Parent directories are created world-traversable (``--perms 0755 --dir``): the host's may be
    private (``/root`` is 0700), and the unprivileged child must reach the standard library.
    """
    dirs = {os.path.realpath(sys.base_prefix), os.path.dirname(os.path.dirname(python))}
    out: list[str] = []
    made: set[str] = set()
    for d in sorted(dirs):
        if d == "/" or any(d == s or d.startswith(s + "/") for s in SYSTEM_DIRS):
            continue
        parent = os.path.dirname(d)
        chain = []
        while parent not in ("/", "") and parent not in made:
            chain.append(parent)
            parent = os.path.dirname(parent)
        for p in reversed(chain):
            out += ["--perms", "0755", "--dir", p]
            made.add(p)
        out += ["--ro-bind", d, d]
    return out


def bwrap_command(python: str, tmpfs_mb: int = 256) -> list[str]:
    """The bwrap prefix that starts one worker sandbox (see the module docstring)."""
    cmd = [_which_bwrap() or "bwrap"]
    for d in SYSTEM_DIRS:
        cmd += ["--ro-bind-try", d, d]
    cmd += _python_binds(python)
    cmd += ["--ro-bind", PACKAGE_DIR, f"{SANDBOX_ROOT}/mucode_jax/execution"]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--size", str(tmpfs_mb << 20), "--tmpfs", "/tmp"]
    cmd += ["--unshare-ipc", "--unshare-pid", "--as-pid-1", "--unshare-net", "--unshare-uts"]
    cmd += ["--unshare-cgroup-try", "--hostname", "sandbox"]
    if os.geteuid() != 0:
        cmd += ["--unshare-user"]
    cmd += ["--die-with-parent", "--new-session", "--clearenv", "--chdir", "/tmp"]
    for k, v in sandbox_env().items():
        cmd += ["--setenv", k, v]
    return cmd


def sandbox_env() -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}


PROBE = "import os; os.listdir('/proc')"


def start_probe(python: str) -> subprocess.Popen | str:
    """Start a bwrap sandbox that runs Python once (the probe), or the reason it cannot start.

    The service starts its workers while the probe runs (`finish_probe`), so the probe costs no
    start-up time when bwrap works; Python runs with ``-S`` (no site, no ``.pth`` files) there.
    """
    if _which_bwrap() is None:
        return (
            "bubblewrap (bwrap) is not installed; install it with `apt-get install -y bubblewrap`"
        )
    try:
        return subprocess.Popen(
            bwrap_command(python) + [python, "-I", "-S", "-c", PROBE],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=sandbox_env(),
        )
    except OSError as e:
        return f"bwrap failed to start: {e}"


def finish_probe(probe: subprocess.Popen | str) -> str | None:
    """None if the probe's sandbox ran Python, else the reason it did not."""
    if isinstance(probe, str):
        return probe
    try:
        _, err = probe.communicate(timeout=30)
    except subprocess.TimeoutExpired as e:
        probe.kill()
        probe.wait()
        return f"bwrap failed to start: {e}"
    if probe.returncode != 0:
        return f"bwrap failed: {err.decode(errors='replace').strip()[:300]}"
    return None


@functools.cache
def probe_bwrap(python: str) -> str | None:
    """None if a bwrap sandbox starts Python here, else the reason it does not."""
    return finish_probe(start_probe(python))


def compile_package() -> None:
    """Write the bytecode cache of the package's modules where it is missing or stale.

    Workers see the package read-only and run with ``-B``; without a cache every worker start
    would compile its modules from source. The service calls this once its workers are started
    (off the start-up path); unwritable package directories are left alone.
    """
    import importlib.util
    import py_compile

    for name in sorted(os.listdir(PACKAGE_DIR)):
        if not name.endswith(".py"):
            continue
        src = os.path.join(PACKAGE_DIR, name)
        try:
            st = os.stat(src)
            with open(importlib.util.cache_from_source(src), "rb") as f:
                head = f.read(16)
            if head[:4] == importlib.util.MAGIC_NUMBER and head[8:16] == (
                (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
                + (st.st_size & 0xFFFFFFFF).to_bytes(4, "little")
            ):
                continue
        except OSError:
            pass
        try:
            py_compile.compile(src, doraise=True)
        except (OSError, py_compile.PyCompileError):
            pass


def worker_command(python: str, config_json: str, sandboxed: bool) -> list[str]:
    """Full command line of one worker process."""
    if sandboxed:
        return bwrap_command(python) + [
            python,
            "-I",
            "-S",
            "-B",
            "-c",
            BOOT,
            SANDBOX_ROOT,
            "worker",
            config_json,
        ]
    return [python, "-I", "-S", "-B", "-c", BOOT, package_root(), "worker", config_json]
