"""The official μCode protocol's data switches: MBPP train/test public tests, the import
preamble and script layout, HumanEvalPack and cc_1k (hub loaders on fixtures, no downloads)."""

from __future__ import annotations

import json

import pytest

from mucode_jax import prompts as P
from mucode_jax.data import load_problems
from mucode_jax.data import problems as L

OFFICIAL = dict(challenge_tests=False, preamble="official")


def _mbpp(shared_data, split, **kw):
    return load_problems("mbpp", path=shared_data / "mbpp" / "mbpp.jsonl", split=split, **kw)


def test_mbpp_train_shows_every_assert_and_test_only_the_first(shared_data):
    train = {p.id: p for p in _mbpp(shared_data, "train", public_tests="all", **OFFICIAL)}
    rows = {
        json.loads(line)["task_id"]: json.loads(line)
        for line in open(shared_data / "mbpp" / "mbpp.jsonl", encoding="utf-8")
    }
    p = train["mbpp/601"]
    asserts = [t.strip() for t in rows[601]["test_list"]]
    assert p.public_tests["tests"] == asserts and p.private_tests["tests"] == asserts
    prompt = P.first_turn_prompt(p, form="official")
    assert all(a in prompt for a in asserts)
    # The official text: the (empty) setup line before the asserts, so a blank line more.
    assert "Your code should satisfy these tests:\n\n\n" + asserts[0] in prompt
    assert P.first_turn_prompt(p) == P.first_turn_prompt(
        _mbpp(shared_data, "train", public_tests="all")[0]
    )
    test = {p.id: p for p in _mbpp(shared_data, "test", **OFFICIAL)}
    q, row = test["mbpp/11"], rows[11]
    assert q.public_tests["tests"] == [row["test_list"][0].strip()]
    assert q.private_tests["tests"] == [t.strip() for t in row["test_list"][1:]]
    prompt = P.first_turn_prompt(q, form="official")
    assert row["test_list"][0].strip() in prompt and row["test_list"][1].strip() not in prompt
    # Challenge tests: run only when asked (ours); 11 test problems have them.
    ours = {p.id: p for p in _mbpp(shared_data, "test")}
    with_challenge = [i for i, p in ours.items() if len(p.private_tests["tests"]) > 2]
    assert len(with_challenge) == 11
    assert all(len(test[i].private_tests["tests"]) == 2 for i in with_challenge)


def test_the_official_preamble_is_on_every_suite(shared_data):
    for p in _mbpp(shared_data, "test", **OFFICIAL)[:5]:
        for suite in (p.public_tests, p.private_tests):
            assert suite["preamble"] == L.OFFICIAL_PREAMBLE and suite["setup"].endswith("\n")
    assert L.OFFICIAL_PREAMBLE.count("\n") == 16
    assert "import numpy as np\n" in L.OFFICIAL_PREAMBLE
    he = load_problems(
        "humaneval", path=shared_data / "humaneval" / "HumanEval.jsonl", preamble="official"
    )[0]
    assert he.public_tests["preamble"] == L.OFFICIAL_PREAMBLE + "from typing import List\n\n\n\n\n"
    bare = _mbpp(shared_data, "test")[0]
    assert "preamble" not in bare.public_tests


def test_bad_options_are_one_sentence(shared_data):
    with pytest.raises(ValueError, match="public_tests='all' is for MBPP only"):
        load_problems(
            "humaneval", path=shared_data / "humaneval" / "HumanEval.jsonl", public_tests="all"
        )
    with pytest.raises(ValueError, match="Unknown public-test policy 'most'"):
        _mbpp(shared_data, "test", public_tests="most")
    with pytest.raises(ValueError, match="Unknown preamble 'numpy'"):
        _mbpp(shared_data, "test", preamble="numpy")


