"""Pure-Python pieces of the executor: serializer, assert splitting, comparisons, limits, feedback."""

from __future__ import annotations

import collections
import decimal
import fractions
import json
import re

import pytest

from mucode_jax.execution import feedback, serial, suites
from mucode_jax.execution.compare import outputs_match, stdout_matches
from mucode_jax.execution.limits import Limits
from mucode_jax.execution.results import ExecResult, TestResult

# -- serializer ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(2**80),
        1.5,
        float("inf"),
        "héllo",
        b"\x00\xff",
        bytearray(b"ab"),
        [1, [2, (3, {4})]],
        (1,),
        frozenset({1, 2}),
        {"a": 1, (1, 2): [3]},
        complex(1, -2),
        collections.OrderedDict(a=1),
        collections.Counter("aab"),
        collections.deque([1, 2]),
        decimal.Decimal("1.10"),
        fractions.Fraction(3, 4),
    ],
)
def test_serial_round_trip_keeps_type_and_value(value):
    back = serial.decode(serial.encode(value))
    assert back == value
    assert type(back) is type(value)


def test_serial_rigged_subclasses_become_opaque_and_unequal():
    class Always(int):
        def __eq__(self, other):
            return True

        __hash__ = int.__hash__

    class Liar(str):
        def __eq__(self, other):
            return True

    for rigged in (Always(3), Liar("x"), type("Any", (), {"__eq__": lambda s, o: True})()):
        back = serial.decode(serial.encode(rigged))
        assert isinstance(back, serial.Opaque)
        assert back != 3 and back != "x" and back != back.__class__("x")


def test_serial_match_objects_compare_by_text_and_span():
    a = serial.decode(serial.encode(re.match("ab", "abc")))
    b = serial.decode(serial.encode(re.match("ab", "abd")))
    assert a == b and bool(a) and a != serial.decode(serial.encode(re.match("a", "abc")))


@pytest.mark.parametrize(
    "text",
    [
        '{"t": 1}',
        '{"zz": []}',
        '{"d": [[[1], 2]]}',
        '{"I": "12"}',
        '{"b": "!!"}',
        '{"t": [1], "s": [2]}',
        "[" * 5000 + "]" * 5000,
        "not json",
    ],
)
def test_serial_decode_rejects_malformed_data(text):
    with pytest.raises(serial.DecodeError):
        serial.decode(text)


