"""What the executor service keeps track of, and the run specs it sends to workers.

* a `Job`: one program against one suite, as the client submitted it; its tests are filled in as
  its runs come back;
* a `RefTask`: the reference solution of one suite, run once (`references`), with the `RefInfo`
  it yields (CPU cost, expected values, recorded calls);
* a `Run`: one execution in a worker — a whole assert/function/check suite from test ``start``
  on, or one stdio case — with the spec (`run_spec`, `seq_spec`) the worker's harness reads.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from mucode_jax.execution import asserts, suites
from mucode_jax.execution.limits import Limits
from mucode_jax.execution.results import TestResult


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
    """One submitted program and suite; `tests` fills in as its runs are judged."""

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
        self.trace_index = -1
        self.reference_cpu: float | None = None
        self.reruns = 0

    def set_reference_cpu(self, cpu: float) -> None:
        """Derive the CPU limit from the reference's cost (rounded as results report it, so a
        cost read back from a client's cache gives exactly the same limit)."""
        self.reference_cpu = round(cpu, 4)
        self.limits = self.base_limits.with_reference(self.reference_cpu)


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
    frame: bytes | None = None  # the packed frame a worker gets (`service.Service.dispatch`)


def run_spec(mode: str, code: str, suite: dict, limits: Limits, **extra) -> dict:
    """The frame a worker runs: the program, the suite's setup and the limits, plus `extra`."""
    spec = {
        "mode": mode,
        "code": code,
        "setup": suite.get("setup", ""),
        "preamble": suite.get("preamble", ""),
        "script": bool(suite.get("script", False)),
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


def seq_spec(
    suite: dict,
    code: str,
    limits: Limits,
    start: int,
    trace: int = -1,
    recorded_calls: list | None = None,
) -> dict:
    """The spec of a sequential (assert / function / check) run from test `start` on.

    A check suite's candidates replay `recorded_calls`, the calls its reference's ``check`` made.
    """
    kind = suite["kind"]
    if kind == "assert":
        holes = [
            list(asserts.split_assert(t, suite.get("entry_point")).holes) for t in suite["tests"]
        ]
        return run_spec("assert", code, suite, limits, holes=holes, start=start, trace=trace)
    if kind == "function":
        calls, args_format = suite["inputs"], "json"
    else:
        calls, args_format = recorded_calls, "tagged"
    return run_spec(
        "calls",
        code,
        suite,
        limits,
        entry_point=suite["entry_point"],
        calls=calls,
        args_format=args_format,
        start=start,
        trace=trace,
    )
