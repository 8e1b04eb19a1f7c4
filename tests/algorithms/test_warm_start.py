"""The demo's scripted warm start: real executor feedback, the same answer repeated, resumable."""

from __future__ import annotations

import pytest

from mucode_jax import prompts as P
from mucode_jax import rollout
from mucode_jax.algorithms import warm_start
from mucode_jax.data import toy
from mucode_jax.execution import Executor


@pytest.fixture(scope="module")
def problems():
    return toy.toy_problems("train", 12, variant="shown", test_fraction=0.3)


@pytest.fixture(scope="module")
def executor():
    with Executor(workers=2) as ex:
        yield ex


def _code(message: str) -> str:
    return message.split("```python\n", 1)[1].rsplit("\n```", 1)[0]


def test_script_repeats_itself_after_real_feedback(problems, executor, tmp_path):
    search = rollout.SearchConfig(show_tests=True, seed=5)
    out = tmp_path / "ws.jsonl"
    convs = warm_start.conversations(
        problems, executor, search, out, samples_per_problem=2, max_turns=3, p_correct=0.4
    )
    assert len(convs) == 2 * len(problems)
    by_prompt = {P.first_turn_messages(p, show_tests=True)[-1]["content"]: p for p in problems}
    stopped_right = repeated = 0
    for conv in convs:
        assert conv[-1]["role"] == "assistant"
        problem = by_prompt[next(m["content"] for m in conv if m["role"] == "user")]
        answers = [_code(m["content"]) for m in conv if m["role"] == "assistant"]
        first = answers[0].strip()
        if first == problem.reference.strip():
            assert len(answers) == 1  # the public test passed: the search stops at turn 1
            stopped_right += 1
        elif len(answers) > 1:
            # It failed the public test: real feedback (the failing test) then the same answer.
            feedback = [m["content"] for m in conv if m["role"] == "user"][1]
            assert "assert" in feedback or "Error" in feedback or "fail" in feedback.lower()
            assert len(answers) == 3 and len(set(answers)) == 1
            repeated += 1
    assert stopped_right > 0 and repeated > 0
    # Resumable: a second call reads the finished file and returns the same conversations.
    again = warm_start.conversations(
        problems, executor, search, out, samples_per_problem=2, max_turns=3, p_correct=0.4
    )
    assert again == convs


def test_script_answers_only_its_problems_and_rejects_bad_sizes(problems, executor, tmp_path):
    search = rollout.SearchConfig(show_tests=True)
    script = warm_start.NoisyScript(problems[:2], search, p_correct=1.0)
    first = P.first_turn_messages(problems[0], show_tests=True)
    (answer,) = script.complete([first], seeds=[0])
    assert _code(answer.text).strip() == problems[0].reference.strip()
    other = P.first_turn_messages(problems[5], show_tests=True)
    with pytest.raises(ValueError, match="not given"):
        script.complete([other], seeds=[0])
    with pytest.raises(ValueError, match="samples_per_problem >= 1"):
        warm_start.conversations(
            problems,
            executor,
            search,
            tmp_path / "x.jsonl",
            samples_per_problem=0,
            max_turns=2,
            p_correct=0.5,
        )


def test_warm_start_problems_can_leave_out_the_loops_statements():
    import configs.demo as demo
    from mucode_jax.algorithms.config import check_config
    from mucode_jax.algorithms.mucode import load_problem_set, warm_start_problems

    c = demo.get_config()
    train = load_problem_set(c.data.train)
    every = warm_start_problems(c, train)
    ids = {p.id for p in every}
    assert {p.id for p in train} <= ids  # by default the warm start has seen the loop's problems
    c.warm_start.exclude_train = True
    kept = warm_start_problems(c, train)
    statements = {p.statement for p in train}
    assert not statements & {p.statement for p in kept}
    assert {p.id for p in kept} == {p.id for p in every if p.statement not in statements}
    # Both readings of each loop statement are left out, nothing else.
    assert len(every) - len(kept) == len(train)
    c.warm_start.num_problems = 0  # the loop's own problems: nothing would be left
    with pytest.raises(ValueError, match="exclude_train"):
        check_config(c)


def test_warm_start_key_ignores_what_its_scripted_searches_override(tmp_path, monkeypatch):
    import configs.demo as demo
    from mucode_jax.algorithms import mucode
    from mucode_jax.algorithms.artifacts import Artifact

    keys = []

    def fake_run(self, name, inputs, fn):
        keys.append(mucode.content_key(name, inputs))
        return Artifact(name, keys[-1], tmp_path, reused=True)

    monkeypatch.setattr(mucode.Store, "run", fake_run)

    def key(**search):
        c = demo.get_config("ci")
        c.rollout.search.update(search)
        mucode.Driver(c, tmp_path, None, None, [], {}).base()
        return keys[-1]

    default = key()
    # The scripted searches set their own N, candidates and turns: the rollouts' do not matter.
    assert key(num_searches=15) == default
    assert key(max_turns=2) == default
    # What shapes its conversations does.
    assert key(prompt_form="official") != default
