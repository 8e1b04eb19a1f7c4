"""The service's worker processes: pools of warm workers, started before the service's loop.

`main` is the service process's entry point. It starts the candidate workers first — each
needs a ``bwrap`` sandbox and a fresh interpreter, the longest part of start-up — and only
then imports the event loop (`service`) and its judging modules, so those imports overlap the
workers' start. Whether bubblewrap works here is probed by a sandbox that runs at the same time
as the workers start (`sandbox.start_probe`); when it does not, those workers are stopped
before they ran anything and fallback workers start instead (``sandbox="auto"``), or the
service exits (``sandbox="bwrap"``).

Two pools: *candidate* workers (programs under test) and *reference* workers (reference
solutions only, started on first use), each worker with a uid slot of its own when the service
runs as root.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import os
import selectors
import signal
import subprocess
import sys
import time

from mucode_jax.execution import protocol, sandbox

UID_BASE = 1_000_000
MAX_WORKERS = 32  # uid slots: candidates 0-31, reference workers 32-63
PIPELINE_DEPTH = 2  # runs a candidate worker holds: the one in progress and the next
F_GETPIPE_SZ = 1032  # fcntl: a pipe's capacity


class WorkerHandle:
    """One worker process, as the service sees it: its pipes and the run it is busy with."""

    def __init__(self, workers: Workers, pool: Pool, slot: int):
        self.pool, self.slot = pool, slot
        uid = workers.uid_base + slot if workers.uid_base is not None else None
        if workers.sandboxed:
            scratch = sandbox.SCRATCH
        else:
            scratch = os.path.join(workers.tmp_root, f"w{slot}")
        config = json.dumps({"uid": uid, "scratch": scratch, "sandboxed": workers.sandboxed})
        cmd = sandbox.worker_command(workers.python, config, workers.sandboxed)
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=sandbox.sandbox_env()
        )
        self.in_fd = self.proc.stdin.fileno()
        self.out_fd = self.proc.stdout.fileno()
        os.set_blocking(self.out_fd, False)
        self.reader = protocol.FrameReader()
        self.runs: collections.deque = collections.deque()  # sent `jobs.Run`s, oldest first
        self.sizes: collections.deque = collections.deque()  # their frames' sizes
        self.uid = uid
        try:
            self.pipe_room = fcntl.fcntl(self.in_fd, F_GETPIPE_SZ) // 2
        except OSError:
            self.pipe_room = 4096 // 2

    def can_queue(self, size: int) -> bool:
        """Whether a frame of `size` bytes can be sent now without the write ever blocking.

        A worker reads its next frame only after its current run; a write it does not read
        would block the whole service (and deadlock it, were the worker then blocked writing
        a large reply). So a busy worker is sent a frame only while every frame it may not have
        read yet fits, with that one, into half of its pipe's capacity.
        """
        return not self.runs or sum(self.sizes) + size <= self.pipe_room

    def send(self, run, frame: bytes) -> None:
        """Queue `run` in the worker's pipe; it starts when the runs sent before it are done."""
        self.runs.append(run)
        self.sizes.append(len(frame))
        try:
            protocol.write_bytes(self.in_fd, frame)
        except OSError:
            self.runs.pop()
            self.sizes.pop()
            raise

    def done(self):
        """The run the worker just replied to (the oldest one sent), or None."""
        if not self.runs:
            return None
        self.sizes.popleft()
        return self.runs.popleft()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            protocol.write_frame(self.in_fd, {"op": "exit"})
        with contextlib.suppress(OSError):
            self.proc.stdin.close()


