"""Benchmark loaders on the local files in ../shared/data (the hub path needs a network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mucode_jax.data import load_problems, public_tests_text
from mucode_jax.data.problems import RowError
from mucode_jax.execution import validate_suite
from mucode_jax.types import Problem

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="module")
def data_dir() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is not present (the benchmark data lives beside the repo)")
    return SHARED_DATA


def test_mbpp_splits_and_suites(data_dir):
    path = data_dir / "mbpp/mbpp.jsonl"
    all_ = load_problems("mbpp", path=path)
    sizes = {
        s: len(load_problems("mbpp", path=path, split=s))
        for s in ("prompt", "test", "validation", "train")
    }
    assert len(all_) == 974 and sizes == {"prompt": 10, "test": 500, "validation": 90, "train": 374}
    p = next(p for p in all_ if p.id == "mbpp/2")
    assert isinstance(p, Problem) and p.dataset == "mbpp" and p.entry_point == "similar_elements"
    assert p.public_tests["tests"] == [
        "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)"
    ]
    assert len(p.private_tests["tests"]) == 2 and p.public_tests_text == p.public_tests["tests"][0]
    challenged = next(p for p in all_ if p.metadata["task_id"] == 367)
    assert (
        "Node(1)" in challenged.private_tests["setup"]
        and "\r" not in challenged.private_tests["setup"]
    )
    assert next(p for p in all_ if p.metadata["task_id"] == 126).entry_point == "sum"
    for p in all_:
        validate_suite(p.public_tests)
        validate_suite(p.private_tests)


def test_other_datasets_load_and_validate(data_dir):
    files = {
        "mbpp_sanitized": ("mbpp/sanitized-mbpp.jsonl", 427, "assert"),
        "humaneval": ("humaneval/HumanEval.jsonl", 164, "check"),
        "mbpp_plus": ("evalplus/MbppPlus-v0.1.0.jsonl", 399, "function"),
        "codecontests": ("codecontests/codecontests_train_sample100.jsonl", 100, "stdio"),
    }
    for name, (rel, count, private_kind) in files.items():
        problems = load_problems(name, path=data_dir / rel)
        assert len(problems) == count and len({p.id for p in problems}) == count
        for p in problems:
            assert p.private_tests["kind"] == private_kind and p.reference
            # HumanEval/38 and /50 have no example in the docstring nor a plain assert in check()
            assert p.public_tests_text or p.id in ("humaneval/38", "humaneval/50")
            validate_suite(p.public_tests)
            validate_suite(p.private_tests)
    he = {p.id: p for p in load_problems("humaneval", path=data_dir / files["humaneval"][0])}
    assert (
        he["humaneval/0"].public_tests_text
        == "assert has_close_elements([1.0, 2.0, 3.0], 0.5) == False"
    )
    assert he["humaneval/0"].public_tests["kind"] == "function"  # judged against the canonical
    plus = {p.id: p for p in load_problems("mbpp_plus", path=data_dir / files["mbpp_plus"][0])}
    p2 = plus["mbpp_plus/2"]
    assert p2.private_tests["compare"] == "set" and len(p2.private_tests["inputs"]) > 3
    assert "assert" not in p2.statement and p2.public_tests_text.startswith(
        "assert similar_elements("
    )
    cc = load_problems("codecontests", path=data_dir / files["codecontests"][0])[0]
    assert cc.public_tests_text.startswith("Input:\n") and "Output:\n" in cc.public_tests_text
    assert cc.private_tests["reference"] == cc.reference


def test_public_tests_text_helper():
    assert public_tests_text(
        {"kind": "assert", "tests": ["assert f(1) == 2 ", "assert f(2) == 3"]}
    ) == ("assert f(1) == 2\nassert f(2) == 3")
    assert public_tests_text({"kind": "stdio", "cases": [{"input": "1 2\n", "output": "3\n"}]}) == (
        "Input:\n1 2\nOutput:\n3"
    )


@pytest.mark.parametrize(
    "row, field",
    [
        ({"text": "t", "code": "c", "task_id": 1}, "test_list"),
        (
            {"text": "t", "code": "c", "task_id": "one", "test_list": ["assert f(1) == 1"]},
            "task_id",
        ),
        ({"text": "t", "code": 3, "task_id": 1, "test_list": ["assert f(1) == 1"]}, "code"),
        ({"text": "t", "code": "c", "task_id": 1, "test_list": []}, "test_list"),
    ],
)
def test_malformed_rows_name_file_line_and_field(tmp_path, row, field):
    path = tmp_path / "mbpp.jsonl"
    good = {
        "text": "t",
        "code": "def f(x): return x",
        "task_id": 1,
        "test_list": ["assert f(1) == 1"],
    }
    path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(RowError, match=rf"mbpp.jsonl:2: field '{field}'"):
        load_problems("mbpp", path=path)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="Unknown dataset"):
        load_problems("apps", path=tmp_path / "x.jsonl")
    with pytest.raises(ValueError, match="Unknown MBPP split"):
        load_problems("mbpp", path=tmp_path / "x.jsonl", split="dev")
    with pytest.raises(FileNotFoundError, match="x.jsonl"):
        load_problems("mbpp", path=tmp_path / "x.jsonl")
    (tmp_path / "bad.jsonl").write_text("{oops\n")
    with pytest.raises(RowError, match="bad.jsonl:1: the line is not valid JSON"):
        load_problems("humaneval", path=tmp_path / "bad.jsonl")
