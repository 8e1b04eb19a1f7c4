"""Start a job as 1 process x 8 CPU devices or N processes x 4, with timeouts (no hangs)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JOB = Path(__file__).resolve().parent / "job.py"
# XLA's persistent compilation cache, shared by the test jobs: a resumed run or the second
# test on the same mesh loads its programs instead of compiling them again (the key is the
# program and the jax version, so a stale entry can never be used for other code).
CACHE = os.environ.get(
    "MUCODE_TEST_XLA_CACHE", str(Path(tempfile.gettempdir()) / "mucode_jax_test_xla_cache")
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(devices: int, process: int | None = None, processes: int = 1, port: int = 0, **extra):
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "PYTHONUNBUFFERED": "1",
        "JAX_COMPILATION_CACHE_DIR": CACHE,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        **extra,
    }
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(k, None)
    if process is not None:
        env.update(
            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
            JAX_NUM_PROCESSES=str(processes),
            JAX_PROCESS_ID=str(process),
            MUCODE_HEARTBEAT_TIMEOUT_S=extra.get("MUCODE_HEARTBEAT_TIMEOUT_S", "10"),
            MUCODE_SHUTDOWN_TIMEOUT_S="20",
            MUCODE_AGREE_TIMEOUT_S="60",
        )
    return env


def launch(
    argv_for, processes: int, log_for, timeout_s: float, **env_extra
) -> tuple[list[int], list[str]]:
    """Runs ``argv_for(i)`` as 1 process x 8 CPU devices or ``processes`` x 8/``processes``
    joined by jax.distributed (each in its own session, so its executor's workers go with it),
    output to ``log_for(i)``; kills whatever still runs after ``timeout_s``. Return codes, logs."""
    port = free_port()
    procs, logs = [], []
    for i in range(processes):
        if processes == 1:
            env = env_for(8, **env_extra)
        else:
            env = env_for(8 // processes, i, processes, port, **env_extra)
        logs.append(Path(log_for(i)))
        procs.append(
            subprocess.Popen(
                argv_for(i),
                cwd=Path(__file__).resolve().parents[2],
                env=env,
                stdout=open(logs[-1], "w"),  # noqa: SIM115
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    deadline = time.time() + timeout_s
    try:
        codes = [p.wait(timeout=max(deadline - time.time(), 1)) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return codes, [log.read_text() for log in logs]


class Job:
    """A running job: its processes and their logs."""

    def __init__(self, kind, workdir, overrides=None, *, processes=1, per_process=None, logdir):
        self.workdir, self.logdir = Path(workdir), Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        per_process = per_process or [{}] * processes
        port = free_port()
        self.logs = [self.logdir / f"{self.workdir.name}.{i}.log" for i in range(processes)]
        self.procs = []
        for i in range(processes):
            o = {**(overrides or {}), **per_process[i]}
            env = env_for(8) if processes == 1 else env_for(8 // processes, i, processes, port)
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, str(JOB), kind, str(self.workdir), json.dumps(o)],
                    stdout=open(self.logs[i], "w"),  # noqa: SIM115
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )

    def log(self, i: int = 0) -> str:
        return self.logs[i].read_text()

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.wait()

    def wait(self, timeout: float = 240) -> list[int]:
        """Return codes; kills every process and fails if the job is still running."""
        deadline = time.time() + timeout
        for p in self.procs:
            try:
                p.wait(timeout=max(deadline - time.time(), 0.1))
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(
                    f"job {self.workdir.name} still running after {timeout} s:\n"
                    + self.log()[-3000:]
                ) from None
        return [p.returncode for p in self.procs]

    def results(self, timeout: float = 240) -> list[dict]:
        codes = self.wait(timeout)
        out = []
        for i, code in enumerate(codes):
            text = self.log(i)
            assert code == 0, f"process {i} exited with {code}:\n{text[-3000:]}"
            lines = [x for x in text.splitlines() if x.startswith("RESULT ")]
            assert lines, text[-3000:]
            out.append(json.loads(lines[-1][len("RESULT ") :]))
        return out
