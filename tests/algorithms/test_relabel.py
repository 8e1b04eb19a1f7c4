"""The SFT data modes of the expert-iteration loop on hand-made trajectories.

Two problems, rollout trajectories (`types.Trajectory`) with known verifier scores:

p1 (has correct programs); final-turn scores in brackets, * = correct:
  s0: p1s0t1 (.1)  p1s0t2 (.95)  p1s0t3 [.5]
  s1: p1s1t1 (.3)  p1s1t2 [.4]*
  s2: p1s2t1 [.9]                      <- the verifier's favourite, but incorrect
  s3: p1s3t1 (.2)  p1s3t2 (.1)  p1s3t3 [.7]
  s4: p1s4t1 (0)   p1s4t2 [.6]
  s5: p1s5t1 [.35]*
p2 (one-sided: nothing correct):
  s0: p2s0t1 (.5)  p2s0t2 [.2]
  s1: p2s1t1 (.1)  p2s1t2 (0)   p2s1t3 [.3]
"""

from __future__ import annotations

import numpy as np
import pytest

from mucode_jax.algorithms import relabel as R
from mucode_jax.algorithms.relabel import RelabelConfig, build_sft_data, merge_iterations
from mucode_jax.execution.results import ExecResult
from mucode_jax.types import Candidate, Trajectory, Turn

T, F = True, False

SPEC = {
    "p1": [
        [("p1s0t1", F, 0.1), ("p1s0t2", F, 0.95), ("p1s0t3", F, 0.5)],
        [("p1s1t1", F, 0.3), ("p1s1t2", T, 0.4)],
        [("p1s2t1", F, 0.9)],
        [("p1s3t1", F, 0.2), ("p1s3t2", F, 0.1), ("p1s3t3", F, 0.7)],
        [("p1s4t1", F, 0.0), ("p1s4t2", F, 0.6)],
        [("p1s5t1", T, 0.35)],
    ],
    "p2": [
        [("p2s0t1", F, 0.5), ("p2s0t2", F, 0.2)],
        [("p2s1t1", F, 0.1), ("p2s1t2", F, 0.0), ("p2s1t3", F, 0.3)],
    ],
}


def U(text):
    return {"role": "user", "content": text}


def A(text):
    return {"role": "assistant", "content": text}


def Fb(pid, s, t):
    return U(f"Feedback: {pid} s{s} t{t} failed")


PASS, FAIL = ExecResult("passed"), ExecResult("wrong_answer")


def record(pid, search, turns, *, with_scores=True):
    out_turns = []
    for t, (completion, label, score) in enumerate(turns):
        res = PASS if label else FAIL
        cand = Candidate(completion, completion, res, res, score=score if with_scores else None)
        user = f"Solve {pid}." if t == 0 else Fb(pid, search, t)["content"]
        feedback = f"{pid} s{search} t{t + 1} failed" if t < len(turns) - 1 else None
        out_turns.append(Turn(user, (cand,), feedback=feedback))
    return Trajectory(pid, "hand", search, 0, tuple(out_turns))


def records(spec=SPEC, *, with_scores=True, only=None):
    return [
        record(pid, s, turns, with_scores=with_scores)
        for pid, trajs in spec.items()
        if only is None or pid in only
        for s, turns in enumerate(trajs)
    ]


def msgs(convs):
    return [c["messages"] for c in convs]


P1, P2 = U("Solve p1."), U("Solve p2.")

# ---------------------------------------------------------------------------------------------
# Expected data, written out.

# p1 kept correct trajectories (own final program at every context).
P1_KEPT_S1 = [
    [P1, A("p1s1t2")],
    [P1, A("p1s1t1"), Fb("p1", 1, 1), A("p1s1t2")],
]
P1_KEPT_S5 = [[P1, A("p1s5t1")]]


def p1_relabeled(y):
    """s2, s3, s4 (the 3 incorrect trajectories with the highest final scores) -> y."""
    s2 = [[P1, A(y)]]
    s3 = [
        [P1, A(y)],
        [P1, A("p1s3t1"), Fb("p1", 3, 1), A(y)],
        [P1, A("p1s3t1"), Fb("p1", 3, 1), A("p1s3t2"), Fb("p1", 3, 2), A(y)],
    ]
    s4 = [
        [P1, A(y)],
        [P1, A("p1s4t1"), Fb("p1", 4, 1), A(y)],
    ]
    return s2, s3, s4


