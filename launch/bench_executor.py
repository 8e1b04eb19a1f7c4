r"""Programs per second: our executor vs a human-eval-style baseline, same programs, same run.

The baseline is openai/human-eval's `execution.py` pattern, written here: per program one
`multiprocessing.Manager()` and one `multiprocessing.Process` that runs ``program + tests``
with `exec` under a `signal.setitimer` time limit, driven by a thread pool of ``--workers``
threads. Ours: `Executor(workers=--workers)` (bubblewrap sandboxes, fork per program, judging
on the trusted side). Both run every program to a verdict; both must agree on pass/fail.

    python launch/bench_executor.py --workers=2 --trivial=3000

Program sets: the 974 MBPP reference solutions with all their asserts (challenge tests
included), and ``--trivial`` copies of ``def f(x): return x`` with ``assert f(1) == 1``.
Reported: wall-clock programs/s, programs/s per worker (core), and our CPU per program over
every process of the executor (client, service, workers, sandboxed children; read from
/proc, so it does not depend on what else runs on the machine). The load average is printed
because the machine is shared.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import multiprocessing
import os
import platform
import resource
import signal
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from absl import app, flags

from mucode_jax.data import load_problems
from mucode_jax.execution import Executor

FLAGS = flags.FLAGS
flags.DEFINE_integer("workers", 2, "Parallel workers (both sides).")
flags.DEFINE_integer("trivial", 3000, "Number of trivial programs.")
flags.DEFINE_integer("baseline_trivial", 600, "Trivial programs for the (slow) baseline.")
flags.DEFINE_string(
    "mbpp",
    str(Path(__file__).resolve().parents[1].parent / "shared/data/mbpp/mbpp.jsonl"),
    "MBPP JSONL.",
)
flags.DEFINE_float("timeout", 3.0, "Per-program time limit (s) for the baseline.")

TRIVIAL = ("def f(x):\n    return x\n", ["assert f(1) == 1"])


# ---------------------------------------------------------------------------------------------
# The human-eval-style baseline (openai/human-eval, human_eval/execution.py, condensed).
# ---------------------------------------------------------------------------------------------


class _TimeoutException(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: float):
    def handler(signum, frame):
        raise _TimeoutException("Timed out!")

    signal.setitimer(signal.ITIMER_REAL, seconds)
    signal.signal(signal.SIGALRM, handler)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _unsafe_execute(program: str, timeout: float, result) -> None:
    with tempfile.TemporaryDirectory() as dirname:
        cwd = os.getcwd()
        os.chdir(dirname)
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # human-eval's reliability_guard
        try:
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
            ):
                with _time_limit(timeout):
                    exec(program, {})  # noqa: S102 - this is the unsafe baseline
            result.append("passed")
        except _TimeoutException:
            result.append("timed out")
        except BaseException as e:  # noqa: BLE001
            result.append(f"failed: {e}")
        finally:
            os.chdir(cwd)


def _check_correctness(program: str, timeout: float) -> bool:
    manager = multiprocessing.Manager()
    result = manager.list()
    p = multiprocessing.Process(target=_unsafe_execute, args=(program, timeout, result))
    p.start()
    p.join(timeout=timeout + 1)
    if p.is_alive():
        p.kill()
    passed = bool(result) and result[0] == "passed"
    manager.shutdown()
    return passed


def run_baseline(
    programs: list[tuple[str, list[str], str, str | None]], workers: int
) -> tuple[float, list[bool]]:
    texts = [
        code + "\n" + setup + "\n" + "\n".join(tests) + "\n" for code, tests, setup, _ in programs
    ]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        verdicts = list(pool.map(lambda s: _check_correctness(s, FLAGS.timeout), texts))
    return time.perf_counter() - t0, verdicts


# ---------------------------------------------------------------------------------------------
# Ours.
# ---------------------------------------------------------------------------------------------

_TCK = os.sysconf("SC_CLK_TCK")


def _tree_cpu(root: int) -> float:
    """CPU seconds of `root` and its live descendants, including their reaped children."""
    ppid, cpu = {}, {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = open(f"/proc/{name}/stat", "rb").read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            ppid[int(name)] = int(fields[1])
            cpu[int(name)] = sum(int(x) for x in fields[11:15]) / _TCK
    total, stack = 0.0, [root]
    while stack:
        p = stack.pop()
        total += cpu.get(p, 0.0)
        stack += [c for c, pp in ppid.items() if pp == p]
    return total


def run_ours(ex: Executor, programs, workers: int) -> tuple[float, float, list[bool]]:
    suites = [
        {"kind": "assert", "setup": setup, "tests": tests, **({"entry_point": ep} if ep else {})}
        for _, tests, setup, ep in programs
    ]
    ex.map([programs[0][0]] * 20, suites[0])  # warm-up
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = _tree_cpu(ex._proc.pid)
    t0 = time.perf_counter()
    results = ex.map([code for code, _, _, _ in programs], suites)
    wall = time.perf_counter() - t0
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = _tree_cpu(ex._proc.pid) - cpu0
    cpu += (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
    return wall, cpu, [r.passed for r in results]


def main(argv):
    del argv
    # The MBPP programs and all their asserts (public, private, challenge), as the loader builds them.
    mbpp = [
        (
            p.reference,
            p.public_tests["tests"] + p.private_tests["tests"],
            p.public_tests["setup"],
            p.entry_point,
        )
        for p in load_problems("mbpp", path=FLAGS.mbpp)
    ]
    trivial = [(TRIVIAL[0], TRIVIAL[1], "", None)] * FLAGS.trivial
    w = FLAGS.workers
    load0 = os.getloadavg()
    print(f"# {datetime.date.today()} {platform.node()} {os.cpu_count()} CPUs, load {load0[0]:.2f}")
    with Executor(workers=w) as ex:
        print(f"# sandbox={ex.sandbox}, workers={w}")
        out = {}
        for name, progs, base_n in (
            ("trivial", trivial, FLAGS.baseline_trivial),
            ("mbpp", mbpp, len(mbpp)),
        ):
            wall, cpu, ok = run_ours(ex, progs, w)
            bwall, bok = run_baseline(progs[:base_n], w)
            agree = sum(a == b for a, b in zip(ok, bok)) / len(bok)
            ours, base = len(progs) / wall, base_n / bwall
            out[name] = (ours, base)
            print(
                f"{name:8s} ours {ours:7.1f}/s ({ours / w:6.1f}/s/core, {cpu / len(progs) * 1e3:.2f} ms CPU/program, "
                f"{len(progs) / cpu:6.1f} programs per CPU-second) | baseline {base:6.1f}/s "
                f"({base / w:5.1f}/s/core) | speed-up {ours / base:4.1f}x | pass {sum(ok)}/{len(ok)}, "
                f"agree {agree:.1%}"
            )
    print(f"# load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    app.run(main)
