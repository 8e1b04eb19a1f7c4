"""The code that runs inside the sandboxed child, after the worker has forked and locked it down.

Nothing here is trusted by the service. The child loads the program, evaluates each test's
*holes* (assert suites) or calls the entry point (function/check suites) or runs the program on
stdin (stdio suites), and writes one JSON record per line to the result fd (3):

* ``{"loaded": 1}`` after setup + program ran; ``{"syntax": err}``; ``{"load_err": err}``;
* ``{"i": k, "v": [value, ...]}`` — test k's raw values, in `serial`'s tagged encoding;
* ``{"i": k, "x": err}`` — test k raised; ``{"trace": [...]}`` — an LDB-style trace;
* ``{"rec": {"a": args, "k": kwargs, "v"|"x": ...}}`` — one recorded call (reference runs);
* ``{"done": 1}`` (stdio: ``{"done": 1, "exit": code}``).

The program can write to fd 3 too, or patch anything in this module: that only changes what
*it* reports, never what it is compared against (the expected values are not in this process),
and the service rejects duplicated or missing test records.
"""

from __future__ import annotations

# Made once in the worker rather than again in every forked child: compile() creates the AST node
# types (~100 heap types, the ``_ast`` module's state) on its first call in a process (~110 page
# faults, 0.5-1 ms of CPU per run), and traceback imports ``ast`` to format an error (~1 ms more).
import ast  # noqa: F401
import builtins
import io
import json
import linecache
import os
import reprlib
import sys
import traceback

from mucode_jax.execution import serial

RESULT_FD = 3
SOLUTION = "<solution>"
EXIT_MEMORY = 75  # a MemoryError escaped the harness itself
EXIT_HARNESS = 76  # the harness broke (typically: the program broke it)

_write_fd = os.write


def _json_encoder():
    """One C encoder, made once in the worker (``json.dumps`` builds a new one per call, and in
    a forked child every object that builds touches is a page to copy). No circular check: the
    records hold only what `serial.to_jsonable` made, fresh and depth-bounded."""
    from json import encoder

    if encoder.c_make_encoder is None:
        return json.JSONEncoder(separators=(",", ":"), allow_nan=True).encode
    enc = encoder.c_make_encoder(
        None,
        json.JSONEncoder().default,
        encoder.encode_basestring_ascii,
        None,
        ":",
        ",",
        False,
        False,
        True,
    )
    join = "".join
    return lambda record: join(enc(record, 0))


_dumps = _json_encoder()
LOADED = b'{"loaded":1}\n'
DONE = b'{"done":1}\n'


def _write(data: bytes) -> None:
    n = _write_fd(RESULT_FD, data)
    if n < len(data):
        view = memoryview(data)[n:]
        while view:
            view = view[_write_fd(RESULT_FD, view) :]


def _emit(record: dict) -> None:
    _write((_dumps(record) + "\n").encode())


def _error(exc: BaseException) -> dict:
    """Exception type, message, and a traceback trimmed to the program's own frames."""
    try:
        frames = [
            f
            for f in traceback.extract_tb(exc.__traceback__)
            if f.filename == SOLUTION or f.filename.startswith("<test")
        ]
        lines = ["Traceback (most recent call last):\n"] if frames else []
        lines += traceback.format_list(frames[-12:])
        lines += traceback.format_exception_only(type(exc), exc)
        tb = "".join(lines)
        msg = str(exc)
        line = next((f.lineno for f in reversed(frames) if f.filename == SOLUTION), None)
        if isinstance(exc, SyntaxError) and exc.filename == SOLUTION:
            line = exc.lineno
        return {"type": type(exc).__name__, "msg": msg[:2000], "tb": tb[-6000:], "line": line}
    except Exception:  # noqa: BLE001 - hostile __str__ etc.
        return {"type": "Exception", "msg": "(unprintable exception)", "tb": "", "line": None}


def _value_record(i: int, values: list) -> dict:
    try:
        return {"i": i, "v": [serial.to_jsonable(v) for v in values]}
    except serial.EncodeError as e:
        return {"i": i, "x": {"type": "ResultTooLarge", "msg": str(e), "tb": "", "line": None}}


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - the program closed or replaced it
            pass


# ---------------------------------------------------------------------------------------------
# LDB-style tracing of one test.
# ---------------------------------------------------------------------------------------------