def p1_mucode(y):
    s2, s3, s4 = p1_relabeled(y)
    return P1_KEPT_S1 + s2 + s3 + s4 + P1_KEPT_S5


def p2_relabeled(y):
    return [
        [P2, A(y)],
        [P2, A("p2s0t1"), Fb("p2", 0, 1), A(y)],
        [P2, A(y)],
        [P2, A("p2s1t1"), Fb("p2", 1, 1), A(y)],
        [P2, A("p2s1t1"), Fb("p2", 1, 1), A("p2s1t2"), Fb("p2", 1, 2), A(y)],
    ]


# ---------------------------------------------------------------------------------------------
# mucode


def test_mucode_official_defaults():
    convs, stats = build_sft_data("mucode", records())
    # p1: y* = the verifier's best final program, p1s2t1 (incorrect: the verifier is fooled);
    # s0 (final .5) is the 4th incorrect trajectory, beyond the cap of 3; s1 and s5 kept.
    # p2 (no correct program) is still relabeled, with its best final program p2s1t3.
    assert msgs(convs) == p1_mucode("p1s2t1") + p2_relabeled("p2s1t3")
    meta = [(c["problem_id"], c["search"], c["turn"], c["kind"]) for c in convs]
    assert meta[:9] == [
        ("p1", 1, 1, "kept"),
        ("p1", 1, 2, "kept"),
        ("p1", 2, 1, "relabeled"),
        ("p1", 3, 1, "relabeled"),
        ("p1", 3, 2, "relabeled"),
        ("p1", 3, 3, "relabeled"),
        ("p1", 4, 1, "relabeled"),
        ("p1", 4, 2, "relabeled"),
        ("p1", 5, 1, "kept"),
    ]
    c = convs[3]
    assert (c["mode"], c["target_search"], c["target_turn"]) == ("mucode", 2, 1)
    assert (c["target_label"], c["target_score"], c["iteration"]) == (False, 0.9, None)
    assert stats == {
        "problems": 2,
        "trajectories": 8,
        "problems_without_correct": 1,
        "problems_dropped": 0,
        "trajectories_relabeled": 5,
        "trajectories_kept": 2,
        "conversations": 14,
    }


def test_mucode_oracle_assisted_score():
    cfg = RelabelConfig(oracle_assisted=True)
    convs, _ = build_sft_data("mucode", records(), config=cfg)
    # p1: key = score + 100 * label: p1s1t2 (100.4) beats p1s5t1 (100.35) and p1s2t1 (0.9).
    # The relabeled trajectories are still the 3 best incorrect ones; p2 has no correct
    # program, so the oracle changes nothing there.
    assert msgs(convs) == p1_mucode("p1s1t2") + p2_relabeled("p2s1t3")
    assert convs[2]["target_label"] is True and convs[2]["target_score"] == 0.4


def test_mucode_pool_of_all_turns():
    convs, _ = build_sft_data("mucode", records(), config=RelabelConfig(pool="all"))
    # p1: p1s0t2 (.95, a non-final turn) is the best program of all turns; p2: p2s0t1 (.5).
    assert msgs(convs) == p1_mucode("p1s0t2") + p2_relabeled("p2s0t1")
    assert (convs[2]["target_search"], convs[2]["target_turn"]) == (0, 2)


def test_mucode_cap_of_relabeled_trajectories():
    rec = records(only={"p1"})
    s2, s3, s4 = p1_relabeled("p1s2t1")
    s0 = [
        [P1, A("p1s2t1")],
        [P1, A("p1s0t1"), Fb("p1", 0, 1), A("p1s2t1")],
        [P1, A("p1s0t1"), Fb("p1", 0, 1), A("p1s0t2"), Fb("p1", 0, 2), A("p1s2t1")],
    ]
    uncapped, stats = build_sft_data("mucode", rec, config=RelabelConfig(max_relabeled=None))
    assert msgs(uncapped) == s0 + P1_KEPT_S1 + s2 + s3 + s4 + P1_KEPT_S5
    assert stats["trajectories_relabeled"] == 4
    one, _ = build_sft_data("mucode", rec, config=RelabelConfig(max_relabeled=1))
    assert msgs(one) == P1_KEPT_S1 + s2 + P1_KEPT_S5
    none, _ = build_sft_data("mucode", rec, config=RelabelConfig(max_relabeled=0))
    assert msgs(none) == P1_KEPT_S1 + P1_KEPT_S5


