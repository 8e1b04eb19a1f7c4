"""How worker processes are started: inside one bubblewrap sandbox each, or the fallback.

Trade-off (measured in docs/execution.md): a fresh ``bwrap`` per program costs ~5 ms plus a fresh
interpreter (~20-40 ms), far too slow for hundreds of programs per second per core. So each
*worker* is one long-lived bubblewrap sandbox — own pid, network, ipc, uts and mount
namespaces; read-only binds of the system and the Python install only (no home directories, no
repository, no datasets); a size-capped private tmpfs /tmp; a clean environment — and forks one
child per run inside it. Each child gets its own process group, a fresh scratch directory that
is wiped afterwards, rlimits, no_new_privs and (when the service runs as root) an unprivileged
uid of its own, so it cannot signal, trace or read its worker. Runs in one worker are sequential;
everything a run leaves behind (processes, files) is removed before the next one starts.

Fallback (no usable ``bwrap``): workers run as plain processes with the same per-child limits,
uid switch (when root), process-group kill and scratch wipe, but without namespaces — a program
can then read world-readable files and use the network. The executor warns once.
"""

from __future__ import annotations

import functools
import os
import shutil
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
    cmd = [shutil.which("bwrap") or "bwrap"]
    for d in SYSTEM_DIRS:
        cmd += ["--ro-bind-try", d, d]
    cmd += _python_binds(python)
    cmd += ["--ro-bind", PACKAGE_DIR, f"{SANDBOX_ROOT}/mucode_jax/execution"]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--size", str(tmpfs_mb << 20), "--tmpfs", "/tmp"]
    cmd += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
    cmd += ["--unshare-cgroup-try", "--hostname", "sandbox"]
    if os.geteuid() != 0:
        cmd += ["--unshare-user"]
    cmd += ["--die-with-parent", "--new-session", "--clearenv", "--chdir", "/tmp"]
    for k, v in sandbox_env().items():
        cmd += ["--setenv", k, v]
    return cmd


def sandbox_env() -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}


@functools.cache
def probe_bwrap(python: str) -> str | None:
    """None if a bwrap sandbox starts Python here, else the reason it does not."""
    if shutil.which("bwrap") is None:
        return (
            "bubblewrap (bwrap) is not installed; install it with `apt-get install -y bubblewrap`"
        )
    try:
        proc = subprocess.run(
            bwrap_command(python) + [python, "-I", "-c", "import os; os.listdir('/proc')"],
            capture_output=True,
            timeout=30,
            env=sandbox_env(),
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bwrap failed to start: {e}"
    if proc.returncode != 0:
        return f"bwrap failed: {proc.stderr.decode(errors='replace').strip()[:300]}"
    return None


def worker_command(python: str, config_json: str, sandboxed: bool) -> list[str]:
    """Full command line of one worker process."""
    if sandboxed:
        return bwrap_command(python) + [
            python,
            "-I",
            "-B",
            "-c",
            BOOT,
            SANDBOX_ROOT,
            "worker",
            config_json,
        ]
    return [python, "-I", "-B", "-c", BOOT, package_root(), "worker", config_json]
