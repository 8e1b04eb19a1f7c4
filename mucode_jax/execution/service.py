"""The executor service: a process of its own that owns the worker pools and judges results.

Started by `Executor` with ``subprocess`` (fork+exec, never a bare fork of the caller, so the
caller may have imported JAX), it reads jobs from its stdin and writes verdicts to its stdout.
It keeps two pools (`pools`, which also starts the process): *candidate* workers (programs
under test) and *reference* workers (the datasets' reference solutions, `references`). Expected values never enter a candidate worker,
so no candidate child can find them in memory it inherited.

This module is the event loop and its glue: one ``selectors`` loop over the client's pipe and
every worker's pipe; a job is accepted (`accept`), waits for its reference if it needs one
(`references.References`), is cut into runs (`jobs`) that the pools dispatch to workers (`pools.Pool.available`),
and each finished run is judged (`judging`) — or, for a timeout that load could explain, run
again first (`judging.rerun_decision`). A job whose runs are all judged goes back to the client.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import selectors
import signal
import sys
import time

from mucode_jax.execution import judging, pools, protocol, results, suites
from mucode_jax.execution.jobs import Job, RefInfo, RefTask, Run, run_spec, seq_spec
from mucode_jax.execution.judging import clip, parse_records
from mucode_jax.execution.limits import Limits
from mucode_jax.execution.references import References
from mucode_jax.execution.results import TestResult

R = results


class Service:
    """The event loop over the client's pipe and the workers' pipes (`pools.Workers`)."""

    def __init__(self, workers: pools.Workers):
        self.workers = workers
        self.selector = workers.selector
        self.cand, self.ref = workers.cand, workers.ref
        self.references = References(self.ref.queue.append)
        self.in_reader = protocol.FrameReader()
        self.out_buffer: list[bytes] = []
        self.running = True
        self.worker_failures = 0

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
                    "sandbox": self.workers.kind,
                    "reason": self.workers.fallback_reason,
                    "workers": self.cand.size,
                    "uids": []
                    if self.workers.uid_base is None
                    else list(range(self.workers.uid_base, self.workers.uid_base + 64)),
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
        return any(w.runs for p in (self.cand, self.ref) for w in p.workers) or bool(
            self.cand.queue or self.ref.queue
        )

    def on_client_readable(self) -> None:
        try:
            data = os.read(0, protocol.READ_SIZE)
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

    def on_worker_readable(self, w: pools.WorkerHandle) -> None:
        try:
            data = os.read(w.out_fd, protocol.READ_SIZE)
        except BlockingIOError:
            return
        if not data:
            self.worker_died(w)
            return
        for header, blobs in w.reader.feed(data):
            run = w.done()
            if run is None:
                continue
            if "error" in header:
                self.run_failed(run, f"worker error: {header['error']}")
            else:
                self.worker_failures = 0
                self.on_run_done(run, header, *blobs)

    def worker_died(self, w: pools.WorkerHandle) -> None:
        self.selector.unregister(w.out_fd)
        pool = w.pool
        pool.workers.remove(w)
        with contextlib.suppress(Exception):
            w.proc.kill()
            w.proc.wait(timeout=5)
        self.worker_failures += 1
        if self.worker_failures > 20:
            print("mucode_jax.execution: workers keep dying; giving up", file=sys.stderr)
            raise SystemExit(3)
        if self.running or self.busy():
            pool.add(w.slot)
        if w.runs:
            run, *unstarted = w.runs
            pool.queue.extendleft(reversed(unstarted))  # still in the dead worker's pipe
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
            self.references.run_failed(job, message)
            self.ref_run_done(job)
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
                run = pool.queue[0]
                if run.frame is None:  # packed once, also for a run that runs again
                    run.frame = protocol.pack({"op": "run", "spec": run.spec})
                w = pool.available(len(run.frame))
                if w is None:
                    break
                pool.queue.popleft()
                try:
                    w.send(run, run.frame)
                except OSError:  # a dead worker: `worker_died` replaces it
                    pool.queue.appendleft(run)
                    break

    def shutdown(self) -> None:
        self.workers.shutdown()

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
            job.set_reference_cpu(float(ref_cpu))
            self.launch(job)
            return
        if "reference" in suite or suite["kind"] == "check":
            info = self.references.request(job)
            if info is not None:
                self.apply_ref(job, info)
            return
        self.launch(job)

    def apply_ref(self, job: Job, info: RefInfo) -> None:
        if info.error is not None and job.kind in ("check", "function") and info.expected is None:
            job.error = info.error
            job.n = max(job.n, 1)
            job.tests = [TestResult(i, R.INTERNAL_ERROR, error=info.error) for i in range(job.n)]
            self.finish(job)
            return
        job.ref = info
        if "reference" in job.suite:  # (a check suite's reference is always there)
            job.set_reference_cpu(info.cpu)
        if job.kind == "check":
            job.n = len(info.calls)
        self.launch(job)

    def launch(self, job: Job) -> None:
        job.tests = [None] * job.n
        if job.kind == "stdio":
            for c, case in enumerate(job.suite["cases"]):
                spec = run_spec("stdio", job.code, job.suite, job.limits, stdin=case["input"])
                self.cand.queue.append(Run(job, spec, job.limits, case=c))
                job.pending += 1
        else:
            spec = self._seq_spec(job, 0)
            self.cand.queue.append(Run(job, spec, job.limits))
            job.pending += 1

    @staticmethod
    def _seq_spec(job: Job, start: int, trace: int = -1) -> dict:
        calls = job.ref.calls if job.ref is not None else None
        return seq_spec(job.suite, job.code, job.limits, start, trace, recorded_calls=calls)

    def ref_run_done(self, task: RefTask) -> None:
        task.pending -= 1
        if task.pending == 0:
            for job in self.references.finish(task):
                self.apply_ref(job, task.info)

    def on_run_done(self, run: Run, header: dict, out: bytes, err: bytes, res: bytes) -> None:
        records = parse_records(res)
        job = run.job
        if isinstance(job, RefTask):
            self.references.on_run(job, run, header, records)
            self.ref_run_done(job)
            return
        job.cpu += float(header.get("cpu") or 0.0)
        if run.trace:
            self.on_trace_run(job, records)
            return
        if judging.rerun_decision(job, run, header):
            self.cand.queue.append(run)  # at the back: later, when the load may have passed
            return
        if not job.have_output:
            job.stdout, job.stderr, job.have_output = out, err, True
        if job.kind == "stdio":
            job.tests[run.case] = judging.judge_stdio(job, run, header, out, records)
        else:
            outcomes = judging.seq_outcomes(run, header, records, job.n)
            nxt = judging.judge_seq(job, run, outcomes)
            if nxt is not None:  # a crash: a new run continues from the next test
                self.cand.queue.appendleft(
                    Run(job, self._seq_spec(job, nxt), job.limits, start=nxt)
                )
                job.pending += 1
        judging.mark_confirmed(job, run)
        job.pending -= 1
        if job.pending == 0:
            self.finish(job)

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
        result = judging.exec_result(
            job,
            tests,
            verdict,
            wall=time.monotonic() - job.t0,
            sandbox=self.workers.kind,
        )
        self.send_client({"id": job.jid, "result": result.to_json()})

    def start_trace(self, job: Job, i: int) -> None:
        if job.kind == "stdio":
            spec = run_spec(
                "stdio",
                job.code,
                job.suite,
                job.limits,
                stdin=job.suite["cases"][i]["input"],
                trace=0,
            )
        else:
            spec = self._seq_spec(job, i, trace=i)
        job.trace_index = i
        job.pending += 1
        self.cand.queue.appendleft(Run(job, spec, job.limits, start=i, case=i, trace=True))

    def on_trace_run(self, job: Job, records: list[dict]) -> None:
        events = next((r["trace"] for r in records if type(r.get("trace")) is list), None)
        if events:
            lines = [clip(str(e), 200) for e in events[:80]]
            text = "\n".join(lines)
            t = job.tests[job.trace_index]
            job.tests[job.trace_index] = dataclasses.replace(t, trace=text)
        job.pending -= 1
        if job.pending == 0:
            self.finish(job)


def main(config_json: str) -> None:
    """The service process (also reachable as ``pools.main``, which the client starts)."""
    pools.main(config_json)