def test_mucode_without_keeping_correct_trajectories():
    rec = records(only={"p1"})
    # Capped at 3, incorrect trajectories still come first: the same 3 relabeled, no kept ones.
    capped, _ = build_sft_data("mucode", rec, config=RelabelConfig(keep_correct=False))
    s2, s3, s4 = p1_relabeled("p1s2t1")
    assert msgs(capped) == s2 + s3 + s4
    # Uncapped: every trajectory is relabeled, the correct ones too (the paper's description).
    every, stats = build_sft_data(
        "mucode", rec, config=RelabelConfig(keep_correct=False, max_relabeled=None)
    )
    assert stats["trajectories_relabeled"] == 6 and stats["trajectories_kept"] == 0
    assert {c["messages"][-1]["content"] for c in every} == {"p1s2t1"}
    assert [m[:-1] for m in msgs(every)][3:5] == [[P1], [P1, A("p1s1t1"), Fb("p1", 1, 1)]]


def test_mucode_top_k_programs():
    convs, _ = build_sft_data("mucode", records(only={"p1"}), config=RelabelConfig(top_k=2))
    # The two best final programs, p1s2t1 (.9) and p1s3t3 (.7), each target every context.
    relabeled = [c for c in convs if c["kind"] == "relabeled"]
    assert len(relabeled) == 2 * 6
    assert msgs(relabeled[:2]) == [[P1, A("p1s2t1")], [P1, A("p1s3t3")]]
    assert msgs(relabeled[4:6]) == [
        [P1, A("p1s3t1"), Fb("p1", 3, 1), A("p1s2t1")],
        [P1, A("p1s3t1"), Fb("p1", 3, 1), A("p1s3t3")],
    ]


def test_relabel_order_random_draws_three_incorrect_trajectories():
    rec = records(only={"p1"})
    drawn = set()
    for seed in range(24):
        convs, stats = build_sft_data(
            "mucode", rec, config=RelabelConfig(relabel_order="random"), seed=seed
        )
        assert stats["trajectories_relabeled"] == 3
        chosen = frozenset(c["search"] for c in convs if c["kind"] == "relabeled")
        assert chosen <= {0, 2, 3, 4} and len(chosen) == 3
        drawn.add(chosen)
        again, _ = build_sft_data(
            "mucode", rec, config=RelabelConfig(relabel_order="random"), seed=seed
        )
        assert again == convs
    assert len(drawn) > 1


def test_ties_are_broken_by_the_seed_not_by_record_order():
    spec = {"p3": [[("a", F, 0.5)], [("b", F, 0.5)], [("c", F, 0.1)]]}
    rec = records(spec)
    winners = set()
    for seed in range(32):
        convs, _ = build_sft_data("mucode", rec, seed=seed)
        y = {c["messages"][-1]["content"] for c in convs}
        assert len(y) == 1 and y <= {"a", "b"}
        winners |= y
        assert build_sft_data("mucode", rec[::-1], seed=seed)[0] == convs
    assert winners == {"a", "b"}


# ---------------------------------------------------------------------------------------------
# Baselines


def test_multi_star2_relabels_with_the_oracle_and_drops_one_sided_problems():
    convs, stats = build_sft_data("multi_star2", records())
    # y* is correct: p1s1t2 and p1s5t1 tie on the oracle, the verifier breaks the tie (.4 > .35);
    # p2 has no correct program and is dropped.
    assert msgs(convs) == p1_mucode("p1s1t2")
    assert {c["mode"] for c in convs} == {"multi_star2"}
    assert stats == {
        "problems": 2,
        "trajectories": 8,
        "problems_without_correct": 1,
        "problems_dropped": 1,
        "trajectories_relabeled": 3,
        "trajectories_kept": 2,
        "conversations": 9,
    }