class Pool:
    """Workers of one kind and the runs waiting for one.

    A worker may hold up to `depth` runs: the one in progress and the next ones, already in its
    pipe, so it starts the next run the moment it has replied, without waiting for the service
    to be scheduled (on a loaded host that wait costs more than the run). The runs still run one
    at a time, each after the previous one's cleanup. Idle workers are always used first.
    """

    def __init__(self, workers: Workers, name: str, size: int, first_slot: int, depth: int = 1):
        self.owner, self.name, self.size, self.first_slot = workers, name, size, first_slot
        self.depth = depth
        self.workers: list[WorkerHandle] = []
        self.queue: collections.deque = collections.deque()

    def available(self, size: int) -> WorkerHandle | None:
        """The worker for a run whose frame has `size` bytes: an idle one (starting workers
        while the pool is not full), else the least busy one with fewer than `depth` runs that
        can take the frame without blocking (`WorkerHandle.can_queue`); None if there is none."""
        best = None
        for w in self.workers:
            if not w.runs:
                return w
            if len(w.runs) < self.depth and w.can_queue(size):
                if best is None or len(w.runs) < len(best.runs):
                    best = w
        if len(self.workers) < self.size:
            self.ensure_started(len(self.workers) + len(self.queue))
            return self.workers[-1]
        return best

    def ensure_started(self, want: int | None = None) -> None:
        """Start workers until `want` (default: all `size`) are running."""
        want = self.size if want is None else min(self.size, want)
        used = {w.slot for w in self.workers}
        free = [s for s in range(self.first_slot, self.first_slot + self.size) if s not in used]
        while len(self.workers) < want and free:
            self.add(free.pop(0))

    def add(self, slot: int) -> None:
        w = WorkerHandle(self.owner, self, slot)
        self.workers.append(w)
        self.owner.selector.register(w.out_fd, selectors.EVENT_READ, w)

    def stop_all(self) -> None:
        """Kill every worker of the pool (before it ran anything: the probe failed)."""
        for w in self.workers:
            self.owner.selector.unregister(w.out_fd)
            with contextlib.suppress(OSError):
                w.proc.kill()
            w.proc.wait()
        self.workers = []


class Workers:
    """Both pools, the selector their pipes are registered with, and how workers start."""

    def __init__(self, config: dict):
        self.python = config.get("python") or sandbox.python_executable()
        mode = config.get("sandbox", "auto")
        self.uid_base = None
        if os.geteuid() == 0:
            self.uid_base = UID_BASE + (os.getpid() % 4_000_000) * 64
        self.selector = selectors.DefaultSelector()
        n = max(1, min(int(config.get("workers") or os.cpu_count() or 1), MAX_WORKERS))
        self.cand = Pool(self, "candidate", n, 0, depth=PIPELINE_DEPTH)
        self.ref = Pool(self, "reference", n, MAX_WORKERS)  # started on first use
        self.sandboxed, self.fallback_reason, self.tmp_root = True, None, ""
        if mode == "none":
            self.use_fallback("sandbox='none' was requested")
            self.cand.ensure_started()
            return
        probe = sandbox.start_probe(self.python)
        if not isinstance(probe, str):
            self.cand.ensure_started()
        self.probe = probe

    def confirm_sandbox(self, mode: str) -> None:
        """Wait for the probe; without bubblewrap, replace the workers by fallback ones."""
        probe, self.probe = getattr(self, "probe", None), None
        if probe is None:
            return
        reason = sandbox.finish_probe(probe)
        if reason is None:
            return
        self.cand.stop_all()
        if mode == "bwrap":
            raise SystemExit(f"sandbox='bwrap' was requested but {reason}")
        self.use_fallback(reason)
        self.cand.ensure_started()

    def use_fallback(self, reason: str) -> None:
        """Run workers without bubblewrap (see `sandbox`), each with a scratch dir of its own."""
        import tempfile

        self.sandboxed, self.fallback_reason = False, reason
        self.tmp_root = tempfile.mkdtemp(prefix="mucode-exec-")
        os.chmod(self.tmp_root, 0o711)

    @property
    def kind(self) -> str:
        """``"bwrap"`` or ``"fallback"``."""
        return "bwrap" if self.sandboxed else "fallback"

    def shutdown(self) -> None:
        """Ask every worker to exit, kill the ones that do not, remove the fallback's dirs."""
        if getattr(self, "closed", False):
            return
        self.closed = True
        workers = self.cand.workers + self.ref.workers
        for w in workers:
            w.close()
        deadline = time.monotonic() + 5
        for w in workers:
            try:
                w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()
        if self.tmp_root:
            import shutil

            shutil.rmtree(self.tmp_root, ignore_errors=True)


def main(config_json: str) -> None:
    """The service process: start the workers, then import and run the event loop."""
    config = json.loads(config_json)
    sys.stdout = sys.stderr  # fd 1 carries frames only
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the client decides when to stop
    workers = Workers(config)
    try:
        from mucode_jax.execution import service  # while the workers start

        workers.confirm_sandbox(config.get("sandbox", "auto"))
        sandbox.compile_package()  # later worker and service starts skip compiling
        service.Service(workers).loop()
    finally:
        with contextlib.suppress(Exception):
            workers.shutdown()
    sys.stderr.flush()
    os._exit(0)  # every worker has exited; finalizing the interpreter would only delay close()
