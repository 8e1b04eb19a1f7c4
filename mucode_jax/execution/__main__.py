"""CLI: run programs from a JSONL file through the sandboxed executor.

    python -m mucode_jax.execution --input programs.jsonl --output results.jsonl [--workers N]
        [--reference-cache costs.jsonl]

Input, one object per line: ``{"id": ..., "code": "...", "tests": <suite>, "limits"?: {...},
"trace"?: bool}`` (suites: see `mucode_jax.execution.suites`). Output, one line per input line
in the same order: ``ExecResult.to_json()`` (``{"id", "verdict", "passed", "total", "tests":
[...], ...}``), or ``{"id"?, "line": n, "error": "..."}`` for a malformed line; the other lines
still run. The exit status is 0 when every line was well-formed, 1 otherwise.

A suite's ``reference`` sets its CPU limit to ``max(cpu_seconds, cpu_factor x reference CPU)``;
``--reference-cache`` keeps the measured costs in a file, so later runs reuse them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from mucode_jax.execution.executor import Executor
from mucode_jax.execution.limits import Limits


def _parse_line(line: str, lineno: int) -> dict:
    try:
        item = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"line {lineno} is not valid JSON ({e.msg}); write one object per line"
        ) from None
    if not isinstance(item, dict):
        raise ValueError(f"line {lineno} must be a JSON object with 'code' and 'tests'")
    if "tests" not in item:
        raise ValueError(f"line {lineno} has no 'tests'; add a test suite object")
    if "code" in item and item["code"] is not None and not isinstance(item["code"], str):
        raise ValueError(f"line {lineno}: 'code' must be a string (or null for no code)")
    return item


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mucode_jax.execution", description=__doc__)
    parser.add_argument("--input", required=True, help="programs.jsonl ('-' for stdin)")
    parser.add_argument("--output", required=True, help="results.jsonl ('-' for stdout)")
    parser.add_argument("--workers", type=int, default=None, help="parallel workers")
    parser.add_argument("--sandbox", default="auto", choices=("auto", "bwrap", "none"))
    parser.add_argument(
        "--reference-cache",
        default=None,
        help="JSONL file of reference solutions' CPU costs, reused across runs",
    )
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers={args.workers} is invalid; give a positive integer.")
    try:
        src = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")  # noqa: SIM115
    except OSError as e:
        parser.error(f"cannot read --input {args.input!r} ({e.strerror}); check the path.")
    out_dir = os.path.dirname(os.path.abspath(args.output)) if args.output != "-" else "."
    if not os.path.isdir(out_dir) or not os.access(out_dir, os.W_OK):
        parser.error(f"cannot write --output {args.output!r} (no writable directory {out_dir!r}).")
    bad = 0
    try:
        ex = Executor(args.workers, sandbox=args.sandbox, reference_cache=args.reference_cache)
    except ValueError as e:
        parser.error(str(e))
    with src, ex:
        entries: list = []
        for lineno, line in enumerate(src, start=1):
            if not line.strip():
                continue
            try:
                item = _parse_line(line, lineno)
                limits = Limits.from_json(item.get("limits"), ex.limits)
                fut = ex.submit(
                    item.get("code"),
                    item["tests"],
                    limits=limits,
                    trace=bool(item.get("trace", False)),
                    id=item.get("id"),
                )
                entries.append((lineno, item.get("id"), fut))
            except (ValueError, TypeError) as e:
                bad += 1
                err = {
                    "line": lineno,
                    "error": f"line {lineno}: {e}".replace(
                        f"line {lineno}: line {lineno}", f"line {lineno}"
                    ),
                }
                try:
                    err = {"id": json.loads(line).get("id"), **err}
                except (ValueError, AttributeError):
                    pass
                entries.append(err)
        out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")  # noqa: SIM115
        with out:
            for entry in entries:
                if isinstance(entry, dict):
                    record = entry
                else:
                    lineno, item_id, fut = entry
                    try:
                        record = fut.result().to_json()
                    except ValueError as e:  # a test the service could not parse
                        bad += 1
                        record = {"id": item_id, "line": lineno, "error": f"line {lineno}: {e}"}
                out.write(json.dumps(record) + "\n")
    if bad:
        print(
            f"{bad} input line(s) could not be run; their records in --output have an "
            '"error" field saying why.',
            file=sys.stderr,
        )
    return 1 if bad else 0


if __name__ == "__main__":
    status = main()
    for stream in (sys.stdout, sys.stderr):
        if not stream.closed:  # ("--output -" closed stdout after writing it)
            stream.flush()
    # The executor is closed and the output written: finalizing the interpreter (every module
    # the client imported) would only delay the exit.
    os._exit(status)