def test_multi_star2_without_a_verifier():
    bare = records(with_scores=False)
    targets, relabeled = set(), set()
    for seed in range(24):
        convs, _ = build_sft_data("multi_star2", bare, seed=seed)
        # Scores present but ignored on request: the same draw (scores only reported).
        cfg = RelabelConfig(star2_tiebreak="random")
        ignored, _ = build_sft_data("multi_star2", records(), config=cfg, seed=seed)
        assert [{**c, "target_score": None} for c in ignored] == convs
        y = {c["messages"][-1]["content"] for c in convs if c["kind"] == "relabeled"}
        assert len(y) == 1 and y <= {"p1s1t2", "p1s5t1"}
        targets |= y
        relabeled.add(frozenset(c["search"] for c in convs if c["kind"] == "relabeled"))
        kept = [c for c in convs if c["kind"] == "kept"]
        assert msgs(kept) == P1_KEPT_S1 + P1_KEPT_S5
        assert all(c["target_score"] is None for c in convs)
    assert targets == {"p1s1t2", "p1s5t1"}
    assert all(len(s) == 3 and s <= {0, 2, 3, 4} for s in relabeled) and len(relabeled) > 1
    with pytest.raises(ValueError, match="needs the verifier score"):
        build_sft_data("multi_star2", bare, config=RelabelConfig(star2_tiebreak="verifier"))


def test_mucode_r_concatenates_mucode_and_multi_star2():
    convs, stats = build_sft_data("mucode_r", records())
    mu, _ = build_sft_data("mucode", records())
    star2, _ = build_sft_data("multi_star2", records())
    assert convs == mu + star2
    assert msgs(convs) == p1_mucode("p1s2t1") + p2_relabeled("p2s1t3") + p1_mucode("p1s1t2")
    assert stats["conversations"] == 14 + 9
    assert stats["mucode/problems_dropped"] == 0 and stats["multi_star2/problems_dropped"] == 1


def test_multi_star_keeps_only_correct_trajectories():
    convs, stats = build_sft_data("multi_star", records(with_scores=False))
    assert msgs(convs) == P1_KEPT_S1 + P1_KEPT_S5
    assert {(c["kind"], c["mode"]) for c in convs} == {("kept", "multi_star")}
    assert stats == {
        "problems": 2,
        "trajectories": 8,
        "problems_dropped": 1,
        "trajectories_kept": 2,
        "conversations": 3,
    }
    each, _ = build_sft_data("multi_star", records(), config=RelabelConfig(kept_target="each"))
    assert msgs(each) == [
        [P1, A("p1s1t1")],
        [P1, A("p1s1t1"), Fb("p1", 1, 1), A("p1s1t2")],
        [P1, A("p1s5t1")],
    ]


def test_rft_lv_keeps_the_top_k_trajectories_by_final_score():
    convs, stats = build_sft_data("rft_lv", records(), config=RelabelConfig(rft_top_k=2))
    # p1: finals .5 .4 .9 .7 .6 .35 -> s2, s3 (both incorrect: no oracle); p2: both.
    assert msgs(convs) == [
        [P1, A("p1s2t1")],
        [P1, A("p1s3t3")],
        [P1, A("p1s3t1"), Fb("p1", 3, 1), A("p1s3t3")],
        [P1, A("p1s3t1"), Fb("p1", 3, 1), A("p1s3t2"), Fb("p1", 3, 2), A("p1s3t3")],
        [P2, A("p2s0t2")],
        [P2, A("p2s0t1"), Fb("p2", 0, 1), A("p2s0t2")],
        [P2, A("p2s1t3")],
        [P2, A("p2s1t1"), Fb("p2", 1, 1), A("p2s1t3")],
        [P2, A("p2s1t1"), Fb("p2", 1, 1), A("p2s1t2"), Fb("p2", 1, 2), A("p2s1t3")],
    ]
    assert stats["trajectories_kept"] == 4 and stats["conversations"] == 9
    # Default k = 6: all 6 trajectories of p1 (15 in the paper), each with its own final.
    _, full = build_sft_data("rft_lv", records(only={"p1"}))
    assert full["trajectories_kept"] == 6
    # Oracle-assisted: the correct trajectories rank first.
    cfg = RelabelConfig(rft_top_k=2, oracle_assisted=True)
    oracle, _ = build_sft_data("rft_lv", records(only={"p1"}), config=cfg)
    assert msgs(oracle) == P1_KEPT_S1 + P1_KEPT_S5