_repr = reprlib.Repr()
_repr.maxstring = 40
_repr.maxother = 40
_repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxdict = 6


class _Tracer:
    """Line events in the program's own frames, with the local variables after each line."""

    def __init__(self, head: int = 40, tail: int = 20):
        self.events: list[str] = []
        self.head, self.tail = head, tail
        self.dropped = 0

    def _add(self, text: str) -> None:
        self.events.append(text)
        if len(self.events) > self.head + self.tail:
            del self.events[self.head]
            self.dropped += 1

    @staticmethod
    def _locals(frame) -> str:
        parts = []
        for k, v in list(frame.f_locals.items())[:8]:
            if k.startswith("__"):
                continue
            try:
                parts.append(f"{k}={_repr.repr(v)}")
            except Exception:  # noqa: BLE001
                parts.append(f"{k}=?")
        return ", ".join(parts)

    def __call__(self, frame, event, arg):
        if frame.f_code.co_filename != SOLUTION:
            return None
        name = frame.f_code.co_name
        if event == "call":
            self._add(f"call {name}({self._locals(frame)})")
        elif event == "line":
            self._add(f"line {frame.f_lineno} in {name}: {self._locals(frame)}")
        elif event == "return":
            self._add(f"return from {name}: {_repr.repr(arg)}")
        elif event == "exception":
            self._add(f"exception in {name} at line {frame.f_lineno}: {arg[0].__name__}")
        return self

    def record(self) -> dict:
        events = list(self.events)
        if self.dropped:
            events.insert(self.head, f"... {self.dropped} events omitted ...")
        return {"trace": events}


# ---------------------------------------------------------------------------------------------
# Modes.
# ---------------------------------------------------------------------------------------------


def _source(spec: dict) -> str:
    """The program as it runs: the suite's preamble (e.g. the official μCode imports), then the
    program, compiled as one source so that line numbers count the preamble's lines too."""
    return spec.get("preamble", "") + spec["code"]


