"""The client API: a context-managed `Executor` that runs programs in the executor service.

    with Executor(workers=8) as ex:
        futures = [ex.submit(code, problem.public_tests) for code in programs]  # non-blocking
        ...                                                                     # generate more
        results = [f.result() for f in futures]                                 # ExecResult

`submit` returns a `concurrent.futures.Future` at once, so execution overlaps generation; it
blocks only when `max_pending` jobs are already in flight (back-pressure). The service is a
separate process started with fork+exec (``subprocess``), never a bare ``fork`` of this process,
so it is safe to create an `Executor` after JAX has been imported; creating it *before* JAX
keeps this process's memory out of the picture altogether.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import logging
import os
import subprocess
import threading
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

from mucode_jax.execution import protocol, refcache, sandbox, suites
from mucode_jax.execution.limits import Limits
from mucode_jax.execution.results import ExecResult

log = logging.getLogger(__name__)
_warned_fallback = False


class ExecutorError(RuntimeError):
    """The executor service failed or was closed."""


class Executor:
    """A pool of sandboxed warm workers behind a futures API.

    Args:
      workers: candidate workers (parallel runs); default: the number of CPUs.
      limits: default `Limits` for every submission (overridable per call).
      sandbox: ``"auto"`` (bubblewrap if it works here, else the fallback with a warning),
        ``"bwrap"`` (fail if bubblewrap does not work), or ``"none"`` (the fallback, no warning).
      max_pending: jobs in flight before `submit` blocks; default ``64 x workers``.
      python: the interpreter for the service and the sandboxed programs (default: this one).
      reference_cache: a JSONL file of reference solutions' CPU costs (`refcache`): a suite
        measured once, by this or an earlier executor, is not measured again, so its CPU
        limit is the same in every run that shares the file (a workdir's stages, a resume).
      script: run every program as a script (``__name__ == "__main__"``: its ``if __name__ ==
        "__main__":`` block runs), as the official μCode pipeline's ``python3 file.py`` does;
        sets the suites' ``script`` field (`mucode_jax.execution.suites`). stdio programs
        always run as scripts.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        limits: Limits | None = None,
        sandbox: str = "auto",
        max_pending: int | None = None,
        python: str | None = None,
        startup_timeout: float = 120.0,
        reference_cache: str | os.PathLike | None = None,
        script: bool = False,
    ):
        if sandbox not in ("auto", "bwrap", "none"):
            raise ValueError(f"sandbox={sandbox!r} is unknown; use 'auto', 'bwrap' or 'none'.")
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise ValueError(f"workers={workers!r} is invalid; give a positive integer.")
        self.workers = workers or os.cpu_count() or 1
        self.limits = limits or Limits()
        self.script = bool(script)
        self._slots = threading.BoundedSemaphore(max_pending or 64 * self.workers)
        self._lock = threading.Lock()  # guards _pending / _closed; never held while writing
        self._write_lock = threading.Lock()  # one writer at a time on the service's stdin
        self._ids = itertools.count()
        self._pending: dict[int, concurrent.futures.Future] = {}
        self._closed = False
        self._ready = threading.Event()
        self.info: dict[str, Any] = {}
        self.reference_costs = (
            refcache.ReferenceCostCache(reference_cache) if reference_cache is not None else None
        )
        python = python or sandbox_python()
        config = json.dumps({"workers": self.workers, "sandbox": sandbox, "python": python})
        self._proc = subprocess.Popen(
            [python, "-I", "-S", "-c", sandbox_boot(), package_root(), "pools", config],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=sandbox_env(),
            close_fds=True,
            start_new_session=True,
        )
        self._in_fd = self._proc.stdin.fileno()
        self._reader = threading.Thread(target=self._read_loop, name="executor-reader", daemon=True)
        self._reader.start()
        if not self._ready.wait(startup_timeout) or not self.info:
            self.close()
            raise ExecutorError("the executor service did not start; see its messages on stderr.")
        if self.info.get("sandbox") == "fallback" and sandbox == "auto":
            global _warned_fallback
            if not _warned_fallback:
                _warned_fallback = True
                warnings.warn(
                    "mucode_jax.execution: running programs WITHOUT bubblewrap namespaces "
                    f"({self.info.get('reason')}); rlimits, uid switch and process-group kills "
                    "still apply, but programs can read world-readable files and use the network.",
                    RuntimeWarning,
                    stacklevel=2,
                )

    # -- API -----------------------------------------------------------------------------------

    @property
    def sandbox(self) -> str:
        """``"bwrap"`` or ``"fallback"``."""
        return self.info.get("sandbox", "")

    def submit(
        self,
        code: str | None,
        tests: dict[str, Any],
        *,
        limits: Limits | dict[str, Any] | None = None,
        trace: bool = False,
        id: str | None = None,  # noqa: A002 - the CLI's id, echoed in the result
    ) -> concurrent.futures.Future:
        """Queue one program against one test suite; returns a Future of `ExecResult`.

        Args:
          code: the program (``None`` or blank gives ``no_code``).
          tests: a suite dict (see `mucode_jax.execution.suites`).
          limits: `Limits` or a dict of overrides on top of the executor's defaults.
          trace: also collect an LDB-style trace of the first failed test (one more run).
          id: echoed as ``ExecResult.id``.

        Raises:
          ValueError: for a malformed suite or limit (one sentence naming the fix).
          ExecutorError: when the executor is closed or its service died.
        """
        suites.validate_suite(tests, parse_tests=False)  # structure only; the service parses
        if self.script and tests.get("kind") != "stdio" and not tests.get("script"):
            tests = {**tests, "script": True}
        if isinstance(limits, dict):
            limits = Limits.from_json(limits, self.limits)
        limits = limits or self.limits
        if code is not None and not isinstance(code, str):
            raise ValueError(f"code must be a string or None, got {type(code).__name__}.")
        self._slots.acquire()
        fut: concurrent.futures.Future = concurrent.futures.Future()
        fut._mucode_id = id  # type: ignore[attr-defined]
        header = {"op": "run", "code": code, "suite": tests, "trace": trace}
        header["limits"] = limits.to_json()
        if self.reference_costs is not None and (key := refcache.suite_key(tests)) is not None:
            cost = self.reference_costs.get(key)
            if cost is not None:
                header["reference_cpu"] = cost
            else:
                fut._mucode_cost_key = key  # type: ignore[attr-defined]
        with self._lock:
            if self._closed:
                self._slots.release()
                raise ExecutorError("the executor is closed")
            jid = next(self._ids)
            self._pending[jid] = fut
        header["id"] = jid
        frame = protocol.pack(header)
        try:
            # Not under _lock: while this blocks on a full pipe, the reader thread must still be
            # able to deliver results (the service may be blocked writing them to us).
            with self._write_lock:
                protocol.write_bytes(self._in_fd, frame)
        except OSError as e:
            with self._lock:
                self._pending.pop(jid, None)
            self._slots.release()
            raise ExecutorError(f"the executor service is gone ({e})") from None
        return fut

    def run(self, code: str | None, tests: dict[str, Any], **kwargs) -> ExecResult:
        """`submit` and wait."""
        return self.submit(code, tests, **kwargs).result()

    def map(
        self,
        codes: Sequence[str | None],
        tests: dict[str, Any] | Sequence[dict[str, Any]],
        **kwargs,
    ) -> list[ExecResult]:
        """Run many programs (against one suite, or one suite each); results in input order."""
        suites_ = [tests] * len(codes) if isinstance(tests, dict) else list(tests)
        if len(suites_) != len(codes):
            raise ValueError(f"map got {len(codes)} programs but {len(suites_)} test suites.")
        futures = [self.submit(c, t, **kwargs) for c, t in zip(codes, suites_)]
        return [f.result() for f in futures]

    def as_completed(self, futures: Iterable[concurrent.futures.Future]):
        return concurrent.futures.as_completed(list(futures))

    def close(self, timeout: float = 30.0) -> None:
        """Finish the jobs in flight, stop the service and its sandboxes."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            with self._write_lock:
                protocol.write_frame(self._in_fd, {"op": "shutdown"})
                self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(timeout=5)
        self._fail_pending(ExecutorError("the executor was closed"))

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------------

    def _fail_pending(self, error: Exception) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(error)
                self._slots.release()

    def _read_loop(self) -> None:
        frames = protocol.FrameStream(self._proc.stdout.fileno())
        try:
            while True:
                frame = frames.next()
                if frame is None:
                    break
                header = frame[0]
                if "hello" in header:
                    self.info = header["hello"]
                    self._ready.set()
                    continue
                with self._lock:
                    fut = self._pending.pop(header.get("id"), None)
                if fut is None:
                    continue
                if "error" in header:
                    fut.set_exception(ValueError(header["error"]))
                else:
                    data = header["result"]
                    mid = getattr(fut, "_mucode_id", None)
                    if mid is not None:
                        data["id"] = mid
                    result = ExecResult.from_json(data)
                    key = getattr(fut, "_mucode_cost_key", None)
                    if key is not None and result.reference_cpu is not None:
                        try:
                            self.reference_costs.put(key, result.reference_cpu)
                        except OSError as e:  # a full disk must not lose the result
                            log.warning("reference cost cache: %s", e)
                    fut.set_result(result)
                self._slots.release()
        except Exception as e:  # noqa: BLE001
            log.exception("executor reader failed")
            self._fail_pending(ExecutorError(f"the executor reader failed: {e}"))
        finally:
            self._ready.set()
            self._fail_pending(ExecutorError("the executor service exited"))


def sandbox_python() -> str:
    return sandbox.python_executable()


def sandbox_boot() -> str:
    return sandbox.BOOT


def sandbox_env() -> dict[str, str]:
    env = sandbox.sandbox_env()
    env["PATH"] = os.environ.get("PATH", env["PATH"])
    return env


def package_root() -> str:
    return sandbox.package_root()
