"""SFT examples, verifier pairs, pipelines, bad input, metrics and writers."""

import json

import numpy as np
import pytest

from mucode_jax.data import pipeline
from mucode_jax.data import verifier_data as vd
from mucode_jax.data.sft import sft_examples_from_conversations, toy_trajectories
from mucode_jax.training import losses, writers


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from mucode_jax.data import tokenizer as tk
    from mucode_jax.data import toy

    return tk.build_tokenizer(toy.toy_corpus(n=64), 512, cache_dir=tmp_path_factory.mktemp("tok"))


def _conv(n_turns):
    msgs = [{"role": "user", "content": "write f"}]
    for t in range(n_turns):
        msgs.append({"role": "assistant", "content": f"def f(): return {t}"})
        if t < n_turns - 1:
            msgs.append({"role": "user", "content": "Feedback: wrong"})
    return msgs


def test_prefix_expansion_and_targets(tokenizer):
    convs = [
        _conv(3),
        {"messages": _conv(1), "problem_id": "p"},
        [{"role": "user", "content": "hi"}],
    ]
    ex, stats = sft_examples_from_conversations(
        convs, tokenizer, prefix_expansion=True, target="final"
    )
    assert stats["examples"] == 4 and stats["skipped_no_assistant"] == 1
    # Each prefix example trains on exactly one assistant span (content + <|eot_id|>).
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    for e in ex:
        assert e["weights"][-1] == 1 and e["targets"][-1] == eot
        assert np.array_equal(e["inputs"][1:], e["targets"][:-1])
        runs = np.diff(np.concatenate([[0], e["weights"], [0]]))
        assert (runs == 1).sum() == 1
    full, _ = sft_examples_from_conversations(
        [_conv(3)], tokenizer, prefix_expansion=False, target="all"
    )
    runs = np.diff(np.concatenate([[0], full[0]["weights"], [0]]))
    assert len(full) == 1 and (runs == 1).sum() == 3


def test_official_sft_does_not_train_the_end_of_turn_token(tokenizer):
    """The official TRL run sets pad_token = eos_token, so <|eot_id|> is never a label."""
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    kw = dict(prefix_expansion=True, target="final")
    ours, _ = sft_examples_from_conversations([_conv(2)], tokenizer, train_eos=True, **kw)
    official, _ = sft_examples_from_conversations([_conv(2)], tokenizer, train_eos=False, **kw)
    for a, b in zip(ours, official):
        on_eot = a["targets"] == eot
        assert a["weights"][on_eot].sum() == 1  # ours: the closing eot of the target turn
        assert b["weights"][on_eot].sum() == 0
        np.testing.assert_array_equal(a["weights"][~on_eot], b["weights"][~on_eot])
        assert b["weights"].sum() == a["weights"].sum() - 1 > 0
    from mucode_jax.training.config import sft_defaults

    assert sft_defaults().data.train_eos is False


def test_overflow_is_counted(tokenizer):
    long = [{"role": "user", "content": "x " * 200}, {"role": "assistant", "content": "y " * 50}]
    short = _conv(1)
    ex, stats = sft_examples_from_conversations(
        [long, short], tokenizer, max_length=40, overflow="drop"
    )
    assert stats["dropped_too_long"] == 1 and len(ex) == 1
    # Truncation that leaves no target token drops the example too; otherwise it is cut.
    ex, stats = sft_examples_from_conversations(
        [long, short], tokenizer, max_length=40, overflow="truncate"
    )
    assert stats["dropped_too_long"] == 1 and stats["truncated"] == 0
    medium = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y " * 100}]
    ex, stats = sft_examples_from_conversations([medium], tokenizer, max_length=30)
    assert stats["truncated"] == 1 and len(ex[0]["inputs"]) == 30


def test_malformed_rows_and_empty_dataset(tokenizer):
    with pytest.raises(ValueError, match="SFT row 2, message 1 is not a"):
        sft_examples_from_conversations([_conv(1), [{"text": "x"}]], tokenizer)
    with pytest.raises(ValueError, match="SFT row 1, message 1 has content of type int"):
        sft_examples_from_conversations([[{"role": "user", "content": 5}]], tokenizer)
    with pytest.raises(ValueError, match="dataset is empty"):
        pipeline.sft_dataset([], seq_len=8, rows=2)