def _load(spec: dict, main: bool) -> dict | None:
    """Run setup + program in a fresh namespace; the namespace, or None after reporting.

    ``main``, or a spec with ``script`` set, runs the program as a script (``__name__ ==
    "__main__"``, so its ``if __name__ == "__main__":`` block runs too)."""
    code = _source(spec)
    main = main or bool(spec.get("script"))
    linecache.cache[SOLUTION] = (len(code), None, code.splitlines(True), SOLUTION)
    try:
        compiled = compile(code, SOLUTION, "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        _emit({"syntax": _error(e)})
        return None
    g = {"__name__": "__main__" if main else "solution", "__builtins__": builtins}
    try:
        exec(compiled, g)  # noqa: S102
        if spec.get("setup"):  # after the program: MBPP's setup builds objects of its classes
            exec(compile(spec["setup"], "<setup>", "exec"), g)  # noqa: S102
    except BaseException as e:  # noqa: BLE001 - SystemExit included: an early exit fails
        _emit({"load_err": _error(e)})
        return None
    _write(LOADED)
    return g


def _run_tests(spec: dict, g: dict, thunks) -> None:
    trace_index = spec.get("trace", -1)
    for i in range(spec.get("start", 0), len(thunks)):
        tracer = _Tracer() if i == trace_index else None
        if tracer is not None:
            sys.settrace(tracer)
        try:
            record = _value_record(i, thunks[i]())
        except BaseException as e:  # noqa: BLE001
            record = {"i": i, "x": _error(e)}
        finally:
            if tracer is not None:
                sys.settrace(None)
        _emit(record)
        if tracer is not None:
            _emit(tracer.record())
            break


def run_assert(spec: dict) -> None:
    compiled = [
        [compile(src, f"<test {i}>", "eval") for src in holes]
        for i, holes in enumerate(spec["holes"])
    ]
    g = _load(spec, main=False)
    if g is None:
        return

    def thunk(codes):
        return lambda: [eval(c, g) for c in codes]  # noqa: S307

    _run_tests(spec, g, [thunk(c) for c in compiled])


def _decode_args(spec: dict, raw):
    if spec.get("args_format") == "tagged":
        args, kwargs = serial.from_jsonable(raw)
        return args, kwargs
    return json.loads(raw) if isinstance(raw, str) else raw, {}


def run_calls(spec: dict) -> None:
    calls = spec["calls"]
    entry = spec["entry_point"]
    g = _load(spec, main=False)
    if g is None:
        return

    def thunk(raw):
        def call():
            args, kwargs = _decode_args(spec, raw)  # fresh copies: the program may mutate them
            if entry not in g:
                raise NameError(f"name {entry!r} is not defined")
            return [g[entry](*args, **kwargs)]

        return call

    _run_tests(spec, g, [thunk(raw) for raw in calls])


def run_record(spec: dict) -> None:
    """Reference runs of 'check' suites: record every call of `candidate` inside check()."""
    g = _load(spec, main=False)
    if g is None:
        return
    entry = g[spec["entry_point"]]

    def candidate(*args, **kwargs):
        rec = {"a": serial.to_jsonable([list(args), kwargs])}
        try:
            out = entry(*args, **kwargs)
        except BaseException as e:
            rec["x"] = type(e).__name__
            _emit({"rec": rec})
            raise
        rec["v"] = serial.to_jsonable(out)
        _emit({"rec": rec})
        return out

    try:
        exec(compile(spec["check"], "<check>", "exec"), g)  # noqa: S102
        g["check"](candidate)
    except BaseException as e:  # noqa: BLE001
        _emit({"check_err": _error(e)})


def run_stdio(spec: dict) -> None:
    tracer = _Tracer() if spec.get("trace", -1) >= 0 else None
    code = _source(spec)
    linecache.cache[SOLUTION] = (len(code), None, code.splitlines(True), SOLUTION)
    try:
        compiled = compile(code, SOLUTION, "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        _emit({"syntax": _error(e)})
        return
    g = {"__name__": "__main__", "__builtins__": builtins}
    status = 0
    if tracer is not None:
        sys.settrace(tracer)
    try:
        exec(compiled, g)  # noqa: S102
    except SystemExit as e:
        code_ = e.code
        status = 0 if code_ is None else code_ if isinstance(code_, int) else 1
        if status:
            _emit({"x": _error(e)})
    except BaseException as e:  # noqa: BLE001
        _flush_std()
        _emit({"x": _error(e)})
        status = 1
    finally:
        sys.settrace(None)
    _flush_std()
    if tracer is not None:
        _emit(tracer.record())
    _emit({"done": 1, "exit": status})


MODES = {"assert": run_assert, "calls": run_calls, "record": run_record, "stdio": run_stdio}


# The child's text streams on fds 0-2, made once in the worker (which never uses them, so their
# buffers are empty at every fork): creating them after each fork costs more than the fork.
def _stream(fd: int, mode: str, name: str, **kw) -> io.TextIOWrapper:
    raw = io.FileIO(fd, mode, closefd=False)
    raw.name = name
    buffered = io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
    text = io.TextIOWrapper(buffered, encoding="utf-8", errors="surrogateescape", **kw)
    text.mode = mode  # as open() sets it; some programs read sys.stdout.mode
    return text


_STREAMS = (
    _stream(0, "r", "<stdin>"),
    _stream(1, "w", "<stdout>"),
    _stream(2, "w", "<stderr>", line_buffering=True),
)


_replaced: tuple = ()
# A traceback through the harness's own frames reads this file's lines (they are dropped from what
# is reported, but `traceback` looks them up first): cached here once, instead of read from disk
# and split again in every child that formats an error.
linecache.getlines(__file__)


def child_main(spec: dict) -> None:
    """Entry point in the forked child; never returns."""
    global _replaced
    status = 0
    try:
        # Keep the worker's own stream objects alive: dropping them would run their finalizers
        # here, and every page those touch is copied in the forked child (~40 page faults).
        _replaced = (
            sys.stdin,
            sys.stdout,
            sys.stderr,
            sys.__stdin__,
            sys.__stdout__,
            sys.__stderr__,
        )
        sys.stdin, sys.stdout, sys.stderr = _STREAMS
        sys.__stdin__, sys.__stdout__, sys.__stderr__ = _STREAMS
        MODES[spec["mode"]](spec)
        if spec["mode"] != "stdio":
            _flush_std()
            _write(DONE)
    except MemoryError:
        status = EXIT_MEMORY
    except BaseException:  # noqa: BLE001
        status = EXIT_HARNESS
    os._exit(status)