# HumanEvalPack's Python schema, two rows written here: one with two example asserts, one with a
# single one (its example check is then empty once the public assert is taken out).
HEP_ROWS = [
    {
        "task_id": "Python/0",
        "prompt": "from typing import List\n\n\ndef has_close_elements(numbers: List[float], "
        'threshold: float) -> bool:\n    """ Any two numbers closer than threshold?\n    >>> '
        'has_close_elements([1.0, 2.0, 3.0], 0.5)\n    False\n    """\n',
        "declaration": "from typing import List\n\n\ndef has_close_elements(numbers: "
        "List[float], threshold: float) -> bool:\n",
        "canonical_solution": "    for i, a in enumerate(numbers):\n        for j, b in "
        "enumerate(numbers):\n            if i != j and abs(a - b) < threshold:\n"
        "                return True\n    return False\n",
        "entry_point": "has_close_elements",
        "test": "\n\n\n\n\ndef check(has_close_elements):\n    assert has_close_elements([1.0, "
        "2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True\n    assert has_close_elements([1.0, 2.0, 3.9, "
        "4.0, 5.0, 2.2], 0.05) == False\n\ncheck(has_close_elements)",
        "example_test": "def check(has_close_elements):\n    assert has_close_elements([1.0, "
        "2.0, 3.0], 0.5) == False\n    assert has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, "
        "2.0], 0.3) == True\ncheck(has_close_elements)\n",
    },
    {
        "task_id": "Python/1",
        "prompt": 'def add(x: int, y: int):\n    """Add.\n    >>> add(2, 3)\n    5\n    """\n',
        "declaration": "def add(x: int, y: int):\n",
        "canonical_solution": "    return x + y\n",
        "entry_point": "add",
        "test": "def check(add):\n    assert add(0, 1) == 1\n    assert add(5, 7) == 12\n\n"
        "check(add)",
        "example_test": "def check(add):\n    assert add(2, 3) == 5\ncheck(add)\n",
    },
]


def _check_hep(problems):
    p0, p1 = problems
    assert p0.id == "humanevalpack/0" and p0.dataset == "humaneval"
    public = "assert has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3) == True"
    assert p0.public_tests["kind"] == "assert" and p0.public_tests["tests"] == [public]
    check = p0.private_tests["check"]
    assert "has_close_elements([1.0, 2.0, 3.0], 0.5) == False" in check  # the other example
    assert "0.05) == False" in check and public.removeprefix("assert ") not in check
    assert P.first_turn_prompt(p0, form="official").count("def check(has_close_elements):") == 1
    assert HEP_ROWS[0]["example_test"] in P.first_turn_prompt(p0, form="official")
    assert p0.public_tests["preamble"].endswith("from typing import List\n\n\n\n\n")
    assert p1.public_tests["tests"] == ["assert add(2, 3) == 5"]
    assert p1.metadata["empty_example_check"] and "_check_example" not in p1.private_tests["check"]


def test_humanevalpack_from_a_file(tmp_path):
    path = tmp_path / "humanevalpack.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in HEP_ROWS))
    _check_hep(load_problems("humanevalpack", path=path, preamble="official"))


def test_humanevalpack_from_the_hub(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load(repo, config=None, split=None, **kw):
        calls.append((repo, config, split))
        return datasets.Dataset.from_list(HEP_ROWS)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    _check_hep(load_problems("humanevalpack", preamble="official"))
    assert calls == [("bigcode/humanevalpack", "python", "test")]


CC_ROWS = [
    {
        "name": "1001_A. Sum",
        "description": "Print a + b.",
        "public_tests": {"input": ["1 2\n"], "output": ["3\n"]},
        "private_tests": {"input": ["5 6\n"], "output": ["11\n"]},
        "generated_tests": {"input": ["0 0\n", "7 1\n"], "output": ["0\n", "8\n"]},
        "solutions": {
            "language": [3],
            "solution": ["a, b = map(int, input().split())\nprint(a + b)\n"],
        },
        "difficulty": 7,
        "cf_tags": ["math"],
        "source": 2,
    },
    {  # no public tests: the official code drops it
        "name": "1002_B. Hidden",
        "description": "No examples.",
        "public_tests": {"input": [], "output": []},
        "private_tests": {"input": ["1\n"], "output": ["1\n"]},
        "generated_tests": {"input": [], "output": []},
        "solutions": {"language": [3], "solution": ["print(input())\n"]},
        "difficulty": 7,
        "cf_tags": [],
        "source": 2,
    },
]


def test_cc_1k_from_the_hub(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load(repo, config=None, split=None, **kw):
        calls.append((repo, config, split))
        return datasets.Dataset.from_list(CC_ROWS)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    (p,) = load_problems("cc_1k", split="train", generated_tests=False, preamble="official")
    assert calls == [("rl-llm-coders/cc_1k", None, "train")]
    assert p.id == "codecontests/1001_A" and p.dataset == "codecontests"
    assert p.private_tests["cases"] == [{"input": "5 6\n", "output": "11\n"}]  # no generated
    assert p.private_tests["preamble"] == L.OFFICIAL_PREAMBLE
    (ours,) = load_problems("cc_1k", split="train")
    assert len(ours.private_tests["cases"]) == 3 and "preamble" not in ours.private_tests
    assert P.first_turn_prompt(p, form="official") == (
        "\nProvide a Python solution for the following competitive programming question: "
        "\\$Print a + b..\nYour code should be enclosed in triple backticks like so: ```python "
        "YOUR CODE HERE```. Use the backticks for your code only.\n"
    )
