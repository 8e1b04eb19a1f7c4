"""A warm worker: one long-lived process (inside its own sandbox) that forks a child per run.

The worker imports the harness, freezes the GC, then serves run requests from the service on
stdin. Before the first run whose source names a common module (`PREIMPORT`: standard-library
modules and numpy), it imports that module and freezes the GC again, so that run and every later
child inherit it. Per run it:

1. makes a fresh scratch directory owned by the run's uid (mode 0700);
2. forks a child that calls `os.setsid` (own session and process group), moves stdin (a memfd or
   /dev/null), stdout, stderr and the result pipe to fds 0-3, closes every other fd, sets
   rlimits (AS, CPU, FSIZE, NOFILE, NPROC, CORE=0) (no_new_privs is set on the worker), drops to the unprivileged
   uid/gid with no supplementary groups, resets signal dispositions and runs
   `harness.child_main` (the environment is the worker's: clean, fixed, set once at start);
3. reads stdout/stderr (capped) and result records while watching the wall clock, the CPU time
   (/proc) and the child's exit (pidfd); kills the whole process group on a limit;
4. removes every process the run left behind — the worker is pid 1 of its sandbox's pid
   namespace (a child subreaper in the fallback), so detached grandchildren are re-parented to
   it and killed (with a ``kill(-1)`` issued *as the run's uid*
   for fork bombs) — reaps all zombies, and wipes the scratch directory;
5. replies with the raw outputs and how the child ended. Judging happens in the service.

The worker never sees expected values; it holds nothing a later child could steal.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import math
import os
import re
import resource
import select
import signal
import stat
import sys
import time

from mucode_jax.execution import harness, protocol

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
RESULT_CAP = 64 << 20
QUIET_SECONDS = 0.02  # how long a run may write before the worker starts reading its pipes
# Modules a worker imports before the first run whose source (preamble, program or setup)
# names them, so that run and every later child inherit them instead of each importing them
# (numpy: the official μCode preamble imports it before every program). A worker imports only
# what its programs name: each module makes every later fork dearer (numpy ~0.3 ms: 60 more
# mappings, 6 MB more private memory). A program that imports one without naming it still works;
# it pays the import itself.
PREIMPORT = (
    "abc array bisect calendar cmath collections collections.abc contextlib copy dataclasses "
    "datetime decimal enum fractions functools hashlib heapq io itertools json math numbers "
    "operator pprint re string struct textwrap time typing unicodedata numpy"
).split()
ALIASES = {"pandas": "numpy", "scipy": "numpy"}  # names of libraries that import a module above
_NAMED = re.compile(
    r"\b(?:"
    + "|".join(re.escape(m) for m in sorted([*PREIMPORT, *ALIASES], key=len, reverse=True))
    + r")\b"
)

_DEVNULL = os.open("/dev/null", os.O_RDONLY)
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _prctl(option: int, arg: int) -> None:
    import ctypes  # imported once, by `_lock_down`

    ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0)


def _lock_down(sandboxed: bool) -> None:
    """The process attributes every child inherits, set once (after each fork they would cost
    more than the fork): no_new_privs (irrevocable: execve can never grant privileges, e.g. via
    setuid binaries), adoption of every orphan, so no process of a run escapes `_sweep`, and
    not dumpable.

    In its sandbox the worker is pid 1 of the pid namespace (``bwrap --as-pid-1``), which
    adopts orphans anyway, and bwrap has set no_new_privs; both are checked, not assumed.

    Not dumpable: without root there is no per-run uid (`Worker.uid` is None), so a run has the
    worker's uid, and the kernel would let it open ``/proc/1/fd/*``: the worker's pipe to the
    service (a forged reply frame shifts the verdicts of every later run) and the service's
    stderr. A non-dumpable process's /proc entries belong to root and pass no same-uid ptrace
    check, and its forked children inherit the flag (a run can set it back only for itself)."""
    if os.getpid() != 1:
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
    with open("/proc/self/status", "rb") as f:
        no_new_privs = b"\nNoNewPrivs:\t1\n" in f.read()
    if not no_new_privs:
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
    _prctl(PR_SET_DUMPABLE, 0)
    if not sandboxed:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _child(spec, scratch, fds, uid, lim) -> None:
    """In the forked child: lock down, then run the harness. Never returns."""
    try:
        os.setsid()
        stdin_fd, out_w, err_w, res_w = fds
        os.dup2(stdin_fd, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.dup2(res_w, 3)
        os.closerange(4, 1 << 20)
        cpu = max(1, math.ceil(lim["cpu"]))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        mem = lim["memory_mb"] << 20
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        fsize = lim["file_size_mb"] << 20
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_NOFILE, (lim["open_files"], lim["open_files"]))
        if uid is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (lim["processes"], lim["processes"]))
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        os.chdir(scratch)  # HOME and TMPDIR already point here (`Worker.__init__`)
        if "tempfile" in sys.modules:
            sys.modules["tempfile"].tempdir = None
        harness.child_main(spec)
    except BaseException as e:  # noqa: BLE001 - visible in the run's stderr
        with contextlib.suppress(Exception):
            os.write(2, f"sandbox setup failed: {type(e).__name__}: {e}\n".encode())
    finally:
        os._exit(harness.EXIT_HARNESS)


class Worker:
    def __init__(self, config: dict):
        self.uid = config.get("uid")
        self.scratch_root = config["scratch"]
        self.sandboxed = config["sandboxed"]
        self.runs = 0
        self.to_import = set(PREIMPORT)  # not imported yet (`_import_named`)
        self.quiet = select.poll()  # waits for a child's exit (its pidfd), made once
        os.makedirs(self.scratch_root, mode=0o711, exist_ok=True)
        os.chmod(self.scratch_root, 0o711)
        # One path for every run's scratch directory (re-created empty each time), so the
        # child's environment is fixed and set once here instead of after every fork.
        self.scratch = os.path.join(self.scratch_root, "s")
        if os.path.exists(self.scratch):
            self._wipe(self.scratch)
        os.environ.clear()
        os.environ.update(
            PATH="/usr/local/bin:/usr/bin:/bin",
            HOME=self.scratch,
            TMPDIR=self.scratch,
            LANG="C.UTF-8",
            PYTHONHASHSEED="0",
            # One BLAS thread: numpy (imported by the official preamble and pre-imported here)
            # must not start thread pools in a worker that forks, nor fight over the CPUs.
            OPENBLAS_NUM_THREADS="1",
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
        )

    # -- one run -----------------------------------------------------------------------------

    def run(self, spec: dict) -> tuple[dict, tuple[bytes, ...]]:
        lim = spec["limits"]
        self.runs += 1
        if self.to_import:
            self._import_named(spec)
        scratch = self.scratch
        if os.path.lexists(scratch):  # a wipe that failed (never expected; see `_wipe`)
            self._wipe(scratch)
        os.mkdir(scratch, 0o700)
        if self.uid is not None:
            os.chown(scratch, self.uid, self.uid)
        stdin_fd = self._stdin(spec.get("stdin"))
        r_out, w_out = os.pipe()
        r_err, w_err = os.pipe()
        r_res, w_res = os.pipe()
        fds = (r_out, r_err, r_res)
        for fd in fds:
            os.set_blocking(fd, False)
        quiet, quiet_ms = self.quiet, min(QUIET_SECONDS, lim["cpu"], lim["wall"]) * 1000
        sys.stderr.flush()  # nothing of the worker's may reach the child's streams
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:
            _child(spec, scratch, (stdin_fd, w_out, w_err, w_res), self.uid, lim)
        # Until the child exits, the worker writes as little memory as it can: every page it
        # writes while the child still shares it is copied. Most runs end within milliseconds,
        # so it sleeps until the child exits while the pipes buffer what the child writes
        # (waking for each record would cost a context switch and more copies); a child that
        # fills a pipe meanwhile waits at most QUIET_SECONDS.
        for fd in (stdin_fd, w_out, w_err, w_res):
            os.close(fd)
        pidfd = -1
        try:
            pidfd = os.pidfd_open(pid)
            quiet.register(pidfd, select.POLLIN)
            try:
                exited = bool(quiet.poll(quiet_ms))
            finally:
                quiet.unregister(pidfd)
            header, blobs = self._monitor(pid, pidfd, fds, lim, t0, exited)
        finally:
            if pidfd >= 0:
                os.close(pidfd)
            for fd in fds:
                os.close(fd)
            header_leftovers = self._sweep()
            self._wipe(scratch)
        header["leftovers"] = header_leftovers
        return header, blobs

    def _import_named(self, spec: dict) -> None:
        """Import the `PREIMPORT` modules this run's source names (each once per worker)."""
        named = set()
        for text in (spec.get("preamble"), spec["code"], spec.get("setup")):
            if text:
                named.update(_NAMED.findall(text))
        new = {ALIASES.get(name, name) for name in named} & self.to_import
        if new:
            for module in sorted(new):
                self.to_import.discard(module)
                with contextlib.suppress(ImportError):
                    importlib.import_module(module)
            gc.collect()
            gc.freeze()

    @staticmethod
    def _stdin(data: str | None) -> int:
        if data is None:
            return os.dup(_DEVNULL)
        fd = os.memfd_create("stdin", 0)
        raw = data.encode("utf-8", "surrogateescape")
        view = memoryview(raw)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
        return fd

    @staticmethod
    def _cpu_of(pid: int) -> float:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            return sum(int(x) for x in fields[11:15]) / _CLK_TCK
        except (OSError, IndexError, ValueError):
            return 0.0

    def _monitor(self, pid, pidfd, fds, lim, t0, exited):
        """Watch the child until it ends (`exited`: it already did), reading its pipes;
        kill it at a limit. Returns the header (how it ended) and its stdout/stderr/records."""
        r_out, r_err, r_res = fds
        caps = {r_out: lim["output_bytes"], r_err: lim["output_bytes"], r_res: RESULT_CAP}
        bufs = {fd: bytearray() for fd in fds}
        open_fds = set(fds)
        killed = None
        cpu_limit, wall_deadline = lim["cpu"], t0 + lim["wall"]

        def read(fd) -> bool:
            """Read what is there; False when a cap is exceeded."""
            while True:
                try:
                    data = os.read(fd, 1 << 16)
                except BlockingIOError:
                    return True
                if not data:
                    open_fds.discard(fd)
                    return True
                bufs[fd] += data
                if len(bufs[fd]) > caps[fd]:
                    del bufs[fd][caps[fd] :]
                    return False

        if not exited:
            poller = select.poll()
            for fd in fds:
                poller.register(fd, select.POLLIN)
            poller.register(pidfd, select.POLLIN)
            for fd in fds:  # what the child wrote during the quiet phase
                if not read(fd):
                    killed = "output"
        while not exited and killed is None:
            now = time.monotonic()
            if now >= wall_deadline:
                killed = "wall"
                break
            wait = wall_deadline - now
            if now - t0 >= cpu_limit:
                if self._cpu_of(pid) > cpu_limit:
                    killed = "cpu"
                    break
                wait = min(wait, 0.02)
            else:
                wait = min(wait, cpu_limit - (now - t0) + 0.005)
            for fd, _ in poller.poll(wait * 1000):
                if fd == pidfd:
                    exited = True
                elif fd in open_fds:
                    if not read(fd):
                        killed = "output"
                        break
                    if fd not in open_fds:
                        poller.unregister(fd)
        if killed is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        _, status, usage = os.wait4(pid, 0)
        wall = time.monotonic() - t0
        for fd in list(open_fds):  # what the child wrote before it ended
            if not read(fd) and killed is None:
                killed = "output"
        header = {
            "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "killed": killed,
            "cpu": usage.ru_utime + usage.ru_stime,
            "wall": wall,
            "maxrss_kb": usage.ru_maxrss,
        }
        return header, (bytes(bufs[r_out]), bytes(bufs[r_err]), bytes(bufs[r_res]))

    # -- cleanup -----------------------------------------------------------------------------

    def _children(self) -> list[int]:
        me = str(os.getpid()).encode()
        out = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me:
                out.append(int(name))
        return out

    def _kill_uid(self) -> None:
        """kill(-1, SIGKILL) as the run's uid: every process of that uid, atomically."""
        pid = os.fork()
        if pid == 0:
            try:
                os.setresuid(self.uid, self.uid, self.uid)
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)

    def _sweep(self) -> int:
        """Kill and reap every process the run left behind; returns how many were found."""
        found = 0
        for attempt in range(500):
            try:
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
            except ChildProcessError:
                return found  # no children at all: nothing left behind
            if self.uid is not None:
                self._kill_uid()
            children = self._children()
            found += len(children)
            for p in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
            time.sleep(min(0.001 * (attempt + 1), 0.02))
        return found

    def _wipe(self, path: str) -> None:
        """Empty the scratch directory `path` for the next run, whatever the last one left.

        Never raises and never leaves `path` behind: a tree too deep for `shutil.rmtree` (it
        recurses: 3,000 nested directories raise RecursionError) or for full paths (PATH_MAX)
        is removed one level at a time (`_remove_deep`); one that still resists is renamed
        aside, so the next run gets a fresh directory and the worker keeps serving."""
        try:
            os.rmdir(path)  # the usual case: the run left the directory empty
            return
        except OSError:
            pass
        import shutil  # only when a run left files behind (shutil is slow to import)

        def retry(func, p, _exc):
            with contextlib.suppress(OSError):
                os.chmod(os.path.dirname(p), stat.S_IRWXU)
                if os.path.isdir(p) and not os.path.islink(p):
                    os.chmod(p, stat.S_IRWXU)
                func(p)

        for remove in (lambda: shutil.rmtree(path, onerror=retry), lambda: _remove_deep(path)):
            if not os.path.lexists(path):
                return
            with contextlib.suppress(Exception):
                remove()
        if os.path.lexists(path):
            os.rename(path, f"{path}.left-{os.getpid()}-{self.runs}")


