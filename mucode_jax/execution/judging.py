"""Judging on the trusted side: what a run reported -> verdicts.

Children report only raw values (`serial`), result records on their fd 3, and how they ended
(the worker's header: exit status, signal, CPU and wall time, which limit killed them). This
module turns that into `TestResult`s — the assert skeletons, `compare.outputs_match`,
`compare.stdout_matches` — and decides the load rule for timeouts (`rerun_decision`). Every test
index must be reported exactly once; a missing one takes the verdict of how the child ended, a
duplicated one fails. Nothing here touches a queue or a worker.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import signal
from typing import Any

from mucode_jax.execution import asserts, compare, results, serial, suites
from mucode_jax.execution.jobs import Job, Run
from mucode_jax.execution.limits import Limits
from mucode_jax.execution.results import ExecResult, TestResult

R = results
TEXT_CAP = 4000


def _text(data: bytes, cap: int = TEXT_CAP) -> str:
    text = data.decode("utf-8", "replace")
    return text if len(text) <= cap else text[:cap] + f"\n... [{len(text) - cap} more characters]"


def clip(text: str | None, cap: int = 2000) -> str | None:
    if text is None or len(text) <= cap:
        return text
    return text[:cap] + "... [truncated]"


def exception_verdict(err: dict) -> str:
    kind = err.get("type")
    if kind == "MemoryError":
        return R.MEMORY_LIMIT
    if kind == "ResultTooLarge":
        return R.OUTPUT_LIMIT
    return R.RUNTIME_ERROR


def err_text(err: dict) -> str:
    msg = str(err.get("msg", ""))
    return clip(f"{err.get('type', 'Exception')}: {msg}" if msg else str(err.get("type")), 500)


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


_decode = json.JSONDecoder().decode


def parse_records(blob: bytes) -> list[dict]:
    """Result records, one JSON object per line; malformed lines are dropped."""
    out = []
    for line in blob.split(b"\n"):
        if not line:
            continue
        try:
            # What ``json.loads(line)`` does, without its encoding sniffing for the lines the
            # harness writes: one starting with ``{`` and a second byte that is not NUL is
            # UTF-8 to ``json.loads`` too.
            if line[0] == 0x7B and len(line) > 1 and line[1]:
                rec = _decode(line.decode("utf-8", "surrogatepass"))
            else:
                rec = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if type(rec) is dict:
            out.append(rec)
    return out


def seq_outcomes(
    run: Run, header: dict, records: list[dict], n: int, reference: bool = False
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
            return {"phase": "syntax", "err": err, "message": err_text(err)}
        if "load_err" in rec and not loaded:
            err = rec["load_err"] if type(rec["load_err"]) is dict else {}
            return {"phase": "load", "err": err, "message": err_text(err)}
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


def judge_seq(job: Job, run: Run, outcomes: dict) -> int | None:
    """Fill in the job's tests from a sequential run's outcomes; returns the test to restart
    from after a crash (a new run continues there), or None."""
    phase = outcomes["phase"]
    if phase != "tests":
        if phase == "syntax":
            job.syntax = True
            job.error = outcomes["err"].get("tb") or outcomes["message"]
            verdict, message, tb = R.SYNTAX_ERROR, outcomes["message"], job.error
        elif phase == "load":
            err = outcomes["err"]
            verdict, message, tb = exception_verdict(err), outcomes["message"], err.get("tb")
            job.error = tb or message
        else:
            verdict, message = outcomes["ending"]
            tb = None
            job.error = message
        for i in range(run.start, job.n):
            job.tests[i] = make_test_result(
                job, i, verdict, error=message, traceback=clip(tb, 4000)
            )
        return None
    for i, (kind, payload) in outcomes["by_index"].items():
        job.tests[i] = judge_one(job, i, kind, payload)
    return outcomes["restart"]


def make_test_result(job: Job, i: int, verdict: str, **kw) -> TestResult:
    shown_input, expected = shown(job, i)
    return TestResult(i, verdict, input=shown_input, expected=expected, **kw)


def shown(job: Job, i: int) -> tuple[str, str | None]:
    kind = job.kind
    if kind == "assert":
        split = asserts.split_assert(job.suite["tests"][i], job.suite.get("entry_point"))
        return split.source, split.shown_expected
    if kind == "function":
        args = job.suite["inputs"][i]
        exp = job.ref.expected[i] if job.ref and job.ref.expected else None
        return suites.call_text(job.suite["entry_point"], args), serial.short_repr(exp)
    if kind == "check":
        return job.ref.call_texts[i], serial.short_repr(job.ref.expected[i])
    case = job.suite["cases"][i]
    return clip(case["input"]), clip(case["output"])


def judge_one(job: Job, i: int, kind: str, payload) -> TestResult:
    if kind == "dup":
        return make_test_result(
            job,
            i,
            R.RUNTIME_ERROR,
            error="the result of this test was reported more than once "
            "(the program wrote to the test harness' result channel)",
        )
    if kind == "died":
        return make_test_result(job, i, payload[0], error=payload[1])
    if kind == "error":
        expected = job.ref.expected[i] if job.kind in ("function", "check") else None
        if isinstance(expected, serial.ExpectedError) and expected.type_name == payload.get("type"):
            return make_test_result(job, i, R.PASSED)
        return make_test_result(
            job,
            i,
            exception_verdict(payload),
            error=err_text(payload),
            traceback=clip(str(payload.get("tb") or ""), 4000) or None,
        )
    try:
        values = [serial.from_jsonable(v) for v in payload]
    except (serial.DecodeError, RecursionError) as e:
        return make_test_result(
            job, i, R.RUNTIME_ERROR, error=f"the reported result is malformed ({e})"
        )
    if job.kind == "assert":
        split = asserts.split_assert(job.suite["tests"][i], job.suite.get("entry_point"))
        if len(values) != len(split.holes):
            return make_test_result(job, i, R.RUNTIME_ERROR, error="malformed result")
        held, error = split.judge(values)
        if len(values) == 1:
            got = serial.short_repr(values[0])
        else:
            got = "; ".join(
                f"{h} = {serial.short_repr(v, 150)}" for h, v in zip(split.holes, values)
            )
        return make_test_result(job, i, R.PASSED if held else R.WRONG_ANSWER, got=got, error=error)
    if len(values) != 1:
        return make_test_result(job, i, R.RUNTIME_ERROR, error="malformed result")
    expected = job.ref.expected[i]
    atol = job.suite.get("atol", 0.0)
    mode = job.suite.get("compare", "exact")
    ok = compare.outputs_match(values[0], expected, atol=atol, compare=mode)
    error = None
    if isinstance(expected, serial.ExpectedError):
        error = f"expected the call to raise {expected.type_name}"
    return make_test_result(
        job,
        i,
        R.PASSED if ok else R.WRONG_ANSWER,
        got=serial.short_repr(values[0]),
        error=error,
    )


def judge_stdio(job: Job, run: Run, header: dict, out: bytes, records) -> TestResult:
    i = run.case
    ending = classify_ending(header, run.limits)
    got = clip(out.decode("utf-8", "replace"))
    if ending is not None:
        return make_test_result(job, i, ending[0], error=ending[1], got=got)
    err = None
    done = False
    for rec in records:
        if "syntax" in rec and type(rec["syntax"]) is dict:
            job.syntax = True
            job.error = rec["syntax"].get("tb") or err_text(rec["syntax"])
            return make_test_result(
                job,
                i,
                R.SYNTAX_ERROR,
                error=err_text(rec["syntax"]),
                traceback=clip(rec["syntax"].get("tb"), 4000),
            )
        if "x" in rec and type(rec["x"]) is dict and err is None:
            err = rec["x"]
        if rec.get("done") == 1:
            done = True
    if err is not None:
        return make_test_result(
            job,
            i,
            exception_verdict(err),
            error=err_text(err),
            traceback=clip(str(err.get("tb") or ""), 4000) or None,
            got=got,
        )
    del done  # a clean exit (also os._exit(0) after flushing) is judged on its output
    expected = job.suite["cases"][i]["output"]
    ok = compare.stdout_matches(out.decode("utf-8", "replace"), expected)
    return make_test_result(job, i, R.PASSED if ok else R.WRONG_ANSWER, got=got)


def rerun_decision(job: Job, run: Run, header: dict) -> bool:
    """The load rule: True when a timed-out run must run again before it is judged.

    A timeout is load-suspect when the run was killed at its CPU limit and that limit is within
    `Limits.rerun_margin` of the reference-derived one (or the suite has no reference), or when
    the wall-clock backstop caught a program that was computing (the host starved it). Such a
    run is run again, up to `Limits.timeout_reruns` times, and only its last run is judged; a
    timeout there is ``confirmed``. Timeouts that load cannot explain (an idle program at the
    backstop; a CPU limit far above the reference's cost) are judged at once, also as
    ``confirmed``. Sets ``run.confirmed`` for the timeout that is judged.
    """
    cause = timeout_cause(header, run.limits)
    if cause is None:
        return False
    suspect = cause == "starved" or (cause == "cpu" and run.limits.load_suspect(job.reference_cpu))
    if suspect and run.reruns < run.limits.timeout_reruns:
        run.reruns += 1
        job.reruns += 1
        return True
    run.confirmed = (not suspect) or run.reruns > 0
    return False


def mark_confirmed(job: Job, run: Run) -> None:
    """Copy the run's timeout confirmation onto the timeout tests it decided."""
    if run.confirmed is None:
        return
    first = run.case if job.kind == "stdio" else run.start
    last = first + 1 if job.kind == "stdio" else job.n
    for i in range(first, last):
        t = job.tests[i]
        if t is not None and t.verdict == R.TIMEOUT and t.confirmed is None:
            job.tests[i] = dataclasses.replace(t, confirmed=run.confirmed)


def exec_result(job: Job, tests: list[TestResult], verdict: str, wall: float, sandbox: str):
    """The job's `ExecResult`."""
    return ExecResult(
        verdict=verdict,
        tests=tuple(tests),
        error=clip(job.error, 4000),
        stdout=_text(job.stdout),
        stderr=_text(job.stderr),
        cpu_seconds=job.cpu,
        wall_seconds=wall,
        cpu_limit=job.limits.cpu_seconds,
        sandbox=sandbox,
        reference_cpu=job.reference_cpu,
        reruns=job.reruns,
    )
