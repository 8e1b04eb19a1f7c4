"""The reference-solution cache of the executor service.

A suite with a ``reference`` (and every ``check`` suite) needs its reference run once before its
candidates can be judged: for the CPU limit (its cost, `Job.set_reference_cpu`), and for
``function`` / ``check`` suites also the expected values and the calls ``check`` made. The
reference runs in separate reference workers, so expected values never enter a candidate
worker. One `RefTask` per suite (and memory / CPU limit) runs at a time; jobs that arrive
meanwhile wait on it; its `RefInfo` is cached for the service's lifetime.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable

from mucode_jax.execution import results, serial, suites
from mucode_jax.execution.jobs import Job, RefInfo, RefTask, Run, run_spec, seq_spec
from mucode_jax.execution.judging import classify_ending, err_text, seq_outcomes
from mucode_jax.execution.limits import Limits

R = results
REF_CPU_FLOOR = 60.0  # a reference gets max(60 s, 4 x the base limit) of CPU


def ref_key(suite: dict, limits: Limits) -> str:
    h = hashlib.sha256()
    h.update(
        json.dumps({k: v for k, v in suite.items() if k != "outputs"}, sort_keys=True).encode()
    )
    h.update(json.dumps([limits.memory_mb, limits.cpu_seconds]).encode())
    return h.hexdigest()


class References:
    """Reference tasks and their cached results; `enqueue` puts a run on the reference pool."""

    def __init__(self, enqueue: Callable[[Run], None]):
        self.enqueue = enqueue
        self.cache: dict[str, RefInfo] = {}
        self.tasks: dict[str, RefTask] = {}

    def request(self, job: Job) -> RefInfo | None:
        """The suite's `RefInfo` if known; else None, and the job waits on its task."""
        key = ref_key(job.suite, job.base_limits)
        if key in self.cache:
            return self.cache[key]
        task = self.tasks.get(key)
        if task is None:
            task = self.tasks[key] = RefTask(key, job.suite, job.base_limits)
            self._start(task)
        task.waiting.append(job)
        return None

    def _start(self, task: RefTask) -> None:
        suite, base = task.suite, task.limits
        limits = dataclasses.replace(
            base, cpu_seconds=max(REF_CPU_FLOOR, 4 * base.cpu_seconds), wall_seconds=None
        )
        ref = suite["reference"]
        kind = suite["kind"]
        if kind == "stdio":
            for c, case in enumerate(suite["cases"]):
                spec = run_spec("stdio", ref, suite, limits, stdin=case["input"])
                self._add(Run(task, spec, limits, case=c))
        elif kind == "check":
            spec = run_spec("record", ref, suite, limits, entry_point=suite["entry_point"])
            spec["check"] = suite["check"]
            self._add(Run(task, spec, limits))
        else:
            self._add(Run(task, seq_spec(suite, ref, limits, 0), limits))

    def _add(self, run: Run) -> None:
        run.job.pending += 1
        self.enqueue(run)

    def on_run(self, task: RefTask, run: Run, header: dict, records: list[dict]) -> None:
        """Collect what one reference run reported (and queue a restart after a crash)."""
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
            self._on_check_run(task, records, ending)
            return
        # assert / function: sequential records
        outcomes = seq_outcomes(run, header, records, task.n, reference=True)
        if outcomes["phase"] != "tests":
            info.error = f"the reference solution failed to load: {outcomes['message']}"
            return
        task.outcomes.update(outcomes["by_index"])
        nxt = outcomes.get("restart")
        if nxt is not None:
            spec = seq_spec(task.suite, task.suite["reference"], run.limits, nxt)
            self._add(Run(task, spec, run.limits, start=nxt))

    @staticmethod
    def _on_check_run(task: RefTask, records: list[dict], ending) -> None:
        info = task.info
        calls, expected, texts = [], [], []
        for rec in records:
            if "syntax" in rec or "load_err" in rec or "check_err" in rec:
                err = rec.get("syntax") or rec.get("load_err") or rec.get("check_err")
                info.error = f"the reference solution fails its own check: {err_text(err)}"
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

    def run_failed(self, task: RefTask, message: str) -> None:
        task.info.error = message

    def finish(self, task: RefTask) -> list[Job]:
        """Complete a task whose runs are all back; returns the jobs that waited on it."""
        info = task.info
        if task.suite["kind"] == "function" and info.error is None:
            if "outputs" in task.suite:
                info.expected = task.suite["outputs"]
            else:
                info.expected = [self._expected(task, i) for i in range(task.n)]
        self.cache[task.key] = info
        del self.tasks[task.key]
        return task.waiting

    @staticmethod
    def _expected(task: RefTask, i: int):
        kind, payload = task.outcomes.get(i, ("died", (R.RUNTIME_ERROR, "no result")))
        if kind == "value":
            try:
                return serial.from_jsonable(payload[0])
            except (serial.DecodeError, IndexError, TypeError):
                return serial.ExpectedError("UndecodableResult")
        if kind == "error":
            return serial.ExpectedError(str(payload.get("type")))
        return serial.ExpectedError(payload[0])