def test_serial_limits_depth():
    deep: list = []
    for _ in range(serial.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(serial.EncodeError):
        serial.encode(deep)


def test_serial_numpy_scalars_report_their_python_value():
    np = pytest.importorskip("numpy")
    # What an official harness sees: np.int64(2) == 2 holds and np.bool_(False) is falsy.
    for value, plain in [
        (np.int64(2), 2),
        (np.float64(0.5), 0.5),
        (np.bool_(False), False),
        (np.str_("ab"), "ab"),
        (np.array(7), 7),
        ([np.int32(1), (np.float32(0.25),)], [1, (0.25,)]),
    ]:
        back = serial.decode(serial.encode(value))
        assert back == plain and type(back) is type(plain), (value, back)
    assert isinstance(serial.decode(serial.encode(np.array([1, 2]))), serial.Opaque)

    class Fake:  # a program's object that claims to be numpy's
        __module__ = "numpy"
        ndim = 0

        def item(self):
            return Fake()

    assert isinstance(serial.decode(serial.encode(Fake())), serial.Opaque)


def test_serial_decode_rejects_keys_built_to_collide():
    # Ints equal modulo 2**61 - 1 share a hash: 20,000 of them would take seconds to put in a
    # set (quadratic), and a 64 MB record could hold a million.
    colliding = [{"I": hex(k * (2**61 - 1))} for k in range(1, 20_000)]
    for text in (
        json.dumps({"s": colliding}),
        json.dumps({"fs": colliding}),
        json.dumps({"d": [[k, 0] for k in colliding]}),
        json.dumps({"ct": [[k, 1] for k in colliding]}),
    ):
        with pytest.raises(serial.DecodeError, match="share a hash"):
            serial.decode(text)
    ordinary = set(range(50_000)) | {2**70 + k for k in range(100)}
    assert serial.decode(serial.encode(ordinary)) == ordinary


def test_serial_decode_bounds_integer_sizes():
    big = 1 << (4 * serial.MAX_INT_HEX - 1)
    assert serial.decode(serial.encode(big)) == big
    with pytest.raises(serial.DecodeError, match="hex digits"):
        serial.decode(serial.encode(big << 8))
    huge = fractions.Fraction(3**20_000, 2**50_000 + 1)
    with pytest.raises(serial.DecodeError, match="hex digits"):
        serial.decode(serial.encode(huge))
    ok = fractions.Fraction(3**100, 2**200 + 1)
    assert serial.decode(serial.encode(ok)) == ok


# -- assert splitting ---------------------------------------------------------------------------


def test_split_sends_only_the_candidate_side_to_the_child():
    s = suites.split_assert("assert f(1, [2]) == [3, 4]")
    assert s.holes == ("f(1, [2])",)
    assert s.judge([[3, 4]]) == (True, None)
    assert s.judge([[3]])[0] is False
    assert (s.shown_input, s.shown_expected) == ("f(1, [2])", "[3, 4]")


@pytest.mark.parametrize(
    "test, holes, good, bad",
    [
        ("assert math.isclose(f(10), 4188.79, rel_tol=0.001)", ("f(10)",), [4188.8], [4000.0]),
        ("assert set(f((3, 4), (4, 5))) == set((4,))", ("f((3, 4), (4, 5))",), [(4,)], [(4, 3)]),
        ("assert not f('ab')", ("f('ab')",), [None], [1]),
        ("assert f('annie')", ("f('annie')",), [True], [0]),
        ("assert f(x) is True", ("f(x)",), [True], [1]),
        ("assert sorted(f(1)) == [1, 2]", ("f(1)",), [[2, 1]], [[1]]),
        ("assert f(1)[0] == 'a'", ("f(1)",), [["a"]], [["b"]]),
        ("assert abs(f(2) - 1.5) < 1e-6", ("f(2)",), [1.5], [1.6]),
        ("assert f(2) == sys.getsizeof((1, 2))", ("f(2)",), [56], [1]),
    ],
)
def test_split_common_shapes(test, holes, good, bad):
    s = suites.split_assert(test)
    assert s.holes == holes
    assert s.judge(good)[0] is True
    assert s.judge(bad)[0] is False


def test_split_builtin_named_entry_point_is_evaluated_in_the_child():
    # MBPP/126 defines `sum`; elsewhere a program-defined `set` must not touch the trusted side.
    assert suites.split_assert("assert sum(10, 15) == 6", "sum").holes == ("sum(10, 15)",)
    assert suites.split_assert("assert set(f(1)) == set([1])", "f").holes == ("f(1)",)


def test_split_rejects_non_asserts():
    for bad in ("x = 1", "assert f(1) == 2\nassert f(2) == 3", "assert (", ""):
        with pytest.raises(ValueError):
            suites.split_assert(bad)


# -- suites and limits --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "suite, words",
    [
        ({"kind": "magic"}, "unknown"),
        ({"kind": "assert", "tests": []}, "non-empty"),
        ({"kind": "assert", "tests": ["print(1)"]}, "single assert"),
        ({"kind": "stdio", "cases": [{"input": "1"}]}, "cases"),
        ({"kind": "function", "entry_point": "f", "inputs": [[1]]}, "reference"),
        ({"kind": "function", "entry_point": "1f", "inputs": [[1]], "outputs": [1]}, "entry_point"),
        (
            {"kind": "check", "entry_point": "f", "check": "def nope(): pass", "reference": ""},
            "check",
        ),
        ([], "object"),
    ],
)
def test_validate_suite_errors_name_the_fix(suite, words):
    with pytest.raises(ValueError, match=words):
        suites.validate_suite(suite)


