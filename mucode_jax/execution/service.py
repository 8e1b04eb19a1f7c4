"""The executor service: a process of its own that owns the worker pools and judges results.

Started by `Executor` with ``subprocess`` (fork+exec, never a bare fork of the caller, so the
caller may have imported JAX), it reads jobs from its stdin and writes verdicts to its stdout.
It keeps two pools: *candidate* workers (programs under test) and one *reference* worker (the
dataset's reference solutions, which compute expected values for function/check suites and the
reference CPU time). Expected values never enter a candidate worker, so no candidate child can
find them in memory it inherited.

All judging happens here, over raw values the children reported (`serial.decode`): the assert
skeletons, `compare.outputs_match`, `compare.stdout_matches`. Every test index must be reported
exactly once; a missing one takes the verdict of how the child ended, a duplicated one fails.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from mucode_jax.execution import compare, protocol, results, sandbox, serial, suites
from mucode_jax.execution.limits import Limits
from mucode_jax.execution.results import ExecResult, TestResult

R = results
TEXT_CAP = 4000
REF_CPU_FLOOR = 60.0
UID_BASE = 1_000_000
MAX_WORKERS = 32  # uid slots: candidates 0-31, reference workers 32-63


def _text(data: bytes, cap: int = TEXT_CAP) -> str:
    text = data.decode("utf-8", "replace")
    return text if len(text) <= cap else text[:cap] + f"\n... [{len(text) - cap} more characters]"


def _clip(text: str | None, cap: int = 2000) -> str | None:
    if text is None or len(text) <= cap:
        return text
    return text[:cap] + "... [truncated]"


def _exception_verdict(err: dict) -> str:
    kind = err.get("type")
    if kind == "MemoryError":
        return R.MEMORY_LIMIT
    if kind == "ResultTooLarge":
        return R.OUTPUT_LIMIT
    return R.RUNTIME_ERROR


def _err_text(err: dict) -> str:
    msg = str(err.get("msg", ""))
    return _clip(f"{err.get('type', 'Exception')}: {msg}" if msg else str(err.get("type")), 500)


def classify_ending(header: dict, limits: Limits) -> tuple[str, str] | None:
    """How a child ended, as (verdict, message); None for a normal exit with status 0.

    Precedence: output cap > time (our kill on wall/CPU, SIGXCPU, or SIGKILL at the CPU limit)
    > memory (the harness' MemoryError exit) > other signals > non-zero exit status.
    """
    killed, sig, code, cpu = header.get("killed"), header.get("signal"), header.get("exit"), 0.0
    cpu = float(header.get("cpu") or 0.0)
    if killed == "output":
        return R.OUTPUT_LIMIT, f"output limit exceeded ({limits.output_bytes} bytes)"
    if killed == "wall":
        return R.TIMEOUT, f"time limit exceeded (wall-clock backstop, {limits.wall:g} s)"
    if (
        killed == "cpu"
        or sig == signal.SIGXCPU
        or (sig == signal.SIGKILL and cpu >= limits.cpu_seconds - 0.05)
    ):
        return R.TIMEOUT, f"time limit exceeded ({limits.cpu_seconds:g} s CPU)"
    if code == 75:  # harness.EXIT_MEMORY
        return R.MEMORY_LIMIT, f"memory limit exceeded ({limits.memory_mb} MB)"
    if sig is not None:
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        if sig == signal.SIGSEGV:
            return R.RUNTIME_ERROR, "Segmentation fault (SIGSEGV), e.g. recursion too deep"
        return R.RUNTIME_ERROR, f"the program was killed by {name}"
    if code == 76:  # harness.EXIT_HARNESS
        return R.RUNTIME_ERROR, "the program broke the test harness"
    if code:
        return R.RUNTIME_ERROR, f"the program exited with status {code}"
    return None


def timeout_cause(header: dict, limits: Limits) -> str | None:
    """Why a run timed out: ``"cpu"`` (killed at the CPU limit), ``"starved"`` (the wall-clock
    backstop while the program was computing: the host gave it too little CPU), ``"idle"`` (the
    backstop while it slept or blocked), or None when it did not time out."""
    ending = classify_ending(header, limits)
    if ending is None or ending[0] != R.TIMEOUT:
        return None
    if header.get("killed") == "wall":
        wall = float(header.get("wall") or limits.wall)
        return "starved" if float(header.get("cpu") or 0.0) >= 0.1 * wall else "idle"
    return "cpu"


def parse_records(blob: bytes) -> list[dict]:
    """Result records, one JSON object per line; malformed lines are dropped."""
    out = []
    for line in blob.split(b"\n"):
        if not line:
            continue
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if type(rec) is dict:
            out.append(rec)
    return out


# ---------------------------------------------------------------------------------------------
# Jobs and runs.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    job: Job | RefTask
    spec: dict
    limits: Limits
    start: int = 0
    case: int = -1  # stdio case index
    trace: bool = False
    attempts: int = 0
    reruns: int = 0  # load-suspect timeouts of this run that were run again
    confirmed: bool | None = None  # for a timeout of this run: see TestResult.confirmed


@dataclasses.dataclass
class RefInfo:
    cpu: float = 0.0
    expected: list | None = None  # decoded expected values (function/check)
    calls: list | None = None  # check: recorded [args, kwargs] in tagged form
    call_texts: list | None = None
    error: str | None = None


class RefTask:
    """Runs the reference solution once per (suite, limits) and collects what jobs need."""

    def __init__(self, key: str, suite: dict, limits: Limits):
        self.key, self.suite, self.limits = key, suite, limits
        self.waiting: list[Job] = []
        self.info = RefInfo()
        self.pending = 0
        self.n = suites.num_tests(suite)
        self.outcomes: dict[int, Any] = {}


class Job:
    def __init__(self, jid: int, code: str | None, suite: dict, limits: Limits, trace: bool):
        self.jid, self.code, self.suite, self.base_limits = jid, code, suite, limits
        self.limits = limits
        self.trace = trace
        self.t0 = time.monotonic()
        self.kind = suite["kind"]
        self.n = suites.num_tests(suite) or 0
        self.tests: list[TestResult | None] = []
        self.ref: RefInfo | None = None
        self.pending = 0
        self.cpu = 0.0
        self.stdout = b""
        self.stderr = b""
        self.have_output = False
        self.error: str | None = None
        self.syntax = False
        self.tracing = False
        self.reference_cpu: float | None = None
        self.reruns = 0


def _ref_key(suite: dict, limits: Limits) -> str:
    h = hashlib.sha256()
    h.update(
        json.dumps({k: v for k, v in suite.items() if k != "outputs"}, sort_keys=True).encode()
    )
    h.update(json.dumps([limits.memory_mb, limits.cpu_seconds]).encode())
    return h.hexdigest()


class WorkerHandle:
    def __init__(self, service: Service, pool: Pool, slot: int):
        self.pool, self.slot = pool, slot
        uid = service.uid_base + slot if service.uid_base is not None else None
        if service.sandboxed:
            scratch = sandbox.SCRATCH
        else:
            scratch = os.path.join(service.tmp_root, f"w{slot}")
        config = json.dumps({"uid": uid, "scratch": scratch, "sandboxed": service.sandboxed})
        cmd = sandbox.worker_command(service.python, config, service.sandboxed)
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=sandbox.sandbox_env()
        )
        self.in_fd = self.proc.stdin.fileno()
        self.out_fd = self.proc.stdout.fileno()
        os.set_blocking(self.out_fd, False)
        self.reader = protocol.FrameReader()
        self.run: Run | None = None
        self.uid = uid

    def send(self, run: Run) -> None:
        self.run = run
        protocol.write_frame(self.in_fd, {"op": "run", "spec": run.spec})

    def close(self) -> None:
        with contextlib.suppress(OSError):
            protocol.write_frame(self.in_fd, {"op": "exit"})
        with contextlib.suppress(OSError):
            self.proc.stdin.close()


class Pool:
    def __init__(self, service: Service, name: str, size: int, first_slot: int):
        self.service, self.name, self.size, self.first_slot = service, name, size, first_slot
        self.workers: list[WorkerHandle] = []
        self.idle: list[WorkerHandle] = []
        self.queue: collections.deque[Run] = collections.deque()

    def ensure_started(self, want: int | None = None) -> None:
        """Start workers until `want` (default: all `size`) are running."""
        want = self.size if want is None else min(self.size, want)
        used = {w.slot for w in self.workers}
        free = [s for s in range(self.first_slot, self.first_slot + self.size) if s not in used]
        while len(self.workers) < want and free:
            self.add(free.pop(0))

    def add(self, slot: int) -> None:
        w = WorkerHandle(self.service, self, slot)
        self.workers.append(w)
        self.idle.append(w)
        self.service.selector.register(w.out_fd, selectors.EVENT_READ, w)


# ---------------------------------------------------------------------------------------------
# The service.
# ---------------------------------------------------------------------------------------------


class Service:
    def __init__(self, config: dict):
        self.python = config.get("python") or sandbox.python_executable()
        mode = config.get("sandbox", "auto")
        reason = None
        if mode == "none":
            self.sandboxed, reason = False, "sandbox='none' was requested"
        else:
            reason = sandbox.probe_bwrap(self.python)
            if reason is not None and mode == "bwrap":
                raise SystemExit(f"sandbox='bwrap' was requested but {reason}")
            self.sandboxed = reason is None
        self.fallback_reason = reason
        self.uid_base = None
        if os.geteuid() == 0:
            self.uid_base = UID_BASE + (os.getpid() % 4_000_000) * 64
        self.tmp_root = ""
        if not self.sandboxed:
            self.tmp_root = tempfile.mkdtemp(prefix="mucode-exec-")
            os.chmod(self.tmp_root, 0o711)
        self.selector = selectors.DefaultSelector()
        n = max(1, min(int(config.get("workers") or os.cpu_count() or 1), MAX_WORKERS))
        self.cand = Pool(self, "candidate", n, 0)
        self.ref = Pool(self, "reference", n, MAX_WORKERS)  # started on first use
        self.cand.ensure_started()
        self.ref_tasks: dict[str, RefTask] = {}
        self.ref_cache: dict[str, RefInfo] = {}
        self.in_reader = protocol.FrameReader()
        self.out_buffer: list[bytes] = []
        self.running = True
        self.worker_failures = 0

    # -- transport ---------------------------------------------------------------------------

    def send_client(self, header: dict) -> None:
        self.out_buffer.append(protocol.pack(header))

    def flush_client(self) -> None:
        """One write per loop iteration: fewer wake-ups of the client's reader."""
        if self.out_buffer:
            data, self.out_buffer = b"".join(self.out_buffer), []
            protocol.write_bytes(1, data)

    def hello(self) -> None:
        self.send_client(
            {
                "hello": {
                    "sandbox": "bwrap" if self.sandboxed else "fallback",
                    "reason": self.fallback_reason,
                    "workers": self.cand.size,
                    "uids": []
                    if self.uid_base is None
                    else list(range(self.uid_base, self.uid_base + 64)),
                }
            }
        )

    def loop(self) -> None:
        os.set_blocking(0, False)
        self.selector.register(0, selectors.EVENT_READ, "client")
        self.hello()
        self.flush_client()
        while self.running or self.busy():
            for key, _ in self.selector.select(timeout=1.0):
                if key.data == "client":
                    self.on_client_readable()
                else:
                    self.on_worker_readable(key.data)
            self.dispatch()
            self.flush_client()
        self.shutdown()

    def busy(self) -> bool:
        return any(w.run for p in (self.cand, self.ref) for w in p.workers) or bool(
            self.cand.queue or self.ref.queue
        )

    def on_client_readable(self) -> None:
        try:
            data = os.read(0, 1 << 20)
        except BlockingIOError:
            return
        if not data:
            self.running = False
            self.selector.unregister(0)
            return
        for header, _ in self.in_reader.feed(data):
            op = header.get("op")
            if op == "run":
                self.accept(header)
            elif op == "shutdown":
                self.running = False

    def on_worker_readable(self, w: WorkerHandle) -> None:
        try:
            data = os.read(w.out_fd, 1 << 20)
        except BlockingIOError:
            return
        if not data:
            self.worker_died(w)
            return
        for header, blobs in w.reader.feed(data):
            run, w.run = w.run, None
            w.pool.idle.append(w)
            if run is None:
                continue
            if "error" in header:
                self.run_failed(run, f"worker error: {header['error']}")
            else:
                self.worker_failures = 0
                self.on_run_done(run, header, *blobs)

    def worker_died(self, w: WorkerHandle) -> None:
        self.selector.unregister(w.out_fd)
        pool = w.pool
        pool.workers.remove(w)
        if w in pool.idle:
            pool.idle.remove(w)
        with contextlib.suppress(Exception):
            w.proc.kill()
            w.proc.wait(timeout=5)
        self.worker_failures += 1
        if self.worker_failures > 20:
            print("mucode_jax.execution: workers keep dying; giving up", file=sys.stderr)
            raise SystemExit(3)
        if self.running or self.busy():
            pool.add(w.slot)
        if w.run is not None:
            run = w.run
            run.attempts += 1
            if run.attempts < 2:
                pool.queue.appendleft(run)
            else:
                header = {"exit": None, "signal": signal.SIGKILL, "killed": None, "cpu": 0.0}
                header["sandbox_died"] = True
                self.on_run_done(run, header, b"", b"", b"")

    def run_failed(self, run: Run, message: str) -> None:
        job = run.job
        if isinstance(job, RefTask):
            job.info.error = message
            job.pending -= 1
            if job.pending == 0:
                self.finish_ref(job)
            return
        job.error = message
        for i in range(len(job.tests)):
            if job.tests[i] is None:
                job.tests[i] = TestResult(i, R.INTERNAL_ERROR, error=message)
        job.pending -= 1
        if job.pending == 0:
            self.finish(job)

    def dispatch(self) -> None:
        for pool in (self.cand, self.ref):
            while pool.queue:
                if not pool.idle:
                    pool.ensure_started(len(pool.workers) + len(pool.queue))
                    if not pool.idle:
                        break
                w = pool.idle.pop()
                run = pool.queue.popleft()
                try:
                    w.send(run)
                except OSError:
                    w.run = None
                    pool.queue.appendleft(run)
                    break

    def shutdown(self) -> None:
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

    # -- jobs --------------------------------------------------------------------------------

    def accept(self, header: dict) -> None:
        jid = header["id"]
        try:
            suite = suites.validate_suite(header["suite"])
            limits = Limits.from_json(header.get("limits"))
        except (ValueError, TypeError) as e:
            self.send_client({"id": jid, "error": str(e)})
            return
        job = Job(jid, header.get("code"), suite, limits, bool(header.get("trace")))
        code = job.code
        if not isinstance(code, str) or not code.strip():
            self.finish(job, no_code=True)
            return
        ref_cpu = header.get("reference_cpu")
        if (
            "reference" in suite
            and suite["kind"] in ("assert", "stdio")
            and type(ref_cpu) in (int, float)
            and 0 <= ref_cpu < float("inf")
        ):
            # The client knows this suite's reference cost (its persistent cache): the reference
            # only sets the CPU limit for these kinds, so it need not run again.
            self.set_reference_cpu(job, float(ref_cpu))
            self.launch(job)
            return
        if "reference" in suite or suite["kind"] == "check":
            key = _ref_key(suite, limits)
            if key in self.ref_cache:
                self.apply_ref(job, self.ref_cache[key])
                return
            task = self.ref_tasks.get(key)
            if task is None:
                task = self.ref_tasks[key] = RefTask(key, suite, limits)
                self.start_ref(task)
            task.waiting.append(job)
            return
        self.launch(job)

    def _spec(self, mode: str, code: str, suite: dict, limits: Limits, **extra) -> dict:
        spec = {
            "mode": mode,
            "code": code,
            "setup": suite.get("setup", ""),
            "limits": {
                "cpu": limits.cpu_seconds,
                "wall": limits.wall,
                "memory_mb": limits.memory_mb,
                "output_bytes": limits.output_bytes,
                "file_size_mb": limits.file_size_mb,
                "open_files": limits.open_files,
                "processes": limits.processes,
            },
        }
        spec.update(extra)
        return spec

    def _seq_spec(self, job_or_task, code: str, limits: Limits, start: int, trace: int = -1):
        suite = job_or_task.suite
        kind = suite["kind"]
        if kind == "assert":
            holes = [
                list(suites.split_assert(t, suite.get("entry_point")).holes) for t in suite["tests"]
            ]
            return self._spec("assert", code, suite, limits, holes=holes, start=start, trace=trace)
        if kind == "function":
            return self._spec(
                "calls",
                code,
                suite,
                limits,
                entry_point=suite["entry_point"],
                calls=suite["inputs"],
                args_format="json",
                start=start,
                trace=trace,
            )
        # check: candidates replay the recorded calls
        return self._spec(
            "calls",
            code,
            suite,
            limits,
            entry_point=suite["entry_point"],
            calls=job_or_task.ref.calls,
            args_format="tagged",
            start=start,
            trace=trace,
        )

    # -- reference runs ------------------------------------------------------------------------

    def start_ref(self, task: RefTask) -> None:
        suite, base = task.suite, task.limits
        limits = dataclasses.replace(
            base, cpu_seconds=max(REF_CPU_FLOOR, 4 * base.cpu_seconds), wall_seconds=None
        )
        task.run_limits = limits
        ref = suite["reference"]
        kind = suite["kind"]
        if kind == "stdio":
            for c, case in enumerate(suite["cases"]):
                spec = self._spec("stdio", ref, suite, limits, stdin=case["input"])
                self.ref.queue.append(Run(task, spec, limits, case=c))
                task.pending += 1
        elif kind == "check":
            spec = self._spec("record", ref, suite, limits, entry_point=suite["entry_point"])
            spec["check"] = suite["check"]
            self.ref.queue.append(Run(task, spec, limits))
            task.pending += 1
        else:
            self.ref.queue.append(Run(task, self._seq_spec(task, ref, limits, 0), limits))
            task.pending += 1

    def on_ref_run(self, task: RefTask, run: Run, header: dict, records: list[dict]) -> None:
        info = task.info
        kind = task.suite["kind"]
        cpu = float(header.get("cpu") or 0.0)
        # The CPU a candidate run may use scales with a whole reference run: per case for stdio
        # (max), over all of its restarts for the sequential kinds (sum).
        info.cpu = max(info.cpu, cpu) if kind == "stdio" else info.cpu + cpu
        ending = classify_ending(header, run.limits)
        if kind == "stdio":
            if ending is not None:
                info.error = info.error or f"the reference failed on case {run.case}: {ending[1]}"
            return
        if kind == "check":
            calls, expected, texts = [], [], []
            for rec in records:
                if "syntax" in rec or "load_err" in rec or "check_err" in rec:
                    err = rec.get("syntax") or rec.get("load_err") or rec.get("check_err")
                    info.error = f"the reference solution fails its own check: {_err_text(err)}"
                elif "rec" in rec and type(rec["rec"]) is dict:
                    r = rec["rec"]
                    try:
                        args, kwargs = serial.from_jsonable(r["a"])
                        value = (
                            serial.ExpectedError(str(r["x"]))
                            if "x" in r
                            else serial.from_jsonable(r["v"])
                        )
                    except (serial.DecodeError, KeyError, TypeError, ValueError) as e:
                        info.error = f"a call of the reference could not be recorded ({e})"
                        continue
                    calls.append(r["a"])
                    expected.append(value)
                    texts.append(suites.call_text(task.suite["entry_point"], args, kwargs))
            if ending is not None and info.error is None:
                info.error = f"the reference's check() did not finish: {ending[1]}"
            if not calls and info.error is None:
                info.error = "the reference's check() never called `candidate`"
            info.calls, info.expected, info.call_texts = calls, expected, texts
            return
        # assert / function: sequential records
        n = task.n
        outcomes = self._seq_outcomes(run, header, records, n, reference=True)
        if outcomes["phase"] != "tests":
            info.error = f"the reference solution failed to load: {outcomes['message']}"
            return
        task.outcomes.update(outcomes["by_index"])
        nxt = outcomes.get("restart")
        if nxt is not None:
            spec = self._seq_spec(task, task.suite["reference"], run.limits, nxt)
            self.ref.queue.append(Run(task, spec, run.limits, start=nxt))
            task.pending += 1

    def finish_ref(self, task: RefTask) -> None:
        info = task.info
        if task.suite["kind"] == "function" and info.error is None:
            if "outputs" in task.suite:
                info.expected = task.suite["outputs"]
            else:
                expected = []
                for i in range(task.n):
                    kind, payload = task.outcomes.get(i, ("died", (R.RUNTIME_ERROR, "no result")))
                    if kind == "value":
                        try:
                            expected.append(serial.from_jsonable(payload[0]))
                        except (serial.DecodeError, IndexError, TypeError):
                            expected.append(serial.ExpectedError("UndecodableResult"))
                    elif kind == "error":
                        expected.append(serial.ExpectedError(str(payload.get("type"))))
                    else:
                        expected.append(serial.ExpectedError(payload[0]))
                info.expected = expected
        self.ref_cache[task.key] = info
        del self.ref_tasks[task.key]
        for job in task.waiting:
            self.apply_ref(job, info)

    def apply_ref(self, job: Job, info: RefInfo) -> None:
        if info.error is not None and job.kind in ("check", "function") and info.expected is None:
            job.error = info.error
            job.n = max(job.n, 1)
            job.tests = [TestResult(i, R.INTERNAL_ERROR, error=info.error) for i in range(job.n)]
            self.finish(job)
            return
        job.ref = info
        if "reference" in job.suite:  # (a check suite's reference is always there)
            self.set_reference_cpu(job, info.cpu)
        if job.kind == "check":
            job.n = len(info.calls)
        self.launch(job)

    @staticmethod
    def set_reference_cpu(job: Job, cpu: float) -> None:
        """Derive the job's CPU limit from its reference's cost (rounded as results report it,
        so a cost read back from a client's cache gives exactly the same limit)."""
        job.reference_cpu = round(cpu, 4)
        job.limits = job.base_limits.with_reference(job.reference_cpu)

    # -- candidate runs ------------------------------------------------------------------------

    def launch(self, job: Job) -> None:
        job.tests = [None] * job.n
        if job.kind == "stdio":
            for c, case in enumerate(job.suite["cases"]):
                spec = self._spec("stdio", job.code, job.suite, job.limits, stdin=case["input"])
                self.cand.queue.append(Run(job, spec, job.limits, case=c))
                job.pending += 1
        else:
            spec = self._seq_spec(job, job.code, job.limits, 0)
            self.cand.queue.append(Run(job, spec, job.limits))
            job.pending += 1

    def on_run_done(self, run: Run, header: dict, out: bytes, err: bytes, res: bytes) -> None:
        records = parse_records(res)
        job = run.job
        if isinstance(job, RefTask):
            self.on_ref_run(job, run, header, records)
            job.pending -= 1
            if job.pending == 0:
                self.finish_ref(job)
            return
        job.cpu += float(header.get("cpu") or 0.0)
        if run.trace:
            self.on_trace_run(job, records)
            return
        if self.confirm_timeout(job, run, header):
            return
        if not job.have_output:
            job.stdout, job.stderr, job.have_output = out, err, True
        if job.kind == "stdio":
            job.tests[run.case] = self.judge_stdio(job, run, header, out, records)
        else:
            outcomes = self._seq_outcomes(run, header, records, job.n)
            self.judge_seq(job, run, outcomes)
        if run.confirmed is not None:
            first = run.case if job.kind == "stdio" else run.start
            last = first + 1 if job.kind == "stdio" else job.n
            for i in range(first, last):
                t = job.tests[i]
                if t is not None and t.verdict == R.TIMEOUT and t.confirmed is None:
                    job.tests[i] = dataclasses.replace(t, confirmed=run.confirmed)
        job.pending -= 1
        if job.pending == 0:
            self.finish(job)

    def confirm_timeout(self, job: Job, run: Run, header: dict) -> bool:
        """The load rule: re-run a timeout that load could explain; True when it was re-queued.

        A timeout is load-suspect when the run was killed at its CPU limit and that limit is
        within `Limits.rerun_margin` of the reference-derived one (or the suite has no
        reference), or when the wall-clock backstop caught a program that was computing (the
        host starved it). Such a run is run again, up to `Limits.timeout_reruns` times, and
        only the last run is judged; a timeout there is ``confirmed``. Timeouts that load
        cannot explain (an idle program at the backstop; a CPU limit far above the reference's
        cost) are reported at once, also as ``confirmed``.
        """
        cause = timeout_cause(header, run.limits)
        if cause is None:
            return False
        suspect = cause == "starved" or (
            cause == "cpu" and run.limits.load_suspect(job.reference_cpu)
        )
        if suspect and run.reruns < run.limits.timeout_reruns:
            run.reruns += 1
            job.reruns += 1
            self.cand.queue.append(run)  # at the back: later, when the load may have passed
            return True
        run.confirmed = (not suspect) or run.reruns > 0
        return False

    def _seq_outcomes(
        self, run: Run, header: dict, records: list[dict], n: int, reference: bool = False
    ) -> dict:
        """Per-test outcomes of an assert/calls run, and whether to restart after a crash.

        A candidate that times out gets ``timeout`` for the remaining tests too (its CPU budget
        covers the whole run); a reference run restarts after the slow test instead.
        """
        ending = classify_ending(header, run.limits)
        loaded = False
        by_index: dict[int, tuple[str, Any]] = {}
        seen: collections.Counter = collections.Counter()
        done = False
        for rec in records:
            if "syntax" in rec and not loaded:
                err = rec["syntax"] if type(rec["syntax"]) is dict else {}
                return {"phase": "syntax", "err": err, "message": _err_text(err)}
            if "load_err" in rec and not loaded:
                err = rec["load_err"] if type(rec["load_err"]) is dict else {}
                return {"phase": "load", "err": err, "message": _err_text(err)}
            if rec.get("loaded") == 1:
                loaded = True
            elif rec.get("done") == 1:
                done = True
            elif "i" in rec and type(rec["i"]) is int and run.start <= rec["i"] < n:
                i = rec["i"]
                seen[i] += 1
                if "v" in rec and type(rec["v"]) is list:
                    by_index[i] = ("value", rec["v"])
                elif "x" in rec and type(rec["x"]) is dict:
                    by_index[i] = ("error", rec["x"])
        if not loaded:
            if ending is None:
                ending = (R.RUNTIME_ERROR, "the program exited while it was being loaded")
            return {"phase": "died", "ending": ending, "message": ending[1]}
        out: dict[int, tuple[str, Any]] = {}
        restart = None
        for i in range(run.start, n):
            if seen[i] > 1:
                out[i] = ("dup", None)
            elif i in by_index:
                out[i] = by_index[i]
            else:
                if done or (ending is None and run.trace):
                    out[i] = (
                        "died",
                        (
                            R.RUNTIME_ERROR,
                            "no result was reported for this test "
                            "(the program interfered with the test harness)",
                        ),
                    )
                    continue
                if ending is None:
                    ending_i = (R.RUNTIME_ERROR, "the program exited before this test finished")
                else:
                    ending_i = ending
                out[i] = ("died", ending_i)
                if ending_i[0] == R.TIMEOUT and not reference:
                    for j in range(i + 1, n):
                        out[j] = (
                            "died",
                            (R.TIMEOUT, "not run: an earlier test used up the time limit"),
                        )
                elif i + 1 < n:
                    restart = i + 1
                break
        return {"phase": "tests", "by_index": out, "restart": restart}

    def judge_seq(self, job: Job, run: Run, outcomes: dict) -> None:
        phase = outcomes["phase"]
        if phase != "tests":
            if phase == "syntax":
                job.syntax = True
                job.error = outcomes["err"].get("tb") or outcomes["message"]
                verdict, message, tb = R.SYNTAX_ERROR, outcomes["message"], job.error
            elif phase == "load":
                err = outcomes["err"]
                verdict, message, tb = _exception_verdict(err), outcomes["message"], err.get("tb")
                job.error = tb or message
            else:
                verdict, message = outcomes["ending"]
                tb = None
                job.error = message
            for i in range(run.start, job.n):
                job.tests[i] = self._test_result(
                    job, i, verdict, error=message, traceback=_clip(tb, 4000)
                )
            return
        for i, (kind, payload) in outcomes["by_index"].items():
            job.tests[i] = self.judge_one(job, i, kind, payload)
        nxt = outcomes["restart"]
        if nxt is not None:
            spec = self._seq_spec(job, job.code, job.limits, nxt)
            self.cand.queue.appendleft(Run(job, spec, job.limits, start=nxt))
            job.pending += 1

    def _test_result(self, job: Job, i: int, verdict: str, **kw) -> TestResult:
        shown_input, expected = self._shown(job, i)
        return TestResult(i, verdict, input=shown_input, expected=expected, **kw)

    def _shown(self, job: Job, i: int) -> tuple[str, str | None]:
        kind = job.kind
        if kind == "assert":
            split = suites.split_assert(job.suite["tests"][i], job.suite.get("entry_point"))
            return split.source, split.shown_expected
        if kind == "function":
            args = job.suite["inputs"][i]
            exp = job.ref.expected[i] if job.ref and job.ref.expected else None
            return suites.call_text(job.suite["entry_point"], args), serial.short_repr(exp)
        if kind == "check":
            return job.ref.call_texts[i], serial.short_repr(job.ref.expected[i])
        case = job.suite["cases"][i]
        return _clip(case["input"]), _clip(case["output"])

    def judge_one(self, job: Job, i: int, kind: str, payload) -> TestResult:
        if kind == "dup":
            return self._test_result(
                job,
                i,
                R.RUNTIME_ERROR,
                error="the result of this test was reported more than once "
                "(the program wrote to the test harness' result channel)",
            )
        if kind == "died":
            return self._test_result(job, i, payload[0], error=payload[1])
        if kind == "error":
            expected = job.ref.expected[i] if job.kind in ("function", "check") else None
            if isinstance(expected, serial.ExpectedError) and expected.type_name == payload.get(
                "type"
            ):
                return self._test_result(job, i, R.PASSED)
            return self._test_result(
                job,
                i,
                _exception_verdict(payload),
                error=_err_text(payload),
                traceback=_clip(str(payload.get("tb") or ""), 4000) or None,
            )
        try:
            values = [serial.from_jsonable(v) for v in payload]
        except (serial.DecodeError, RecursionError) as e:
            return self._test_result(
                job, i, R.RUNTIME_ERROR, error=f"the reported result is malformed ({e})"
            )
        if job.kind == "assert":
            split = suites.split_assert(job.suite["tests"][i], job.suite.get("entry_point"))
            if len(values) != len(split.holes):
                return self._test_result(job, i, R.RUNTIME_ERROR, error="malformed result")
            held, error = split.judge(values)
            if len(values) == 1:
                got = serial.short_repr(values[0])
            else:
                got = "; ".join(
                    f"{h} = {serial.short_repr(v, 150)}" for h, v in zip(split.holes, values)
                )
            return self._test_result(
                job, i, R.PASSED if held else R.WRONG_ANSWER, got=got, error=error
            )
        if len(values) != 1:
            return self._test_result(job, i, R.RUNTIME_ERROR, error="malformed result")
        expected = job.ref.expected[i]
        atol = job.suite.get("atol", 0.0)
        mode = job.suite.get("compare", "exact")
        ok = compare.outputs_match(values[0], expected, atol=atol, compare=mode)
        error = None
        if isinstance(expected, serial.ExpectedError):
            error = f"expected the call to raise {expected.type_name}"
        return self._test_result(
            job,
            i,
            R.PASSED if ok else R.WRONG_ANSWER,
            got=serial.short_repr(values[0]),
            error=error,
        )

    def judge_stdio(self, job: Job, run: Run, header: dict, out: bytes, records) -> TestResult:
        i = run.case
        ending = classify_ending(header, run.limits)
        got = _clip(out.decode("utf-8", "replace"))
        if ending is not None:
            return self._test_result(job, i, ending[0], error=ending[1], got=got)
        err = None
        done = False
        for rec in records:
            if "syntax" in rec and type(rec["syntax"]) is dict:
                job.syntax = True
                job.error = rec["syntax"].get("tb") or _err_text(rec["syntax"])
                return self._test_result(
                    job,
                    i,
                    R.SYNTAX_ERROR,
                    error=_err_text(rec["syntax"]),
                    traceback=_clip(rec["syntax"].get("tb"), 4000),
                )
            if "x" in rec and type(rec["x"]) is dict and err is None:
                err = rec["x"]
            if rec.get("done") == 1:
                done = True
        if err is not None:
            return self._test_result(
                job,
                i,
                _exception_verdict(err),
                error=_err_text(err),
                traceback=_clip(str(err.get("tb") or ""), 4000) or None,
                got=got,
            )
        del done  # a clean exit (also os._exit(0) after flushing) is judged on its output
        expected = job.suite["cases"][i]["output"]
        ok = compare.stdout_matches(out.decode("utf-8", "replace"), expected)
        return self._test_result(job, i, R.PASSED if ok else R.WRONG_ANSWER, got=got)

    # -- finishing ----------------------------------------------------------------------------

    def finish(self, job: Job, no_code: bool = False) -> None:
        if no_code:
            n = job.n or 1
            tests = [TestResult(i, R.NO_CODE, error="no code") for i in range(n)]
            verdict = R.NO_CODE
        else:
            tests = [
                t if t is not None else TestResult(i, R.INTERNAL_ERROR)
                for i, t in enumerate(job.tests)
            ]
            verdict = R.SYNTAX_ERROR if job.syntax else results.program_verdict(tests)
            first = next((t for t in tests if not t.passed), None)
            if (
                job.trace
                and not job.tracing
                and first is not None
                and first.verdict in (R.WRONG_ANSWER, R.RUNTIME_ERROR)
            ):
                job.tests = tests
                job.tracing = True
                self.start_trace(job, first.index)
                return
        result = ExecResult(
            verdict=verdict,
            tests=tuple(tests),
            error=_clip(job.error, 4000),
            stdout=_text(job.stdout),
            stderr=_text(job.stderr),
            cpu_seconds=job.cpu,
            wall_seconds=time.monotonic() - job.t0,
            cpu_limit=job.limits.cpu_seconds,
            sandbox="bwrap" if self.sandboxed else "fallback",
            reference_cpu=job.reference_cpu,
            reruns=job.reruns,
        )
        self.send_client({"id": job.jid, "result": result.to_json()})

    def start_trace(self, job: Job, i: int) -> None:
        if job.kind == "stdio":
            spec = self._spec(
                "stdio",
                job.code,
                job.suite,
                job.limits,
                stdin=job.suite["cases"][i]["input"],
                trace=0,
            )
        else:
            spec = self._seq_spec(job, job.code, job.limits, i, trace=i)
        job.trace_index = i
        job.pending += 1
        self.cand.queue.appendleft(Run(job, spec, job.limits, start=i, case=i, trace=True))

    def on_trace_run(self, job: Job, records: list[dict]) -> None:
        events = next((r["trace"] for r in records if type(r.get("trace")) is list), None)
        if events:
            lines = [_clip(str(e), 200) for e in events[:80]]
            text = "\n".join(lines)
            t = job.tests[job.trace_index]
            job.tests[job.trace_index] = dataclasses.replace(t, trace=text)
        job.pending -= 1
        if job.pending == 0:
            self.finish(job)


def main(config_json: str) -> None:
    config = json.loads(config_json)
    sys.stdout = sys.stderr  # fd 1 carries frames only
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the client decides when to stop
    service = Service(config)
    try:
        service.loop()
    finally:
        with contextlib.suppress(Exception):
            service.shutdown()
