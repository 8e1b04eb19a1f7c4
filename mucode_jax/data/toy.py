"""Synthetic function-writing tasks for the built-in CPU demo (``Problem.dataset == "toy"``).

Why this family looks the way it does. The demo trains a Llama of a few million parameters on
2 CPU cores in minutes: SFT warm start on noisy solutions, then μCode expert iteration with a
learned verifier and execution feedback over 3 turns. For that to show anything the tasks must

* be **learnable** by a tiny model: one-line Python functions over small ints, lists and words,
  built from 14 templates whose prompts and solutions are short (about 20–50 tokens each with a
  1–2k-vocabulary BPE) and regular;
* make **execution feedback matter**: every statement leaves exactly one choice open among 2–4
  natural readings ("on the high side of 5": is 5 kept? "shifted by 3": up or down? "join with a
  separator": which one? "from 2 to n": is n included?). Nothing in the prompt tells them apart,
  so even a perfect model succeeds at turn 1 only with probability 1/m (m = number of
  readings, 2–4; about 0.4 on average), while the single public test is chosen so that every
  reading gives a different result on it — the failing test's input, expected value and actual
  value in the feedback identify the intended one, and turn 2 can always fix the code. Binary
  choices can be fixed by "flip after a failure"; separator/bracket/fill choices by copying a
  character from the expected value; the rest (boundaries, rounding) by reading the numbers.
  The public test is therefore *not* shown in the first prompt (`mucode_jax.prompts` renders
  toy prompts without tests; the rebuttal of μCode calls this the POMDP setting);
* give **noisy warm-start data**: `wrong_solutions` mutates the reference into plausible wrong
  programs (another reading of the statement, an off-by-one constant, a flipped operator /
  order / case), each verified to fail at least one test;
* be **plentiful and leak-free**: a few thousand distinct problems, enumerated
  deterministically; the train/test split is a hash of the *statement* (template, function name
  and visible parameters), so a test statement never appears in training under any reading,
  and the split does not depend on the seed.

A problem's ``metadata`` holds ``family``, ``params`` (visible), ``hidden`` (the intended reading),
``choices`` (all readings), ``split`` and ``statement_key``. Tests are in the executor's assert
schema: one public assert, ``num_private`` private asserts; correctness needs both.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from mucode_jax.types import Problem

Params = dict[str, Any]

# Words of lengths 2..7; `_distinct` picks words whose sort keys differ, so ascending and
# descending sorts never tie (a tie would make `sorted(..., reverse=True)` and `[::-1]` differ).
WORDS = (
    "go", "up", "ox", "at", "cat", "dog", "sun", "red", "box", "map", "tree", "bird", "fish",
    "blue", "moon", "leaf", "apple", "river", "stone", "green", "light", "plant", "banana",
    "orange", "purple", "rocket", "yellow", "kitchen", "blanket", "morning", "thunder",
)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Families.
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Family:
    """One template: statement and code as functions of (name, visible params, hidden choice).

    Attributes:
      name: family id.
      func_names: function names the statement may use.
      arg: the function's parameter name ("xs", "s" or "n").
      visible: the statement's parameters and their values.
      hidden: the underspecified choice's values (the readings).
      statement: params (with "name") -> the task text.
      body: params (with "name" and "hidden") -> the function body (indented lines).
      make_input: (rng, params) -> the argument of one test call.
      numeric: visible params that the off-by-one mutation changes by ±1.
      public_input: the public test's input, when it is not drawn like the private ones.
    """

    name: str
    func_names: tuple[str, ...]
    arg: str
    visible: dict[str, tuple[Any, ...]]
    hidden: tuple[Any, ...]
    statement: Callable[[Params], str]
    body: Callable[[Params], str]
    make_input: Callable[[random.Random, Params], Any]
    numeric: tuple[str, ...] = ()
    public_input: Callable[[random.Random, Params], Any] | None = None


def _ints(rng: random.Random, lo: int = 0, hi: int = 15, size: tuple[int, int] = (4, 6)) -> list:
    return [rng.randint(lo, hi) for _ in range(rng.randint(*size))]


def _distinct(rng: random.Random, key: Callable[[str], Any], count: int) -> list[str]:
    words, seen = list(WORDS), set()
    rng.shuffle(words)
    out = []
    for w in words:
        if key(w) not in seen:
            seen.add(key(w))
            out.append(w)
        if len(out) == count:
            break
    return out


def _cap(rng: random.Random, w: str) -> str:
    return w.capitalize() if rng.random() < 0.5 else w


_CMP = {("high", "strict"): ">", ("high", "inclusive"): ">=", ("low", "strict"): "<"}
_CMP[("low", "inclusive")] = "<="
_CASE_EXPR = {"keep": "{}", "upper": "{}.upper()", "lower": "{}.lower()"}
_CASE_TEXT = {"keep": "", "upper": " in upper case", "lower": " in lower case"}
_WORD_KEY_EXPR = {"length": "len", "last letter": "lambda w: w[-1]"}
_WORD_KEY_FN: dict[str, Callable[[str], Any]] = {"length": len, "last letter": lambda w: w[-1]}
_ORDINAL = {1: "1st", 2: "2nd", 3: "3rd", 4: "4th", 5: "5th"}
_TERM_EXPR = {"numbers": "i", "squares": "i * i", "doubles": "2 * i"}


def _ret(expr: str) -> str:
    return f"    return {expr}"


FAMILIES: tuple[_Family, ...] = (
    _Family(
        name="filter_side",
        func_names=("keep_items", "select_items", "filter_nums", "pick_nums"),
        arg="xs",
        visible={"side": ("high", "low"), "k": tuple(range(0, 16))},
        hidden=("strict", "inclusive"),
        statement=lambda p: (
            f"Write {p['name']}(xs): return the numbers in xs on the {p['side']} side of "
            f"{p['k']}, in order."
        ),
        body=lambda p: _ret(f"[x for x in xs if x {_CMP[p['side'], p['hidden']]} {p['k']}]"),
        make_input=lambda rng, p: _ints(rng),
        numeric=("k",),
    ),
    _Family(
        name="count_side",
        func_names=("count_items", "count_nums", "how_many", "tally"),
        arg="xs",
        visible={"side": ("high", "low"), "k": tuple(range(0, 16))},
        hidden=("strict", "inclusive"),
        statement=lambda p: (
            f"Write {p['name']}(xs): count the numbers in xs on the {p['side']} side of {p['k']}."
        ),
        body=lambda p: _ret(f"len([x for x in xs if x {_CMP[p['side'], p['hidden']]} {p['k']}])"),
        make_input=lambda rng, p: _ints(rng),
        numeric=("k",),
    ),
    _Family(
        name="sort_words",
        func_names=("order_words", "sort_words", "rank_words", "arrange"),
        arg="s",
        visible={"key": ("length", "last letter"), "m": (0, 1, 2, 3)},
        hidden=("ascending", "descending"),
        statement=lambda p: (
            f"Write {p['name']}(s): sort the words of s by {p['key']}"
            + (f" and keep the first {p['m']}" if p["m"] else "")
            + ", joined by spaces."
        ),
        body=lambda p: _ret(
            f"' '.join(sorted(s.split(), key={_WORD_KEY_EXPR[p['key']]}"
            + (", reverse=True" if p["hidden"] == "descending" else "")
            + ")"
            + (f"[:{p['m']}]" if p["m"] else "")
            + ")"
        ),
        make_input=lambda rng, p: " ".join(
            _distinct(rng, _WORD_KEY_FN[p["key"]], rng.randint(max(3, p["m"] + 1), 5))
        ),
        numeric=("m",),
    ),
    _Family(
        name="sort_nums",
        func_names=("order_nums", "sort_nums", "rank_nums", "top_nums"),
        arg="xs",
        visible={"key": ("value", "size"), "m": (1, 2, 3, 4)},
        hidden=("ascending", "descending"),
        statement=lambda p: (
            f"Write {p['name']}(xs): sort xs by {p['key']} and return the first {p['m']}."
        ),
        body=lambda p: _ret(
            "sorted(xs"
            + (", key=abs" if p["key"] == "size" else "")
            + (", reverse=True" if p["hidden"] == "descending" else "")
            + f")[:{p['m']}]"
        ),
        # Distinct absolute values, so no ties under either key.
        make_input=lambda rng, p: [
            v * rng.choice((-1, 1)) if p["key"] == "size" else v
            for v in rng.sample(range(1, 20), rng.randint(p["m"] + 2, p["m"] + 4))
        ],
        numeric=("m",),
    ),
    _Family(
        name="affine",
        func_names=("scale", "transform", "adjust", "convert"),
        arg="n",
        visible={"a": tuple(range(2, 10)), "b": tuple(range(1, 13))},
        hidden=("+", "-"),
        statement=lambda p: f"Write {p['name']}(n): return n times {p['a']}, shifted by {p['b']}.",
        body=lambda p: _ret(f"n * {p['a']} {p['hidden']} {p['b']}"),
        make_input=lambda rng, p: rng.randint(0, 12),
        numeric=("a", "b"),
    ),
    _Family(
        name="range_sum",
        func_names=("total", "series", "sum_upto", "accumulate"),
        arg="n",
        visible={"term": ("numbers", "squares", "doubles"), "lo": (0, 1, 2, 3, 4)},
        hidden=("inclusive", "exclusive"),
        statement=lambda p: (
            f"Write {p['name']}(n): return the sum of {_TERM_EXPR[p['term']]} for i from "
            f"{p['lo']} to n."
        ),
        body=lambda p: _ret(
            f"sum({_TERM_EXPR[p['term']]} for i in range({p['lo']}, "
            + ("n + 1" if p["hidden"] == "inclusive" else "n")
            + "))"
        ),
        make_input=lambda rng, p: rng.randint(p["lo"] + 1, p["lo"] + 8),
        numeric=("lo",),
    ),
    _Family(
        name="wrap",
        func_names=("wrap", "enclose", "bracket", "surround"),
        arg="s",
        visible={"times": (1, 2, 3), "case": ("keep", "upper", "lower")},
        hidden=("()", "[]", "{}", "<>"),
        statement=lambda p: (
            f"Write {p['name']}(s): return s{_CASE_TEXT[p['case']]} wrapped in brackets"
            + (f" {p['times']} times." if p["times"] > 1 else ".")
        ),
        body=lambda p: _ret(
            f"{p['hidden'][0]!r} * {p['times']} + {_CASE_EXPR[p['case']].format('s')} + "
            f"{p['hidden'][1]!r} * {p['times']}"
        ),
        make_input=lambda rng, p: _cap(rng, rng.choice(WORDS)),
        numeric=("times",),
    ),
    _Family(
        name="pad",
        func_names=("pad", "fill_to", "widen", "align"),
        arg="s",
        visible={"side": ("left", "right"), "width": tuple(range(4, 12))},
        hidden=("*", ".", "#", "-"),
        statement=lambda p: (
            f"Write {p['name']}(s): pad s on the {p['side']} with a fill character to "
            f"width {p['width']}."
        ),
        body=lambda p: _ret(
            f"s.{'rjust' if p['side'] == 'left' else 'ljust'}({p['width']}, {p['hidden']!r})"
        ),
        make_input=lambda rng, p: rng.choice([w for w in WORDS if len(w) < p["width"]]),
        numeric=("width",),
    ),
    _Family(
        name="index",
        func_names=("get_item", "nth", "element_at", "pick_at"),
        arg="xs",
        visible={"end": ("start", "end"), "i": (1, 2, 3, 4)},
        hidden=("1-based", "0-based"),
        statement=lambda p: (
            f"Write {p['name']}(xs): return item number {p['i']} of xs, counting from the "
            f"{p['end']}."
        ),
        body=lambda p: _ret(
            "xs["
            + {
                ("start", "1-based"): str(p["i"] - 1),
                ("start", "0-based"): str(p["i"]),
                ("end", "1-based"): str(-p["i"]),
                ("end", "0-based"): str(-p["i"] - 1),
            }[p["end"], p["hidden"]]
            + "]"
        ),
        make_input=lambda rng, p: rng.sample(range(0, 30), rng.randint(p["i"] + 3, p["i"] + 5)),
        numeric=("i",),
    ),
    _Family(
        name="repeat",
        func_names=("repeat", "echo", "copies", "duplicate"),
        arg="s",
        visible={"k": (2, 3, 4, 5), "case": ("keep", "upper", "lower")},
        hidden=("-", ",", "+", "|"),
        statement=lambda p: (
            f"Write {p['name']}(s): return s{_CASE_TEXT[p['case']]} repeated {p['k']} times, "
            "with a separator between copies."
        ),
        body=lambda p: _ret(
            f"{p['hidden']!r}.join([{_CASE_EXPR[p['case']].format('s')}] * {p['k']})"
        ),
        make_input=lambda rng, p: _cap(rng, rng.choice(WORDS)),
        numeric=("k",),
    ),
    _Family(
        name="divide",
        func_names=("share", "split_count", "per_group", "ration"),
        arg="n",
        visible={"b": tuple(range(0, 8)), "d": tuple(range(2, 10))},
        hidden=("down", "up"),
        statement=lambda p: (
            f"Write {p['name']}(n): divide "
            + (f"n + {p['b']}" if p["b"] else "n")
            + f" by {p['d']} and round to a whole number."
        ),
        body=lambda p: _ret(
            f"(n + {p['b'] + (p['d'] - 1 if p['hidden'] == 'up' else 0)}) // {p['d']}"
            if p["b"] or p["hidden"] == "up"
            else f"n // {p['d']}"
        ),
        make_input=lambda rng, p: rng.randint(1, 40),
        numeric=("b", "d"),
    ),
    _Family(
        name="every_kth",
        func_names=("mark", "stripe", "every_kth", "highlight"),
        arg="s",
        visible={"k": (2, 3, 4), "action": ("upper", "star")},
        hidden=("first", "kth"),
        statement=lambda p: (
            f"Write {p['name']}(s): "
            + ("capitalize" if p["action"] == "upper" else "replace with '*'")
            + f" every {_ORDINAL[p['k']]} letter of s."
        ),
        body=lambda p: _ret(
            "''.join("
            + ("c.upper()" if p["action"] == "upper" else "'*'")
            + f" if i % {p['k']} == {0 if p['hidden'] == 'first' else p['k'] - 1} else c"
            + " for i, c in enumerate(s))"
        ),
        make_input=lambda rng, p: rng.choice([w for w in WORDS if len(w) > p["k"] + 1]),
        numeric=("k",),
    ),
    _Family(
        name="join_words",
        func_names=("join_words", "link_words", "glue", "connect"),
        arg="s",
        visible={"case": ("keep", "upper"), "order": ("same", "reversed")},
        hidden=("-", "_", "+", ":"),
        statement=lambda p: (
            f"Write {p['name']}(s): join the words of s"
            + (" in reverse order" if p["order"] == "reversed" else "")
            + _CASE_TEXT[p["case"]]
            + " with a separator."
        ),
        body=lambda p: _ret(
            f"{p['hidden']!r}.join({_CASE_EXPR[p['case']].format('s')}.split()"
            + ("[::-1]" if p["order"] == "reversed" else "")
            + ")"
        ),
        make_input=lambda rng, p: " ".join(
            _cap(rng, w) for w in rng.sample(WORDS, rng.randint(2, 3))
        ),
    ),
    _Family(
        name="extreme_index",
        func_names=("where_max", "locate", "find_peak", "position_of"),
        arg="xs",
        visible={"which": ("largest", "smallest")},
        hidden=("first", "last"),
        statement=lambda p: (
            f"Write {p['name']}(xs): return the position of the {p['which']} number in xs."
        ),
        body=lambda p: _ret(
            (
                "xs.index({f}(xs))"
                if p["hidden"] == "first"
                else "len(xs) - 1 - xs[::-1].index({f}(xs))"
            ).format(f="max" if p["which"] == "largest" else "min")
        ),
        make_input=lambda rng, p: _ints(rng, 0, 4, (4, 7)),
    ),
)

FAMILY_BY_NAME = {f.name: f for f in FAMILIES}

# The demo's variant ("shown"): the public test is in the prompt, as on MBPP, so the reading is
# decided by the prompt (x) and a verifier reading (x, y) can learn which programs agree with it;
# each family keeps one function name (nothing to copy but the statement's numbers), and the
# numeric families' grids are wider so the test split holds about 200 statements. Every reading
# of the numeric families is the statement's numbers copied into one template (rounding up is
# `-(-(n + b) // d)`, not `(n + b + d - 1) // d`), so a mistake is the reading or a slip, never
# arithmetic the model would have to do in its head.
VARIANTS = ("hidden", "shown")
_SHOWN_GRIDS: dict[str, dict[str, tuple[Any, ...]]] = {
    "affine": {"a": tuple(range(2, 20)), "b": tuple(range(1, 31))},
    "divide": {"b": tuple(range(0, 21)), "d": tuple(range(2, 13))},
}


def _ceil_div(p: Params) -> str:
    return f"-(-(n + {p['b']}) // {p['d']})" if p["b"] else f"-(-n // {p['d']})"


def _floor_div(p: Params) -> str:
    return f"(n + {p['b']}) // {p['d']}" if p["b"] else f"n // {p['d']}"


_SHOWN_BODIES: dict[str, Callable[[Params], str]] = {
    "divide": lambda p: _ret(_ceil_div(p) if p["hidden"] == "up" else _floor_div(p)),
}
# The public input of `affine` is 0, so its expected value is +b or -b: the reading is visible
# in the prompt (a verifier reading (x, y) can learn it; a generator imitating noisy answers
# still samples the other one). The other numeric families need the arithmetic done to tell.
_SHOWN_PUBLIC: dict[str, Callable[[random.Random, Params], Any]] = {"affine": lambda rng, p: 0}
# Shown-only family: a sum whose upper end is ambiguous ("from lo to n": is n included?).
SERIES = _Family(
    name="series",
    func_names=("series",),
    arg="n",
    visible={"c": tuple(range(2, 13)), "lo": tuple(range(0, 16))},
    hidden=("inclusive", "exclusive"),
    statement=lambda p: (
        f"Write {p['name']}(n): return the sum of i * {p['c']} for i from {p['lo']} to n."
    ),
    body=lambda p: _ret(
        f"sum(i * {p['c']} for i in range({p['lo']}, "
        + ("n + 1" if p["hidden"] == "inclusive" else "n")
        + "))"
    ),
    make_input=lambda rng, p: rng.randint(p["lo"] + 1, p["lo"] + 8),
    numeric=("c", "lo"),
)
SHOWN_FAMILIES: tuple[_Family, ...] = tuple(
    dataclasses.replace(
        f,
        func_names=f.func_names[:1],
        visible={**f.visible, **_SHOWN_GRIDS.get(f.name, {})},
        body=_SHOWN_BODIES.get(f.name, f.body),
        public_input=_SHOWN_PUBLIC.get(f.name),
    )
    for f in FAMILIES
) + (SERIES,)
_BY_VARIANT = {
    "hidden": FAMILY_BY_NAME,
    "shown": {f.name: f for f in SHOWN_FAMILIES},
}


def family_names(variant: str = "hidden") -> tuple[str, ...]:
    """The family names of a variant (``"shown"`` adds ``series``)."""
    return tuple(_check_variant(variant))


def _check_variant(variant: str) -> dict[str, _Family]:
    if variant not in _BY_VARIANT:
        raise ValueError(f"Unknown toy variant {variant!r}; use one of {', '.join(VARIANTS)}.")
    return _BY_VARIANT[variant]


# ---------------------------------------------------------------------------------------------
# Programs and tests.
# ---------------------------------------------------------------------------------------------


def _code(family: _Family, params: Params) -> str:
    return f"def {params['name']}({family.arg}):\n{family.body(params)}\n"


_MISSING = object()


def _call(code: str, name: str, arg: Any) -> Any:
    """Runs one of *our own* template programs (trusted) on ``arg``; exceptions -> _MISSING."""
    env: dict[str, Any] = {}
    try:
        exec(code, env)  # noqa: S102 - template-generated code only, never model output.
        return env[name](arg)
    except Exception:  # noqa: BLE001 - a wrong program may raise anything.
        return _MISSING


def _assert(name: str, arg: Any, expected: Any) -> str:
    return f"assert {name}({arg!r}) == {expected!r}"


def _fails_some(code: str, tests: Sequence[str]) -> bool:
    for test in tests:
        env: dict[str, Any] = {}
        try:
            exec(f"{code}\n{test}\n", env)  # noqa: S102 - template-generated code only.
        except Exception:  # noqa: BLE001
            return True
    return False


def _statement_key(family: _Family, visible: Params) -> str:
    return family.name + "/" + "/".join(f"{k}={v}" for k, v in sorted(visible.items()))


def _split_of(statement_key: str, test_fraction: float) -> str:
    h = int.from_bytes(hashlib.sha256(statement_key.encode()).digest()[:8], "little")
    return "test" if (h % 10_000) < round(test_fraction * 10_000) else "train"


def _enumerate(variant: str = "hidden") -> Iterator[tuple[_Family, Params]]:
    """Every (family, visible params incl. function name, hidden) in a fixed order."""
    for family in _check_variant(variant).values():
        keys = list(family.visible)
        for name in family.func_names:
            for values in itertools.product(*(family.visible[k] for k in keys)):
                visible = {"name": name, **dict(zip(keys, values))}
                for hidden in family.hidden:
                    yield family, {**visible, "hidden": hidden}


def _visible(params: Params) -> Params:
    return {k: v for k, v in params.items() if k != "hidden"}


def _distinct_inputs(
    family: _Family, params: Params, rng: random.Random, count: int, exclude: Sequence[Any]
) -> list[Any]:
    out: list[Any] = []
    seen = {repr(x) for x in exclude}
    for _ in range(200 * count):
        x = family.make_input(rng, params)
        if repr(x) not in seen:
            seen.add(repr(x))
            out.append(x)
            if len(out) == count:
                break
    return out


def _build(
    family: _Family, params: Params, *, seed: int, num_private: int, split: str, variant: str
) -> Problem:
    name = params["name"]
    statement_key = _statement_key(family, _visible(params))
    rng = random.Random(f"toy/{seed}/{statement_key}/{params['hidden']}")
    reference = _code(family, params)
    readings = [_code(family, {**params, "hidden": h}) for h in family.hidden]

    # Public test: one input on which every reading gives a different, valid result.
    public_arg = None
    draw = family.public_input or family.make_input
    for _ in range(500):
        x = draw(rng, params)
        outs = [_call(code, name, x) for code in readings]
        if _MISSING not in outs and len({repr(o) for o in outs}) == len(outs):
            public_arg = x
            break
    if public_arg is None:
        raise RuntimeError(f"No discriminating public input for toy problem {statement_key}.")

    # Private tests: distinct inputs on which every wrong reading fails at least once.
    wrong = [code for h, code in zip(family.hidden, readings) if h != params["hidden"]]
    private_args: list[Any] = []
    for _ in range(200):
        private_args = _distinct_inputs(family, params, rng, num_private, [public_arg])
        expected = [_call(reference, name, x) for x in private_args]
        if len(private_args) == num_private and all(
            any(_call(code, name, x) != e for x, e in zip(private_args, expected)) for code in wrong
        ):
            break
    else:
        raise RuntimeError(f"No discriminating private inputs for toy problem {statement_key}.")

    public_expected = _call(reference, name, public_arg)
    public = [_assert(name, public_arg, public_expected)]
    private = [_assert(name, x, _call(reference, name, x)) for x in private_args]
    prefix = "toy" if variant == "hidden" else f"toy-{variant}"
    return Problem(
        id=f"{prefix}/{statement_key}/hidden={params['hidden']}",
        dataset="toy",
        statement=family.statement(params),
        public_tests={"kind": "assert", "setup": "", "tests": public},
        private_tests={"kind": "assert", "setup": "", "tests": private},
        public_tests_text="\n".join(public),
        entry_point=name,
        reference=reference,
        metadata={
            "family": family.name,
            "params": _visible(params),
            "hidden": params["hidden"],
            "choices": list(family.hidden),
            "split": split,
            "statement_key": statement_key,
            "variant": variant,
            "show_tests": variant == "shown",
            "public_arg": repr(public_arg),
            "public_expected": repr(public_expected),
        },
    )


def num_toy_problems(
    split: str | None = None, *, test_fraction: float = 0.2, variant: str = "hidden"
) -> int:
    """How many distinct problems the variant has (in ``split``, or in all when ``None``)."""
    return sum(
        1
        for f, p in _enumerate(variant)
        if split is None or _split_of(_statement_key(f, _visible(p)), test_fraction) == split
    )


def toy_problems(
    split: str = "train",
    n: int | None = None,
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    num_private: int = 4,
    variant: str = "hidden",
) -> list[Problem]:
    """Toy problems of one split, in a seeded order.

    Args:
      split: ``"train"`` or ``"test"``; the split is a function of the statement alone, so the
        two never share a statement whatever the seed or ``n``.
      n: how many (the first ``n`` of the seeded order); ``None``: all of the split.
      seed: shuffles the order and draws the test inputs. The same seed gives the same problems.
      test_fraction: the share of statements assigned to ``"test"``.
      num_private: private tests per problem.
      variant: ``"hidden"`` (the public test comes back only as feedback; four function names
        per family) or ``"shown"`` (the demo's: the public test is in the prompt, one function
        name per family, wider grids; ``metadata["show_tests"]`` tells the prompt to show it).

    Returns:
      A list of `Problem` with ``dataset="toy"``.

    Raises:
      ValueError: for an unknown split or variant, or ``n`` larger than the split.
    """
    _check_variant(variant)
    if split not in ("train", "test"):
        raise ValueError(f"Unknown toy split {split!r}; use 'train' or 'test'.")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    if num_private < 1:
        raise ValueError(f"num_private must be >= 1, got {num_private}.")
    pool = [
        (f, p)
        for f, p in _enumerate(variant)
        if _split_of(_statement_key(f, _visible(p)), test_fraction) == split
    ]
    if n is not None and not 0 <= n <= len(pool):
        raise ValueError(
            f"Asked for n={n} toy {split} problems but the split has {len(pool)}; "
            "pass a smaller n (or None for all)."
        )
    order_key = f"toy-order/{seed}/{split}" + ("" if variant == "hidden" else f"/{variant}")
    chosen = _balanced_order(pool, random.Random(order_key), paired=variant == "shown")
    return [
        _build(f, p, seed=seed, num_private=num_private, split=split, variant=variant)
        for f, p in chosen[: len(chosen) if n is None else n]
    ]


def _balanced_order(
    pool: list[tuple[_Family, Params]], rng: random.Random, *, paired: bool = False
) -> list[tuple[_Family, Params]]:
    """Shuffles within each family, then deals round-robin, so any prefix is family-balanced.

    The families have from 16 to ~800 problems (their parameter grids differ); without this a
    small demo subset would be mostly `affine` and `divide`. With ``paired`` the unit dealt is
    a statement (all its readings, adjacent), so a prefix holds both readings of most of its
    statements: a model trained on it cannot tell the reading from the statement alone and
    must read the shown test (the "shown" variant's point).
    """
    by_family: dict[str, dict[str, list[tuple[_Family, Params]]]] = {}
    for f, p in pool:
        unit = _statement_key(f, _visible(p)) if paired else repr(sorted(p.items()))
        by_family.setdefault(f.name, {}).setdefault(unit, []).append((f, p))
    queues = []
    for name in sorted(by_family):
        units = list(by_family[name].values())
        rng.shuffle(units)
        queues.append(units)
    out: list[tuple[_Family, Params]] = []
    depth = 0
    while len(out) < len(pool):
        layer = [q[depth] for q in queues if depth < len(q)]
        rng.shuffle(layer)
        for unit in layer:
            out.extend(unit)
        depth += 1
    return out


# ---------------------------------------------------------------------------------------------
# Noisy solutions for the warm start.
# ---------------------------------------------------------------------------------------------


def _family_and_params(problem: Problem) -> tuple[_Family, Params]:
    meta = problem.metadata
    families = _BY_VARIANT.get(meta.get("variant", "hidden"), {})
    if problem.dataset != "toy" or meta.get("family") not in families:
        raise ValueError(
            f"Problem {problem.id!r} is not a toy problem (no known metadata['family']); "
            "noisy solutions exist only for problems from toy_problems()."
        )
    return families[meta["family"]], {**meta["params"], "hidden": meta["hidden"]}


def wrong_solutions(problem: Problem) -> list[tuple[str, str]]:
    """Plausible wrong programs for a toy problem, each failing at least one of its tests.

    Kinds: ``"reading"`` (another reading of the underspecified statement — the mistake the
    feedback can fix), ``"off_by_one"`` (a numeric parameter ±1), ``"flip"`` (another value of
    a visible choice: the other comparison side, sort key, case, order, …). Mutations that
    happen to pass every test (e.g. ``x > 5`` vs ``x >= 6``) are dropped. For the ``"shown"``
    variant also ``"overfit"``: programs that pass the public test shown in the prompt and fail
    the private ones (returning the example's answer; another reading with the example as a
    special case), as models overfit MBPP's shown asserts. Feedback cannot reveal these (the
    public test passes); only a verifier that reads the program against the prompt can.

    Returns:
      ``[(kind, code), ...]`` in a fixed order, without duplicates.
    """
    family, params = _family_and_params(problem)
    tests = [*problem.public_tests["tests"], *problem.private_tests["tests"]]
    candidates: list[tuple[str, Params]] = [
        ("reading", {**params, "hidden": h}) for h in family.hidden if h != params["hidden"]
    ]
    for key in family.numeric:
        for delta in (-1, 1):
            if params[key] + delta >= 0:
                candidates.append(("off_by_one", {**params, key: params[key] + delta}))
    for key, values in family.visible.items():
        if key not in family.numeric:
            candidates += [("flip", {**params, key: v}) for v in values if v != params[key]]
    programs: list[tuple[str, str]] = []
    for kind, p in candidates:
        try:
            programs.append((kind, _code(family, p)))
        except (KeyError, IndexError, ValueError):
            continue
    meta = problem.metadata
    if meta.get("variant") == "shown":
        head = f"def {params['name']}({family.arg}):\n"
        programs.append(("overfit", f"{head}    return {meta['public_expected']}\n"))
        for h in family.hidden:
            if h != params["hidden"]:
                programs.append(
                    (
                        "overfit",
                        f"{head}    if {family.arg} == {meta['public_arg']}:\n"
                        f"        return {meta['public_expected']}\n"
                        f"{family.body({**params, 'hidden': h})}\n",
                    )
                )
    out, seen = [], {problem.reference}
    for kind, code in programs:
        if code not in seen and _fails_some(code, tests):
            seen.add(code)
            out.append((kind, code))
    return out


def noisy_solution(
    problem: Problem,
    rng: random.Random,
    p_correct: float = 0.5,
    kind_weights: dict[str, float] | None = None,
) -> tuple[str, bool, str]:
    """One warm-start program: the reference with probability ``p_correct``, else a wrong one.

    Args:
      problem: a toy problem.
      rng: the caller's `random.Random` (so data generation stays reproducible).
      p_correct: probability of returning the reference.
      kind_weights: how often each `wrong_solutions` kind is drawn (``{"reading": 2,
        "overfit": 1}``; kinds missing from the dict, or absent for this problem, are never
        drawn unless nothing else is left). ``None``: every wrong program equally likely.

    Returns:
      ``(code, is_correct, kind)`` with ``kind`` ``"reference"`` or a `wrong_solutions` kind.

    Raises:
      ValueError: for a negative weight.
    """
    _family_and_params(problem)
    wrong = wrong_solutions(problem)
    if not wrong or rng.random() < p_correct:
        return problem.reference, True, "reference"
    if kind_weights:
        if any(w < 0 for w in kind_weights.values()):
            raise ValueError(f"kind_weights must be >= 0, got {dict(kind_weights)}.")
        kinds = sorted({k for k, _ in wrong if kind_weights.get(k, 0) > 0})
        if kinds:
            kind = rng.choices(kinds, weights=[kind_weights[k] for k in kinds])[0]
            wrong = [w for w in wrong if w[0] == kind]
    kind, code = wrong[rng.randrange(len(wrong))]
    return code, False, kind


# ---------------------------------------------------------------------------------------------
# Tokenizer corpus.
# ---------------------------------------------------------------------------------------------

_FEEDBACK_PHRASES = (
    "Feedback: Code passed all tests",
    "Your code failed the following tests:",
    "Expected output but got",
    "expected got input failed passed error",
    "Traceback (most recent call last):",
    "AssertionError NameError TypeError ValueError IndexError ZeroDivisionError SyntaxError",
    "Give it another try.",
    "The code timed out. The code ran out of memory. No code was found in your answer.",
    "user assistant system",
    "Feedback: 1 of 1 tests failed:\nTest 0: assert\n  Expected: 1\n  Got: 2\n  Error: ",
    "Feedback: 1 of 1 tests failed:\nTest 0: assert\n  Expected: 1\n  Got: None\n  Error: ",
)


def toy_corpus(*, seed: int = 0, n: int | None = None, variant: str = "hidden") -> list[str]:
    """Documents to train the demo's tokenizer on: toy prompts, code, tests and feedback words.

    Built from the *train* split only, plus the official prompt wordings and common feedback
    phrases so the tokenizer also encodes MBPP/CodeContests prompts compactly. Deterministic.

    Args:
      seed: toy problem seed.
      n: number of train problems to include (``None``: all).
      variant: the toy variant whose problems are included (`toy_problems`).

    Returns:
      A list of strings for `mucode_jax.data.tokenizer.build_tokenizer`.
    """
    from mucode_jax import prompts  # Local: prompts is a higher layer than data.

    docs = [
        prompts.FUNCTION_PROMPT,
        prompts.CODECONTESTS_PROMPT,
        prompts.RLEF_FORMAT_REMINDER,
        *_FEEDBACK_PHRASES,
        *prompts.REASONING_PROMPTS.values(),
        *(v for v in prompts.INSTRUCTION_PROMPTS.values() if v),
        *(v for v in prompts.COT_RETRY_SUFFIXES.values() if v),
    ]
    for problem in toy_problems("train", n, seed=seed, variant=variant):
        docs.append(prompts.first_turn_prompt(problem))
        docs.append(f"```python\n{problem.reference}```")
        docs.extend(code for _, code in wrong_solutions(problem)[:2])
        docs.extend(problem.public_tests["tests"] + problem.private_tests["tests"])
    return docs


VOCAB_FILE = "toy_vocab.json"  # beside this module: toy_vocabulary(1024), frozen


def demo_vocabulary(size: int = 1024) -> list[str]:
    """The demo tokenizer's words: the shipped `VOCAB_FILE` at its size, else `toy_vocabulary`.

    The shipped file is `toy_vocabulary(1024)` written once (a test checks that they still
    agree); reading it costs nothing and cannot change with any installed package.
    """
    import json
    from pathlib import Path

    path = Path(__file__).with_name(VOCAB_FILE)
    if path.is_file():
        shipped = json.loads(path.read_text())
        if shipped["size"] == size:
            return list(shipped["words"])
    return toy_vocabulary(size)


def toy_vocabulary(size: int = 1024, *, seed: int = 0) -> list[str]:
    """The demo tokenizer's words: role names and feedback words, then the most frequent
    pre-tokens of `toy_corpus` (both variants).

    Counted here in plain Python (ties broken by the word itself), so the vocabulary depends on
    this package alone, never on the `tokenizers` release (see
    `mucode_jax.data.tokenizer.fixed_tokenizer`). Every digit group 0..999 that occurs is a
    candidate like any other word.

    Args:
      size: the whole vocabulary's size (special tokens and 256 byte symbols included).
      seed: toy problem seed of the corpus.

    Returns:
      Byte-level words for `fixed_tokenizer`, most frequent first.

    Raises:
      ValueError: when ``size`` leaves no room for words.
    """
    from collections import Counter

    from mucode_jax.data import tokenizer as tk

    room = size - len(tk.SPECIAL_TOKENS) - 256
    if room < 1:
        raise ValueError(f"size={size} leaves no room for words; use at least 512.")
    alphabet = set(tk.pre_tokenizers.ByteLevel.alphabet())
    # The chat template's role names and the feedback's words come first whatever their count.
    core: list[str] = []
    for phrase in ("user", "assistant", "system", *_FEEDBACK_PHRASES):
        for w in tk.pre_tokens(phrase):
            if w not in alphabet and w not in core:
                core.append(w)
    counts: Counter[str] = Counter()
    for doc in toy_corpus(seed=seed) + toy_corpus(seed=seed, variant="shown"):
        counts.update(tk.pre_tokens(doc))
    ranked = sorted(
        (w for w, c in counts.items() if c >= 2 and w not in alphabet and w not in core),
        key=lambda w: (-counts[w], w),
    )
    return (core + ranked)[:room]