def _remove_deep(path: str) -> None:
    """Remove the directory tree `path` without recursion or long paths: walk it with chdir,
    one directory at a time (the run's processes are gone, so nothing moves meanwhile; only
    real directories are entered, so ``..`` leads back the way it came)."""
    home = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.chmod(path, stat.S_IRWXU)
        os.chdir(path)
        names: list[str] = []
        while True:
            sub = None
            with os.scandir(".") as entries:
                for e in entries:
                    if e.is_dir(follow_symlinks=False):
                        sub = e.name
                        break
                    os.unlink(e.name)
            if sub is not None:
                os.chmod(sub, stat.S_IRWXU)
                os.chdir(sub)
                names.append(sub)
            elif names:
                os.chdir("..")
                os.rmdir(names.pop())
            else:
                break
    finally:
        os.fchdir(home)
        os.close(home)
    os.rmdir(path)


def _site() -> None:
    """What ``site`` gives programs, without its start-up cost (workers run with ``-S``: the
    ``.pth`` files of an installation may import whole libraries at every interpreter start):
    the installation's site-packages on `sys.path`, and the ``exit``/``quit``/``help``/
    ``copyright`` built-ins. ``.pth`` files are not processed."""
    import site

    for path in site.getsitepackages():
        if os.path.isdir(path) and path not in sys.path:
            sys.path.append(path)
    site.setquit()
    site.setcopyright()
    site.sethelper()


def main(config_json: str) -> None:
    config = json.loads(config_json)
    _lock_down(config["sandboxed"])
    # Dispositions the children inherit (the service ignores SIGINT; undo that here).
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGALRM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    in_fd, out_fd = os.dup(0), os.dup(1)
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # stray prints must not corrupt the protocol
    sys.stdout = sys.stderr
    worker = Worker(config)
    _site()
    gc.collect()
    gc.freeze()
    frames = protocol.FrameStream(in_fd)
    while True:
        frame = frames.next()
        if frame is None or frame[0].get("op") == "exit":
            sys.stderr.flush()
            os._exit(0)  # nothing to finalize: the service waits for this exit
        try:
            header, blobs = worker.run(frame[0]["spec"])
        except Exception as e:  # noqa: BLE001 - report, keep serving
            header, blobs = {"error": f"{type(e).__name__}: {e}"}, ()
        protocol.write_frame(out_fd, header, blobs)
        del frame