def test_empty_after_skips_is_one_sentence(tokenizer, tmp_path):
    from mucode_jax.training.config import sft_defaults
    from mucode_jax.training.sft import train_sft

    with pytest.raises(ValueError, match="No SFT examples are left"):
        train_sft(
            sft_defaults(), [[{"role": "user", "content": "hi"}]], tmp_path, tokenizer=tokenizer
        )


def test_pipeline_is_deterministic_resumable_and_reshuffles_epochs():
    rng = np.random.default_rng(0)
    ex = []
    for i in range(20):
        n = int(rng.integers(3, 12))
        ex.append({"inputs": np.full(n, i + 1, np.int32), "targets": np.full(n, i + 1, np.int32),
                   "weights": np.ones(n, np.float32)})  # fmt: skip
    ds = pipeline.sft_dataset(ex, seq_len=16, rows=3, pack=True, seed=1, num_epochs=2)
    batches = list(ds)
    again = list(pipeline.sft_dataset(ex, seq_len=16, rows=3, pack=True, seed=1, num_epochs=2))
    assert all(np.array_equal(a["inputs"], b["inputs"]) for a, b in zip(batches, again))
    # Every example appears once per epoch, none lost to packing or the last partial batch.
    seen = np.concatenate([b["inputs"][b["segment_ids"] > 0] for b in batches])
    assert sum(len(e["inputs"]) for e in ex) * 2 == len(seen)
    for b in batches:
        assert b["inputs"].shape == (3, 16)
        # Positions restart at 0 in each segment.
        for row_seg, row_pos in zip(b["segment_ids"], b["positions"]):
            for s in set(row_seg[row_seg > 0].tolist()):
                assert row_pos[row_seg == s].tolist() == list(range((row_seg == s).sum()))
    it = iter(ds)
    next(it), next(it)
    state = json.loads(json.dumps(it.get_state()))
    rest = list(it)
    it2 = iter(ds)
    it2.set_state(state)
    assert all(np.array_equal(a["inputs"], b["inputs"]) for a, b in zip(rest, list(it2)))


def test_build_verifier_pairs():
    samples = vd.verifier_samples_from_trajectories(toy_trajectories(12, seed=0, per_problem=4))
    assert all(
        s["prompt"].startswith("Write") for s in samples
    )  # conditioned on the first prompt only
    pairs, stats = vd.build_verifier_pairs(samples, pairs_per_problem=32, seed=0)
    by_problem = {}
    for p in pairs:
        by_problem.setdefault(p["problem_id"], []).append(p)
    assert all(len(v) == 32 for v in by_problem.values())
    assert stats["problems"] == 12 and stats["dropped_one_sided"] == 12 - len(by_problem)
    labels = {(s["problem_id"], s["response"]): (s["label"], s["final"]) for s in samples}
    for p in pairs:
        assert labels[(p["problem_id"], p["chosen"])] == (1, True)
    # Non-final correct turns count as negatives only with the switch on.
    s = [
        {"problem_id": "a", "prompt": "x", "response": "good-early", "label": 1, "final": False},
        {"problem_id": "a", "prompt": "x", "response": "good", "label": 1, "final": True},
    ]
    assert vd.build_verifier_pairs(s, seed=0)[1]["pairs"] == 32
    assert (
        vd.build_verifier_pairs(s, seed=0, label_non_final_negative=False)[1]["dropped_one_sided"]
        == 1
    )
    # Aggregation across iterations keeps each iteration's pairs.
    p1, _ = vd.build_verifier_pairs([dict(x, iteration=1) for x in samples], seed=1)
    assert len(vd.aggregate_verifier_pairs(pairs, p1)) == len(pairs) + len(p1)


