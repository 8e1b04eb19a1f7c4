"""Tests for the synthetic toy task family (plain `exec` here; the real executor is separate)."""

import collections
import random

import pytest

from mucode_jax.data import toy
from mucode_jax.types import Problem


@pytest.fixture(scope="module")
def train():
    return toy.toy_problems("train")


@pytest.fixture(scope="module")
def test_split():
    return toy.toy_problems("test")


def _passes(code, tests):
    env = {}
    try:
        exec(f"{code}\n" + "\n".join(tests) + "\n", env)
    except Exception:
        return False
    return True


def _passes_each(code, tests):
    return [_passes(code, [t]) for t in tests]


def test_sizes_ids_and_schema(train, test_split):
    assert len(train) >= 2000 and len(test_split) >= 400
    assert len(train) + len(test_split) == toy.num_toy_problems()
    ids = [p.id for p in train + test_split]
    assert len(set(ids)) == len(ids)
    for p in train[:200] + test_split[:200]:
        assert p.dataset == "toy" and p.id.startswith("toy/")
        assert p.public_tests["kind"] == "assert" and p.public_tests["setup"] == ""
        assert len(p.public_tests["tests"]) == 1
        assert len(p.private_tests["tests"]) == 4
        assert p.public_tests_text == p.public_tests["tests"][0]
        assert p.reference.startswith(f"def {p.entry_point}(")
        assert p.entry_point in p.statement
        assert p.metadata["hidden"] in p.metadata["choices"]
        assert 2 <= len(p.metadata["choices"]) <= 4
        assert len(p.statement) < 120 and len(p.reference) < 100


def test_every_reference_passes_its_own_tests(train, test_split):
    for p in train + test_split:
        tests = p.public_tests["tests"] + p.private_tests["tests"]
        assert _passes(p.reference, tests), p.id


def test_wrong_solutions_fail_and_other_readings_fail_the_public_test(train, test_split):
    kinds = collections.Counter()
    for p in train[:400] + test_split[:200]:
        wrong = toy.wrong_solutions(p)
        assert wrong, p.id
        public = p.public_tests["tests"]
        tests = public + p.private_tests["tests"]
        for kind, code in wrong:
            kinds[kind] += 1
            assert code != p.reference
            assert not _passes(code, tests), (p.id, kind, code)
        readings = [code for kind, code in wrong if kind == "reading"]
        # Every other reading of the statement fails the public test: feedback can reveal it.
        assert len(readings) == len(p.metadata["choices"]) - 1, p.id
        assert all(not _passes(code, public) for code in readings), p.id
        # ... and the private tests also catch it (correctness does not rest on one test).
        assert all(not all(_passes_each(code, p.private_tests["tests"])) for code in readings)
    assert set(kinds) == {"reading", "off_by_one", "flip"}


def test_public_test_tells_the_readings_apart(test_split):
    # On the public input every reading produces a different value, so "expected X, got Y"
    # identifies the intended reading.
    for p in test_split[:300]:
        call = p.public_tests["tests"][0].removeprefix("assert ").split(" == ")[0]
        outs = []
        for code in [p.reference] + [c for k, c in toy.wrong_solutions(p) if k == "reading"]:
            env = {}
            exec(code, env)
            outs.append(repr(eval(call, env)))
        assert len(set(outs)) == len(outs), p.id


def test_statement_does_not_reveal_the_reading(train):
    by_key = collections.defaultdict(set)
    hidden = collections.defaultdict(set)
    for p in train:
        by_key[p.metadata["statement_key"]].add(p.statement)
        hidden[p.metadata["statement_key"]].add(p.metadata["hidden"])
    assert all(len(s) == 1 for s in by_key.values())  # same text for every reading
    assert all(len(h) >= 2 for h in hidden.values())
    # An oracle that guesses uniformly solves ~1/m at turn 1: the family's difficulty.
    turn1 = sum(1 / len(p.metadata["choices"]) for p in train) / len(train)
    assert 0.3 < turn1 < 0.5


def test_splits_do_not_overlap_and_are_seed_independent(train, test_split):
    train_keys = {p.metadata["statement_key"] for p in train}
    test_keys = {p.metadata["statement_key"] for p in test_split}
    assert not train_keys & test_keys
    assert not {p.statement for p in train} & {p.statement for p in test_split}
    other_seed = toy.toy_problems("test", 100, seed=7)
    assert {p.metadata["statement_key"] for p in other_seed} <= test_keys
    fams = {p.metadata["family"] for p in test_split}
    assert fams == {f.name for f in toy.FAMILIES}


def test_deterministic_balanced_prefixes():
    a = toy.toy_problems("train", 56, seed=3)
    assert a == toy.toy_problems("train", 56, seed=3)
    assert a[:10] == toy.toy_problems("train", 10, seed=3)
    b = toy.toy_problems("train", 56, seed=4)
    assert [p.id for p in a] != [p.id for p in b]
    counts = collections.Counter(p.metadata["family"] for p in a)
    assert len(counts) == len(toy.FAMILIES) and set(counts.values()) == {4}


