r"""Programs per second: our executor vs a human-eval-style baseline, same programs, same run.

The baseline is openai/human-eval's `execution.py` pattern, written here: per program one
`multiprocessing.Manager()` and one `multiprocessing.Process` that runs ``program + tests``
with `exec` under a `signal.setitimer` time limit, driven by a thread pool of ``--workers``
threads. Ours: `Executor(workers=--workers)` (bubblewrap sandboxes, fork per program, judging
on the trusted side). Both run every program to a verdict; both must agree on pass/fail.

    python launch/bench_executor.py --workers=2 --trivial=3000 --repeats=3

Every figure is measured ``--repeats`` times, ours and the baseline alternating, and printed as
median [min-max]; the load average is printed before and after each, because the machine may
be shared. Figures:

* ``startup``: `Executor()` until the first result is back (in this process), and the CLI
  (``python -m mucode_jax.execution``) on a 1-program file, from process start to exit.
* ``cli``: the CLI on ``--cli`` trivial programs, start-up included, against the baseline on
  the same programs (run in this process: it pays no interpreter start).
* ``trivial``: steady state, ``--trivial`` copies of ``def f(x): return x`` with
  ``assert f(1) == 1`` after a warm-up; the baseline on ``--baseline_trivial`` of them.
  Reported: programs/s, per worker (core), our CPU per program over every process of the
  executor (client, service, workers, sandboxed children; read from /proc) and programs per
  CPU-second (what one dedicated core would do, whatever the load), and that CPU by process.
* ``official``: ours only, the trivial programs with the official μCode preamble before them
  (it imports numpy, so the workers carry numpy: every fork of a worker costs more); the
  baseline would import numpy in every process it starts.
* ``mbpp``: the 974 MBPP reference solutions with all their asserts (challenge tests included).
  Their own work is the same in both executors and bounds both (task 123 alone needs ~2.4 s of
  CPU), so ``mbpp`` also prints the bound ``max(longest program, sum of program CPU / workers)``
  and ``mbpp-light``: the same comparison on the tasks whose program needs under
  ``--light_cpu`` seconds of CPU (measured by our first run), where the executor's overhead,
  not the programs, decides.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import multiprocessing
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from absl import app, flags

from mucode_jax.data import load_problems
from mucode_jax.data.problems import OFFICIAL_PREAMBLE
from mucode_jax.execution import Executor

FLAGS = flags.FLAGS
flags.DEFINE_integer("workers", 2, "Parallel workers (both sides).")
flags.DEFINE_integer("trivial", 3000, "Number of trivial programs.")
flags.DEFINE_integer("baseline_trivial", 200, "Trivial programs for the (slow) baseline.")
flags.DEFINE_string(
    "mbpp",
    str(Path(__file__).resolve().parents[1].parent / "shared/data/mbpp/mbpp.jsonl"),
    "MBPP JSONL.",
)
flags.DEFINE_float("timeout", 3.0, "Per-program time limit (s) for the baseline.")
flags.DEFINE_integer("repeats", 3, "Repeats of every figure (median and range are printed).")
flags.DEFINE_integer("cli", 200, "Trivial programs of the CLI run (start-up included).")
flags.DEFINE_float("light_cpu", 0.05, "CPU seconds below which an MBPP program is 'light'.")
flags.DEFINE_string("only", "", "Comma-separated subset of startup,cli,trivial,official,mbpp.")

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


def _tree_cpu(root: int) -> dict[str, float]:
    """CPU seconds of the executor's processes by role: ``service`` (`root`), ``workers`` (its
    live descendants: sandboxes and workers) and ``runs`` (what the descendants reaped: the
    forked child of every run)."""
    ppid, own, reaped = {}, {}, {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = open(f"/proc/{name}/stat", "rb").read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            pid = int(name)
            ppid[pid] = int(fields[1])
            own[pid] = (int(fields[11]) + int(fields[12])) / _TCK
            reaped[pid] = (int(fields[13]) + int(fields[14])) / _TCK
    out = {"service": own.get(root, 0.0), "workers": 0.0, "runs": reaped.get(root, 0.0)}
    stack = [c for c, pp in ppid.items() if pp == root]
    while stack:
        p = stack.pop()
        out["workers"] += own.get(p, 0.0)
        out["runs"] += reaped.get(p, 0.0)
        stack += [c for c, pp in ppid.items() if pp == p]
    return out


def _suites(programs, preamble: str = ""):
    return [
        {
            "kind": "assert",
            "setup": setup,
            "tests": tests,
            **({"entry_point": ep} if ep else {}),
            **({"preamble": preamble} if preamble else {}),
        }
        for _, tests, setup, ep in programs
    ]


def run_ours(ex: Executor, programs, workers: int, preamble: str = ""):
    """(wall, CPU of every executor process, results, CPU by role) of one `map` after a warm-up;
    the roles: ``client`` (this process) and those of `_tree_cpu`."""
    suites = _suites(programs, preamble)
    ex.map([programs[0][0]] * 20, suites[0])  # warm-up
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = _tree_cpu(ex._proc.pid)
    t0 = time.perf_counter()
    results = ex.map([code for code, _, _, _ in programs], suites)
    wall = time.perf_counter() - t0
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu1 = _tree_cpu(ex._proc.pid)
    roles = {k: cpu1[k] - cpu0[k] for k in cpu0}
    roles["client"] = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
    return wall, sum(roles.values()), results, roles


def run_cli(programs, workers: int, path: Path) -> tuple[float, list[bool]]:
    """Wall time of the CLI on `programs`, from process start to exit (start-up included)."""
    with open(path / "in.jsonl", "w") as f:
        for i, (code, suite) in enumerate(zip([p[0] for p in programs], _suites(programs))):
            f.write(json.dumps({"id": i, "code": code, "tests": suite}) + "\n")
    cmd = [sys.executable, "-m", "mucode_jax.execution", "--input", str(path / "in.jsonl")]
    cmd += ["--output", str(path / "out.jsonl"), "--workers", str(workers)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    with open(path / "out.jsonl") as f:
        return wall, [json.loads(line)["verdict"] == "passed" for line in f]


def startup(workers: int) -> float:
    """`Executor()` until the first result is back."""
    t0 = time.perf_counter()
    with Executor(workers=workers) as ex:
        ex.run(TRIVIAL[0], {"kind": "assert", "tests": TRIVIAL[1]})
        return time.perf_counter() - t0


def _stat(xs) -> str:
    xs = sorted(xs)
    med = statistics.median(xs)
    return f"{med:.3g} [{xs[0]:.3g}-{xs[-1]:.3g}]"


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def _agree(a, b) -> str:
    return f"{sum(x == y for x, y in zip(a, b)) / len(b):.1%}"


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
    w, reps = FLAGS.workers, FLAGS.repeats
    every = {"startup", "cli", "trivial", "official", "mbpp"}
    only = set(FLAGS.only.split(",")) if FLAGS.only else every
    print(f"# {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC {platform.node()}")
    print(f"# {os.cpu_count()} CPUs, workers={w}, repeats={reps}; figures: median [min-max]")
    if "startup" in only:
        load0 = _load()
        t_ex, t_cli = [], []
        with tempfile.TemporaryDirectory() as d:
            for _ in range(reps):
                t_ex.append(startup(w))
                t_cli.append(run_cli(trivial[:1], w, Path(d))[0])
        print(
            f"startup  Executor() to first result {_stat(t_ex)} s | CLI, 1 program, process "
            f"start to exit {_stat(t_cli)} s | load {load0} -> {_load()}"
        )
    if "cli" in only:
        load0 = _load()
        progs = [(TRIVIAL[0], TRIVIAL[1], "", None)] * FLAGS.cli
        ours, base, agree = [], [], ""
        with tempfile.TemporaryDirectory() as d:
            for _ in range(reps):
                wall, ok = run_cli(progs, w, Path(d))
                bwall, bok = run_baseline(progs, w)
                ours.append(wall)
                base.append(bwall)
                agree = _agree(ok, bok)
        ratio = [b / o for o, b in zip(ours, base)]
        print(
            f"cli      {FLAGS.cli} programs, start-up included: ours {_stat(ours)} s "
            f"({_stat([FLAGS.cli / x for x in ours])}/s) | baseline {_stat(base)} s "
            f"({_stat([FLAGS.cli / x for x in base])}/s) | speed-up {_stat(ratio)}x | agree "
            f"{agree} | load {load0} -> {_load()}"
        )
    with Executor(workers=w) as ex:
        print(f"# sandbox={ex.sandbox}")
        if "trivial" in only:
            load0 = _load()
            rate, per_cpu, cpu_ms, brate, agree = [], [], [], [], ""
            by_role: dict[str, list[float]] = {}
            for _ in range(reps):
                wall, cpu, res, roles = run_ours(ex, trivial, w)
                for k, v in roles.items():
                    by_role.setdefault(k, []).append(v / len(trivial) * 1e3)
                bwall, bok = run_baseline(trivial[: FLAGS.baseline_trivial], w)
                rate.append(len(trivial) / wall)
                per_cpu.append(len(trivial) / cpu)
                cpu_ms.append(cpu / len(trivial) * 1e3)
                brate.append(FLAGS.baseline_trivial / bwall)
                agree = _agree([r.passed for r in res], bok)
            print(
                f"trivial  ours {_stat(rate)}/s ({_stat([r / w for r in rate])}/s per worker), "
                f"{_stat(cpu_ms)} ms CPU/program = {_stat(per_cpu)} programs per CPU-second | "
                f"baseline {_stat(brate)}/s | speed-up {_stat([a / b for a, b in zip(rate, brate)])}x "
                f"| agree {agree} | load {load0} -> {_load()}"
            )
            print(
                "trivial  ms CPU/program by process: "
                + ", ".join(f"{k} {_stat(v)}" for k, v in sorted(by_role.items()))
                + " (runs: the forked children)"
            )
        if "official" in only:
            load0 = _load()
            rate, per_cpu, cpu_ms = [], [], []
            for _ in range(reps):
                wall, cpu, res, _ = run_ours(ex, trivial, w, OFFICIAL_PREAMBLE)
                assert all(r.passed for r in res), res[0]
                rate.append(len(trivial) / wall)
                per_cpu.append(len(trivial) / cpu)
                cpu_ms.append(cpu / len(trivial) * 1e3)
            print(
                f"official ours, official preamble (imports numpy) {_stat(rate)}/s, "
                f"{_stat(cpu_ms)} ms CPU/program = {_stat(per_cpu)} programs per CPU-second | "
                f"load {load0} -> {_load()}"
            )
        if "mbpp" in only:
            load0 = _load()
            rate, brate, lrate, lbrate, bound, agree, light = [], [], [], [], [], "", None
            lcpu_ms = []
            for _ in range(reps):
                wall, _, res, _ = run_ours(ex, mbpp, w)
                bwall, bok = run_baseline(mbpp, w)
                rate.append(len(mbpp) / wall)
                brate.append(len(mbpp) / bwall)
                agree = _agree([r.passed for r in res], bok)
                cpus = [r.cpu_seconds for r in res]
                bound.append(len(mbpp) / max(max(cpus), sum(cpus) / w))
                if light is None:
                    light = [p for p, c in zip(mbpp, cpus) if c < FLAGS.light_cpu]
                lwall, lcpu, _, _ = run_ours(ex, light, w)
                lbwall, _ = run_baseline(light, w)
                lrate.append(len(light) / lwall)
                lbrate.append(len(light) / lbwall)
                lcpu_ms.append(lcpu / len(light) * 1e3)
            print(
                f"mbpp     {len(mbpp)} references: ours {_stat(rate)}/s | baseline "
                f"{_stat(brate)}/s | speed-up {_stat([a / b for a, b in zip(rate, brate)])}x | "
                f"bound of any executor (programs' own CPU) {_stat(bound)}/s | agree {agree} | "
                f"load {load0} -> {_load()}"
            )
            print(
                f"mbpp-light {len(light)} references under {FLAGS.light_cpu:g} s CPU: ours "
                f"{_stat(lrate)}/s, {_stat(lcpu_ms)} ms CPU/program | baseline "
                f"{_stat(lbrate)}/s | speed-up {_stat([a / b for a, b in zip(lrate, lbrate)])}x "
                f"| load {load0} -> {_load()}"
            )


if __name__ == "__main__":
    app.run(main)
