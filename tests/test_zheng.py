"""Zheng et al.: the prompt registry, reasoning turns, CoT-retry turns, stripping, LSH dedup."""

from __future__ import annotations

import concurrent.futures as cf
import json

import pytest

from mucode_jax import prompts as P
from mucode_jax import records, rollout
from mucode_jax.algorithms import relabel, rft
from mucode_jax.execution.results import ExecResult, TestResult
from mucode_jax.types import Problem

REASONING = (
    "self_reflection",
    "explain_io",
    "problem_tag",
    "difficulty",
    "nl_solution",
    "multiple_solutions",
    "helper_docstrings",
    "intermediate_variables",
)
INSTRUCTION = (
    "none",
    "helper_functions",
    "check_constraints",
    "comment_lines",
    "docstrings",
    "weak_solution",
)


def problems(n=2):
    pub = {"kind": "assert", "setup": "", "tests": ["assert True"], "tag": "public"}
    priv = {"kind": "assert", "setup": "", "tests": ["assert True"], "tag": "private"}
    return [Problem(f"toy/{i}", "toy", f"Task {i}.", pub, priv) for i in range(n)]


class SeedPolicy:
    """Answers from the seed alone (so a plain and a CoT-retry run sample the same texts)."""

    def __init__(self):
        self.conversations = []

    def complete(self, conversations, *, seeds):
        self.conversations.extend([dict(m) for m in c] for c in conversations)
        return [rollout.Completion(f"```python\nx = {s % 97}\n```") for s in seeds]


class Failing:
    """Every program fails (or passes from turn ``pass_at`` on, counted per submission)."""

    def submit(self, code, tests, **kw):
        f = cf.Future()
        f.set_result(ExecResult(verdict="wrong_answer", tests=(TestResult(0, "wrong_answer"),)))
        return f


def test_registry_names_texts_and_overrides(tmp_path):
    assert tuple(P.REASONING_PROMPTS) == REASONING
    assert tuple(P.INSTRUCTION_PROMPTS) == INSTRUCTION
    assert P.INSTRUCTION_PROMPTS["none"] == ""
    assert all(P.REASONING_PROMPTS.values()) and all(list(P.INSTRUCTION_PROMPTS.values())[1:])
    reg = P.PromptRegistry()
    assert dict(reg.reasoning) == P.REASONING_PROMPTS
    new = reg.with_overrides({"reasoning": {"explain_io": "Explain the examples."}})
    assert new.reasoning["explain_io"] == "Explain the examples."
    assert new.reasoning["problem_tag"] == P.REASONING_PROMPTS["problem_tag"]
    assert reg.reasoning["explain_io"] == P.REASONING_PROMPTS["explain_io"]  # a copy
    path = tmp_path / "texts.json"
    path.write_text(
        json.dumps({"instruction": {"docstrings": "Docstrings!"}, "cot_retry": {"2": "G"}})
    )
    strat = P.PromptStrategy(instruction="docstrings", texts=str(path))
    assert strat.registry.instruction["docstrings"] == "Docstrings!"
    assert strat.registry.cot_retry[2] == "G" and strat.name.startswith(
        "instruction=docstrings/texts="
    )
    with pytest.raises(ValueError, match="Unknown reasoning prompt 'vibes'"):
        reg.with_overrides({"reasoning": {"vibes": "x"}})
    with pytest.raises(ValueError, match="Unknown prompt section 'moods'"):
        reg.with_overrides({"moods": {}})
    with pytest.raises(ValueError, match="Cannot read the prompt texts file"):
        reg.with_overrides(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="Unknown reasoning prompt 'x'"):
        P.PromptStrategy(reasoning="x")
    with pytest.raises(ValueError, match="Unknown instruction prompt"):
        P.PromptStrategy(instruction="use_helper_functions")
    with pytest.raises(ValueError, match="CoT-retry's first turn is the plain prompt"):
        P.PromptStrategy(reasoning="difficulty", cot_retry=True)


def test_reasoning_is_its_own_turn_before_the_code_turn(tmp_path):
    policy = SeedPolicy()
    cfg = rollout.SearchConfig(
        num_searches=2, max_turns=2, prompt=dict(reasoning="explain_io", instruction="docstrings")
    )
    out = tmp_path / "r.jsonl"
    trajs = rollout.run_search(problems(), policy, Failing(), cfg, out)
    tr = sorted(trajs, key=lambda t: t.key)[0]
    first = P.first_turn_prompt(problems()[0])
    ask, prose = tr.preamble
    assert ask == {
        "role": "user",
        "content": f"{first}\n\n{P.REASONING_PROMPTS['explain_io']}\n\n{P.REASONING_NOTE}",
    }
    assert prose["role"] == "assistant"
    assert tr.turns[0].user == "\n\n".join(
        [P.CODE_TURN, P.INSTRUCTION_PROMPTS["docstrings"], P.CODE_FORMATS["toy"]]
    )
    assert tr.turns[0].plain == first and tr.turns[1].plain is None
    assert tr.messages[:3] == [ask, prose, {"role": "user", "content": tr.turns[0].user}]
    # One reasoning call per search, then two code turns: 2 problems x 2 searches x 3 calls.
    assert len(policy.conversations) == 12
    assert sum(len(c) == 1 for c in policy.conversations) == 4
    assert tr.settings.prompt == "official/reasoning=explain_io/instruction=docstrings"
    assert records.read_trajectories(out) == trajs
    plain = rft.strip_prompt_strategy(tr)
    assert plain.preamble == () and plain.turns[0].user == first