def test_noisy_solution(train):
    p = train[0]
    code, ok, kind = toy.noisy_solution(p, random.Random(0), p_correct=1.0)
    assert (code, ok, kind) == (p.reference, True, "reference")
    rng = random.Random(1)
    draws = [toy.noisy_solution(p, rng, p_correct=0.0) for _ in range(20)]
    assert all(not ok and kind != "reference" for _, ok, kind in draws)
    tests = p.public_tests["tests"] + p.private_tests["tests"]
    assert all(not _passes(code, tests) for code, _, _ in draws)
    again = [toy.noisy_solution(p, random.Random(1), 0.0) for _ in range(1)]
    assert again[0] == draws[0]
    mixed = [toy.noisy_solution(p, rng, 0.5)[1] for _ in range(400)]
    assert 0.4 < sum(mixed) / len(mixed) < 0.6


def test_corpus(test_split):
    corpus = toy.toy_corpus(n=100)
    assert all(isinstance(d, str) and d for d in corpus)
    assert corpus == toy.toy_corpus(n=100)
    text = "\n".join(corpus)
    assert "Write a Python function implementation" in text and "```python" in text
    assert not any(p.statement in text for p in test_split)


def test_bad_input():
    with pytest.raises(ValueError, match="'train' or 'test'"):
        toy.toy_problems("validation")
    with pytest.raises(ValueError, match="smaller n"):
        toy.toy_problems("test", 10**6)
    mbpp = Problem(
        id="mbpp/1",
        dataset="mbpp",
        statement="x",
        public_tests={"kind": "assert", "setup": "", "tests": []},
        private_tests={"kind": "assert", "setup": "", "tests": []},
    )
    with pytest.raises(ValueError, match="not a toy problem"):
        toy.wrong_solutions(mbpp)


# --- the demo's "shown" variant ---------------------------------------------------------------


@pytest.fixture(scope="module")
def shown():
    return toy.toy_problems("test", None, variant="shown", test_fraction=0.35)


def test_shown_variant_puts_the_public_test_in_the_prompt(shown):
    from mucode_jax import prompts

    assert len(shown) == toy.num_toy_problems("test", variant="shown", test_fraction=0.35)
    names = collections.defaultdict(set)
    for p in shown:
        assert p.id.startswith("toy-shown/") and p.metadata["show_tests"]
        prompt = prompts.first_turn_prompt(p)
        assert p.public_tests_text in prompt and "Tests:" in prompt
        for t in p.private_tests["tests"]:
            assert t not in prompt
        names[p.metadata["family"]].add(p.entry_point)
    assert all(len(v) == 1 for v in names.values())  # one function name per family
    # The default variant still hides it.
    hidden = toy.toy_problems("test", 3)[0]
    assert hidden.public_tests_text not in prompts.first_turn_prompt(hidden)
    with pytest.raises(ValueError, match="Unknown toy variant"):
        toy.toy_problems("test", 1, variant="visible")


def test_overfit_programs_pass_the_shown_test_and_fail_the_private_ones(shown):
    counts = collections.Counter()
    for p in shown[:300]:
        for kind, code in toy.wrong_solutions(p):
            counts[kind] += 1
            if kind == "overfit":
                assert _passes(code, p.public_tests["tests"]), (p.id, code)
                assert not _passes(code, p.private_tests["tests"]), (p.id, code)
    assert counts["overfit"] >= 300 and counts["reading"] >= 150
    hidden = toy.toy_problems("train", 50)
    assert all(k != "overfit" for p in hidden for k, _ in toy.wrong_solutions(p))


def test_noisy_solution_kind_weights(shown):
    p = next(q for q in shown if q.metadata["family"] == "affine")
    rng = random.Random(0)
    kinds = collections.Counter(
        toy.noisy_solution(p, rng, 0.0, {"overfit": 1.0, "reading": 1.0})[2] for _ in range(400)
    )
    assert set(kinds) == {"overfit", "reading"} and min(kinds.values()) > 150
    only = {toy.noisy_solution(p, rng, 0.0, {"flip": 1.0, "absent": 3.0})[2] for _ in range(50)}
    assert only <= {"flip", "reading", "off_by_one", "overfit"} and len(only) >= 1
    with pytest.raises(ValueError, match="kind_weights"):
        toy.noisy_solution(p, rng, 0.0, {"overfit": -1.0})


def test_shown_prefixes_hold_both_readings_of_their_statements(shown):
    """The demo trains on a prefix: both readings of a statement sit side by side in it, so the
    statement alone never tells the reading (the shown test does)."""
    readings = {f.name: len(f.hidden) for f in toy.SHOWN_FAMILIES}
    first, i = [], 0
    while i < 60:  # whole statements: each unit is one statement's readings, adjacent
        unit = shown[i : i + readings[shown[i].metadata["family"]]]
        assert len({p.statement for p in unit}) == 1
        assert len({p.metadata["hidden"] for p in unit}) == len(unit)
        assert len({p.public_tests["tests"][0] for p in unit}) == len(unit)
        first += unit
        i += len(unit)
    assert len({p.metadata["family"] for p in first}) > 5
    # affine shows its value at n = 0: the expected value is the shift, with its sign.
    affine = next(p for p in shown if p.metadata["family"] == "affine")
    b = affine.metadata["params"]["b"]
    shift = b if affine.metadata["hidden"] == "+" else -b
    assert affine.public_tests["tests"][0].endswith(f"(0) == {shift}")