def test_limits_validation_and_reference_rule():
    with pytest.raises(ValueError, match="cpu_seconds"):
        Limits(cpu_seconds=-1)
    with pytest.raises(ValueError, match="memory_mb"):
        Limits.from_json({"memory_mb": 1.5})
    with pytest.raises(ValueError, match="Unknown limit"):
        Limits.from_json({"cpu": 1})
    base = Limits(cpu_seconds=2.0)
    assert base.with_reference(0.1).cpu_seconds == 2.0  # max(base, 4 x ref)
    assert base.with_reference(1.0).cpu_seconds == 4.0
    assert Limits(cpu_seconds=1).wall == 5.0


# -- comparisons --------------------------------------------------------------------------------


def test_stdout_tokens_and_float_tolerance():
    assert stdout_matches("1 2\n3 \n", "1 2 3")
    assert stdout_matches("0.50000001", "0.5")
    assert stdout_matches("1.0000000000", "1")
    assert not stdout_matches("1000000001", "1000000000")  # integers are exact
    assert not stdout_matches("0.51", "0.5")
    assert not stdout_matches("YES", "yes")
    assert not stdout_matches("1 2", "1 2 3")


def test_outputs_match_evalplus_rules():
    assert outputs_match(0.1 + 0.2, 0.3)  # floats get atol 1e-6
    assert outputs_match([1.0, 2.0000001], [1.0, 2.0], atol=1e-4)
    assert not outputs_match((1.0, 2.0), [1.0, 2.0], atol=1e-4)  # types must match
    assert outputs_match((4, 3), (3, 4), compare="set")
    assert outputs_match(True, "a match", compare="not_none")
    assert not outputs_match(False, "a match", compare="not_none")
    assert not outputs_match(1, serial.ExpectedError("ValueError"))


# -- results and feedback -----------------------------------------------------------------------


def _result() -> ExecResult:
    tests = (
        TestResult(0, "passed", input="assert f(1) == 1", expected="1", got="1"),
        TestResult(1, "wrong_answer", input="assert f(2) == 4", expected="4", got="3"),
        TestResult(
            2,
            "runtime_error",
            input="assert f(0) == 0",
            expected="0",
            error="ZeroDivisionError: division by zero",
            traceback='Traceback (most recent call last):\n  File "<solution>", line 2, in f\nZeroDivisionError: division by zero',
            trace="call f(x=0)\nline 2 in f: x=0",
        ),
    )
    return ExecResult(verdict="wrong_answer", tests=tests)


def test_results_json_round_trip():
    r = _result()
    assert ExecResult.from_json(json.loads(json.dumps(r.to_json()))) == r
    assert r.num_passed == 1 and [t.index for t in r.failed_tests] == [1, 2]


def test_feedback_granularities_and_templates():
    r = _result()
    assert feedback.binary(r) == "Code failed the tests"
    failed = feedback.failed(r)
    assert "assert f(2) == 4" in failed and "Got: 3" in failed and "ZeroDivisionError" in failed
    assert "assert f(1) == 1" not in failed
    assert "assert f(1) == 1 -> passed" in feedback.failed_and_passed(r)
    assert "x=0" in feedback.trace(r) and "x=0" not in failed
    assert feedback.mucode(r) == "assert f(2) == 4\nAssertionError (the code returned 3)"
    rlef = feedback.rlef(r)
    assert rlef.startswith("Your code failed the following tests:")
    assert "Expected output `4` but got `3`" in rlef
    ok = ExecResult(verdict="passed", tests=(r.tests[0],))
    assert feedback.mucode(ok) == "Code passed all tests" == feedback.render(ok, "trace")
    with pytest.raises(ValueError, match="granularity"):
        feedback.render(r, "verbose")


def test_feedback_truncation_to_char_and_token_budgets():
    text = "x" * 1000 + "TAIL"
    cut = feedback.truncate(text, 200)
    assert len(cut) <= 200 and cut.endswith("TAIL") and "truncated" in cut
    count = lambda s: len(s.split())  # a stand-in tokenizer
    words = " ".join(str(i) for i in range(500))
    assert count(feedback.truncate_tokens(words, 50, count)) <= 50
    assert feedback.truncate_tokens("short", 50, count) == "short"