# ---------------------------------------------------------------------------------------------
# Scores, iterations, tokenization, errors


def test_scores_argument_equals_scores_in_the_records():
    scores = {
        (pid, s, t, 0): score
        for pid, trajs in SPEC.items()
        for s, turns in enumerate(trajs)
        for t, (_, _, score) in enumerate(turns)
    }
    bare = records(with_scores=False)
    for mode in ("mucode", "mucode_r", "rft_lv", "multi_star2"):
        assert build_sft_data(mode, bare, scores=scores) == build_sft_data(mode, records())
    # Only the selected candidate's score counts: scores of other candidates are ignored.
    others = {**scores, **{(p, s, t, 1): -99.0 for (p, s, t, _) in scores}}
    assert build_sft_data("mucode", bare, scores=others) == build_sft_data("mucode", records())
    with pytest.raises(ValueError, match=r"needs the verifier score of .* turn index 0"):
        one_based = {(p, s, t + 1, c): v for (p, s, t, c), v in scores.items()}
        build_sft_data("mucode", bare, scores=one_based)


def test_merge_iterations():
    it1, _ = build_sft_data("multi_star", records(), iteration=1)
    it2, _ = build_sft_data("mucode", records(only={"p2"}))
    merged = merge_iterations([it1, it2])
    assert msgs(merged) == P1_KEPT_S1 + P1_KEPT_S5 + p2_relabeled("p2s1t3")
    assert [c["iteration"] for c in merged] == [1] * 3 + [2] * 5
    assert it2[0]["iteration"] is None  # inputs are not modified
    assert merge_iterations([merged, it2])[-1]["iteration"] == 2
    with pytest.raises(ValueError, match="not a list of conversations"):
        merge_iterations([{"messages": []}])


@pytest.fixture(scope="module")
def tok():
    from mucode_jax.data.tokenizer import build_tokenizer

    corpus = [
        f"Solve {p}. Feedback: {p} s{s} t{t} failed {p}s{s}t{t}"
        for p in ("p1", "p2")
        for s in range(6)
        for t in range(1, 4)
    ]
    return build_tokenizer(corpus * 4, 512)


def test_sft_examples_one_per_conversation_with_loss_on_the_target(tok):
    convs, _ = build_sft_data("mucode", records(only={"p2"}))
    examples, stats = R.sft_examples(convs, tok)
    expected = p2_relabeled("p2s1t3")
    assert stats["rows"] == stats["examples"] == len(expected) == 5
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    for ex, conv in zip(examples, expected):
        ids = np.concatenate([ex["inputs"][:1], ex["targets"]])
        assert tok.decode(ids) == tok.apply_chat_template(conv, tokenize=False)
        on = ex["targets"][ex["weights"] > 0]
        assert on[-1] == eot and tok.decode(on[:-1]) == "p2s1t3"
    # Already-expanded kept trajectories with kept_target="each" give exactly the examples that
    # sft.py's own prefix expansion makes from the raw trajectories.
    from mucode_jax.data.sft import sft_examples_from_conversations

    each, _ = build_sft_data("multi_star", records(), config=RelabelConfig(kept_target="each"))
    mine, _ = R.sft_examples(each, tok)
    raw = [r.messages for r in records() if r.success]
    theirs, _ = sft_examples_from_conversations(raw, tok, prefix_expansion=True, target="final")
    assert len(mine) == len(theirs) == 3
    for a, b in zip(mine, theirs):
        assert all(np.array_equal(a[k], b[k]) for k in ("inputs", "targets", "weights"))
    with pytest.raises(ValueError, match="already expanded"):
        R.sft_examples(convs, tok, prefix_expansion=True)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="Unknown data mode 'star'"):
        build_sft_data("star", records())
    with pytest.raises(ValueError, match=r"needs the verifier score of problem 'p1', search 0"):
        build_sft_data("mucode", records(with_scores=False))
    with pytest.raises(ValueError, match=r"needs the verifier score"):
        build_sft_data("rft_lv", records(with_scores=False))
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        RelabelConfig(top_k=0)
    with pytest.raises(ValueError, match="pool must be"):
        RelabelConfig(pool="best")