def test_cot_retry_turns_and_stripping_gives_the_plain_conversation(tmp_path):
    cot_cfg = rollout.SearchConfig(num_searches=2, max_turns=3, prompt=dict(cot_retry=True))
    plain_cfg = rollout.SearchConfig(num_searches=2, max_turns=3)
    cot = sorted(
        rollout.run_search(problems(), SeedPolicy(), Failing(), cot_cfg, tmp_path / "c.jsonl"),
        key=lambda t: t.key,
    )
    plain = sorted(
        rollout.run_search(problems(), SeedPolicy(), Failing(), plain_cfg, tmp_path / "p.jsonl"),
        key=lambda t: t.key,
    )
    t1, t2, t3 = cot[0].turns
    assert t1.user == P.first_turn_prompt(problems()[0]) and t1.plain is None
    feedback2 = P.mucode_feedback_message(t1.feedback)["content"]
    assert t2.user == f"{feedback2}\n\n{P.COT_RETRY_SUFFIXES[2]}" and t2.plain == feedback2
    assert "guidelines" in t2.user and "naive solution" in t3.user
    assert t3.user == P.cot_retry_message(t2.feedback, 3)["content"]
    assert cot[0].settings.prompt == "official/cot_retry"
    assert [t.messages for t in cot] != [t.messages for t in plain]
    stripped = [rft.strip_prompt_strategy(t) for t in cot]
    assert [t.messages for t in stripped] == [t.messages for t in plain]


def test_lsh_dedup_keeps_one_per_family_and_honours_max_keep():
    bases = [
        "def total(values, limit):\n    s = 0\n    for v in values:\n        if v > limit:\n"
        "            s += v * 2\n    return s\n",
        "import sys\nn = int(sys.stdin.readline())\nrows = [list(map(int, input().split())) "
        "for _ in range(n)]\nprint(max(sum(r) for r in rows))\n",
        "def is_palindrome(text):\n    clean = ''.join(ch.lower() for ch in text if ch.isalnum())"
        "\n    return clean == clean[::-1]\n",
    ]

    def family(base):
        # Near duplicates: a comment, re-indentation, a trailing comment: few tokens change.
        return [base, base + "\n# done\n", base.replace("    ", "  "), base + "\n\n# v2\n"]

    fams = [family(b) for b in bases]
    programs = [p for group in zip(*fams) for p in group]  # interleaved families
    kept = rft.lsh_dedup(programs, max_keep=50)
    assert kept == [0, 1, 2]  # the first member of each family
    assert rft.lsh_dedup(programs, max_keep=2) == [0, 1]
    assert rft.lsh_dedup(programs, max_keep=0) == []
    distinct = [f"print({i} * {i + 1} - {2 * i})" for i in range(60)]
    assert len(rft.lsh_dedup(distinct, max_keep=50)) == 50
    with pytest.raises(ValueError, match="threshold must be in"):
        rft.lsh_dedup(programs, 5, threshold=1.5)
    with pytest.raises(ValueError, match="Program 1 is a int"):
        rft.lsh_dedup(["a", 3], 5)


class PassOnTurn:
    """The program ``x = k`` passes when k is even (the seed decides), so some searches fix a
    failure at turn 2 or 3 and some pass at once."""

    def submit(self, code, tests, **kw):
        ok = int(code.split("=")[1]) % 2 == 0
        v = "passed" if ok else "wrong_answer"
        f = cf.Future()
        f.set_result(ExecResult(verdict=v, tests=(TestResult(0, v),)))
        return f


def test_rft_mode_keeps_correct_multi_turn_deduplicated_stripped(tmp_path):
    cfg = rollout.SearchConfig(num_searches=12, max_turns=3, prompt=dict(cot_retry=True))
    trajs = rollout.run_search(problems(), SeedPolicy(), PassOnTurn(), cfg, tmp_path / "c.jsonl")
    convs, stats = relabel.build_sft_data(
        "zheng_rft", trajs, config=relabel.RelabelConfig(rft_max_per_problem=3)
    )
    multi = [t for t in trajs if t.success and len(t.turns) > 1]
    assert stats["multi_turn_correct"] == len(multi) > 0
    assert stats["trajectories"] == 24 and stats["correct"] > len(multi)
    assert stats["trajectories_kept"] <= 3 * stats["problems"]
    assert stats["conversations"] == len(convs) > 0
    for c in convs:
        assert c["mode"] == "zheng_rft" and c["target_label"] is not None
        users = [m["content"] for m in c["messages"] if m["role"] == "user"]
        assert not any(P.COT_RETRY_SUFFIXES[2] in u or P.COT_RETRY_SUFFIXES[3] in u for u in users)
    # Every turn of a kept trajectory is a target (its own message): turns 1..T.
    by = {}
    for c in convs:
        by.setdefault((c["problem_id"], c["search"]), []).append(c["turn"])
    assert all(v == list(range(1, len(v) + 1)) and len(v) > 1 for v in by.values())
    with pytest.raises(ValueError, match="rft_max_per_problem"):
        relabel.RelabelConfig(rft_max_per_problem=0)
    one_turn = [t for t in trajs if len(t.turns) == 1]
    with pytest.raises(
        ValueError, match=f"zheng_rft kept no trajectory: of {len(one_turn)} rollouts"
    ):
        relabel.build_sft_data("zheng_rft", one_turn)
    convs, stats = relabel.build_sft_data(
        "zheng_rft", one_turn, config=relabel.RelabelConfig(rft_multi_turn_only=False)
    )
    assert stats["trajectories_kept"] > 0 and all(c["turn"] == 1 for c in convs)