def test_metrics():
    s = np.array([0.1, 0.4, 0.35, 0.8])
    y = np.array([0, 0, 1, 1])
    assert losses.auc(s, y) == pytest.approx(0.75)
    assert losses.pairwise_accuracy(
        np.array([1.0, 0.0, 2.0]), np.array([0.0, 1.0, 2.0])
    ) == pytest.approx(0.5)
    cal = losses.calibration(np.array([10.0, -10.0]), np.array([1, 0]))
    assert cal["ece"] < 1e-3 and cal["brier"] < 1e-6


def test_metrics_log_truncates_on_resume_and_tensorboard_roundtrip(tmp_path):
    log = writers.MetricsLog(tmp_path / "metrics.jsonl")
    for s in range(1, 6):
        log.write(s, {"loss": float(s)})
    log.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "lo')  # a line cut by SIGKILL
    log = writers.MetricsLog(tmp_path / "metrics.jsonl", resume_step=3)
    log.write(4, {"loss": 40.0})
    log.close()
    assert [(r["step"], r["loss"]) for r in writers.read_metrics(tmp_path / "metrics.jsonl")] == [
        (1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)
    ]  # fmt: skip
    tb = writers.TensorBoardWriter(tmp_path / "tb")
    tb.scalars(7, {"loss": 1.5, "lr": np.float32(0.25), "skip": "text"})
    tb.close()
    (f,) = (tmp_path / "tb").glob("events.out.tfevents.*")
    assert writers.read_tensorboard_scalars(f) == [(7, "loss", 1.5), (7, "lr", 0.25)]
    # A resumed run starts its new file with SessionLog(START) at the first new step.
    tb = writers.TensorBoardWriter(tmp_path / "tb2", resume_step=3)
    tb.scalars(4, {"loss": 2.0})
    tb.close()
    (f,) = (tmp_path / "tb2").glob("events.out.tfevents.*")
    from tensorboardX.proto import event_pb2

    events, data, pos = [], f.read_bytes(), 0
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 8], "little")
        events.append(event_pb2.Event.FromString(data[pos + 12 : pos + 12 + n]))
        pos += 16 + n
    starts = [e.step for e in events if e.HasField("session_log")]
    assert starts == [4] and writers.read_tensorboard_scalars(f) == [(4, "loss", 2.0)]


def test_verifier_samples_from_rollout_records():
    from mucode_jax.execution.results import ExecResult
    from mucode_jax.types import Candidate, Trajectory, Turn

    ok, bad = ExecResult("passed"), ExecResult("wrong_answer")
    rec = Trajectory(
        "p",
        "toy",
        0,
        0,
        (
            Turn("x", (Candidate("a", "a", bad, bad),), feedback="no"),
            Turn("Feedback: no", (Candidate("z", "z", ok, bad), Candidate("b", "b", ok, ok)), 1),
        ),
        system="You write Python.",  # x is the first user prompt, not the first message
    )
    s = vd.verifier_samples_from_trajectories([rec], iteration=2)
    assert [(x["prompt"], x["response"], x["label"], x["final"], x["iteration"]) for x in s] == [
        ("x", "a", 0, False, 2),
        ("x", "b", 1, True, 2),
    ]


def test_a_process_keeps_its_rows_of_the_global_batches():
    """keep_rows selects rows of the global batch: the same batches whatever the process count."""
    rng = np.random.RandomState(0)
    ex = [
        {
            "inputs": rng.randint(1, 50, n).astype(np.int32),
            "targets": rng.randint(1, 50, n).astype(np.int32),
            "weights": np.ones(n, np.float32),
        }
        for n in rng.randint(3, 12, size=23)
    ]
    kw = dict(seq_len=16, rows=4, pack=True, seed=3, num_epochs=2)
    whole = list(pipeline.sft_dataset(ex, **kw))
    mine = list(pipeline.sft_dataset(ex, keep_rows=[1, 3], **kw))
    assert len(mine) == len(whole) > 1
    for a, b in zip(whole, mine):
        for k in pipeline.SFT_KEYS:
            np.testing.assert_array_equal(a[k][[1, 3]], b[k])
    assert whole[-1]["weights"].sum() > 0 and whole[-1]["weights"][-1].sum() == 0  # padded
    with pytest.raises(ValueError, match="keep_rows must be row indices in"):
        pipeline.sft_dataset(ex, keep_rows=[4], **kw)
