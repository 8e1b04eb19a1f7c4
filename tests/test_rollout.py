"""The rollout engine end to end: scripted policies on real problems, resume, BoN selection."""

from __future__ import annotations

import concurrent.futures as cf
import json

import pytest

from mucode_jax import prompts as P
from mucode_jax import records as records_io
from mucode_jax import rollout
from mucode_jax.data.problems import load_problems
from mucode_jax.execution import Executor
from mucode_jax.execution.feedback import render
from mucode_jax.execution.results import ExecResult, TestResult
from mucode_jax.summary import summarize
from mucode_jax.types import Problem, SearchSettings, Trajectory

T = 3


@pytest.fixture(scope="module")
def problems(shared_data):
    mbpp = load_problems("mbpp", path=shared_data / "mbpp" / "mbpp.jsonl", split="test")[:2]
    cc = load_problems(
        "codecontests", path=shared_data / "codecontests" / "codecontests_train_sample100.jsonl"
    )[:2]
    return mbpp + cc


@pytest.fixture(scope="module")
def executor():
    with Executor(workers=2) as ex:
        yield ex


def fence(code: str) -> str:
    return f"Here is my solution.\n```python\n{code}\n```\n"


class ScriptedPolicy:
    """Another problem's reference first (wrong), the problem's reference after feedback."""

    def __init__(self, problems, *, fail_after: int | None = None):
        self.by_prompt = {P.first_turn_prompt(p): i for i, p in enumerate(problems)}
        self.problems = problems
        self.fail_after = fail_after
        self.calls = 0
        self.conversations = []

    def complete(self, conversations, *, seeds):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls += 1
        out = []
        for conv in conversations:
            self.conversations.append([dict(m) for m in conv])
            i = self.by_prompt[conv[0]["content"]]
            if len(conv) == 1:
                code = self.problems[(i + 1) % len(self.problems)].reference
            else:
                code = self.problems[i].reference
            out.append(rollout.Completion(fence(code), tuple(range(10)), tuple(range(20))))
        return out


def _strip_timing(obj):
    """Drops what varies between runs: timings, and a stdio suite's program-level stdout
    (which holds the output of whichever case the executor finished last)."""
    if isinstance(obj, Trajectory):
        obj = obj.to_json()
    if isinstance(obj, dict):
        return {
            k: _strip_timing(v)
            for k, v in obj.items()
            if k not in ("cpu_seconds", "wall_seconds", "cpu_limit", "stdout")
        }
    if isinstance(obj, list):
        return [_strip_timing(v) for v in obj]
    return obj


def test_scripted_policy_turns_feedback_labels_metrics(problems, executor, tmp_path):
    cfg = rollout.SearchConfig(max_turns=T, batch_size=4, seed=3)
    policy = ScriptedPolicy(problems)
    out = tmp_path / "r.jsonl"
    records = rollout.run_search(problems, policy, executor, cfg, out)
    assert sorted(r.problem_id for r in records) == sorted(p.id for p in problems)
    for r in records:
        p = next(q for q in problems if q.id == r.problem_id)
        assert len(r.turns) == 2 and r.labels == (False, True) and r.success
        t1, t2 = r.turns
        assert not t1.chosen.public_passed and t2.chosen.public_passed
        assert (
            t1.candidates[0].code
            == problems[(problems.index(p) + 1) % len(problems)].reference.strip()
        )
        assert t2.candidates[0].code == p.reference.strip()
        assert t2.candidates[0].private.verdict == "passed"
        assert t1.candidates[0].tokens == tuple(range(20))
        assert t1.prompt_ids == tuple(range(10))
        expected = render(t1.candidates[0].public, granularity="failed", max_chars=2000)
        assert t1.feedback == expected and expected
        assert t2.feedback is None
        roles = [m["role"] for m in r.messages]
        assert roles == ["user", "assistant", "user", "assistant"]
        assert r.messages[2]["content"] == "Feedback: " + expected.strip()
        assert t2.user == r.messages[2]["content"]
        assert r.messages[0]["content"] == r.prompt == P.first_turn_prompt(p)
        assert r.settings == SearchSettings("random", 1, "failed/mucode/2000", "official")
        assert r.seed == 3
    # The file holds exactly the returned records.
    lines = records_io.read_trajectories(out)
    assert _strip_timing(sorted(lines, key=lambda r: r.problem_id)) == _strip_timing(
        sorted(records, key=lambda r: r.problem_id)
    )
    m = summarize(records, problems, cfg, pass_k=(1,), n_boot=100)
    assert [b["mean"] for b in m["bon"]] == [0.0, 1.0, 1.0]
    assert m["turn1_pass_at_k"]["1"]["mean"] == 0.0
    assert m["per_turn"]["active"] == [1.0, 1.0, 0.0]
    assert m["per_turn"]["conditional"] == [0.0, 1.0, None]


def test_resume_after_crash_gives_every_search_once(problems, executor, tmp_path):
    cfg = rollout.SearchConfig(num_searches=2, max_turns=T, batch_size=1, seed=0)
    full = rollout.run_search(problems, ScriptedPolicy(problems), executor, cfg, tmp_path / "a")
    out = tmp_path / "b.jsonl"
    # 8 first turns, then second turns as results come back; crash during the second turns.
    crashed = ScriptedPolicy(problems, fail_after=14)
    with pytest.raises(RuntimeError, match="simulated crash"):
        rollout.run_search(problems, crashed, executor, cfg, out)
    partial = out.read_text().splitlines(keepends=True)
    assert len(partial) < len(problems) * 2
    with open(out, "a") as f:  # a crash in the middle of a write
        line = json.dumps(full[0].to_json())
        f.write(line[: len(line) // 2])
    assert len(rollout.read_finished(out)) == len(partial)
    assert out.read_text() == "".join(partial)  # the torn line is cut off
    again = rollout.run_search(problems, ScriptedPolicy(problems), executor, cfg, out)
    keys = [r.key for r in again]
    assert len(keys) == len(set(keys)) == len(problems) * 2
    lines = records_io.read_trajectories(out)
    assert sorted(r.key for r in lines) == sorted(keys)

    def by_key(rs):
        return _strip_timing(sorted(rs, key=lambda r: r.key))

    assert by_key(again) == by_key(full)


# --- Best-of-N selection with a fake executor and scorer ------------------------------------

# Candidate j: (public tests passed out of 2, private passed, verifier score).
CANDS = [(0, True, 0.9), (2, False, 0.1), (2, True, 0.5), (1, True, 0.95)]


class FakeExecutor:
    """Results decided by the program text ``cand = j``; futures already done."""

    def __init__(self):
        self.submitted = 0

    def submit(self, code, tests, **kw):
        self.submitted += 1
        j = int(code.split("=")[1])
        pub, priv, _ = CANDS[j]
        if tests.get("tag") == "public":
            verdicts = ["passed"] * pub + ["wrong_answer"] * (2 - pub)
        else:
            verdicts = ["passed" if priv else "wrong_answer"]
        tr = tuple(TestResult(i, v, input=f"t{i}") for i, v in enumerate(verdicts))
        res = ExecResult(verdict=next((v for v in verdicts if v != "passed"), "passed"), tests=tr)
        f = cf.Future()
        f.set_result(res)
        return f


class CandidatePolicy:
    def complete(self, conversations, *, seeds):
        return [
            rollout.Completion(fence(f"cand = {j % len(CANDS)}")) for j in range(len(conversations))
        ]


class FakeScorer:
    calls = 0

    def score(self, prompts, completions):
        FakeScorer.calls += 1
        return [CANDS[int(P.extract_code(c).split("=")[1])][2] for c in completions]


def toy_problems(n):
    pub = {"kind": "assert", "setup": "", "tests": ["assert True"], "tag": "public"}
    priv = {"kind": "assert", "setup": "", "tests": ["assert True"], "tag": "private"}
    return [Problem(f"toy/{i}", "toy", f"Task {i}.", pub, priv) for i in range(n)]


def _chosen(mode, tmp_path, seed=0, n=1, searches=1):
    cfg = rollout.SearchConfig(
        num_searches=searches, num_candidates=len(CANDS), max_turns=1, select=mode, seed=seed
    )
    recs = rollout.run_search(
        toy_problems(n),
        CandidatePolicy(),
        FakeExecutor(),
        cfg,
        tmp_path / f"{mode}_{seed}.jsonl",
        scorer=FakeScorer(),
    )
    recs.sort(key=lambda r: r.key)
    return [r.turns[0].selected for r in recs], recs


def test_bon_selection_modes(tmp_path):
    picks, recs = _chosen("pt", tmp_path, n=8)
    assert set(picks) <= {1, 2} and len(set(picks)) == 2  # ties between public passes: random
    assert all(r.turns[0].chosen.public_passed for r in recs)
    assert [c.score for c in recs[0].turns[0].candidates] == [c[2] for c in CANDS]
    FakeScorer.calls = 0
    picks, recs = _chosen("lv", tmp_path, n=3)
    assert FakeScorer.calls == 1  # one batched verifier call for the 3 x 4 candidates
    assert picks == [3, 3, 3] and [r.labels for r in recs] == [(False,)] * 3
    picks, recs = _chosen("pt_lv", tmp_path, n=3)
    assert picks == [2, 2, 2] and [r.labels for r in recs] == [(True,)] * 3
    a, _ = _chosen("random", tmp_path, seed=1, n=4, searches=4)
    b, _ = _chosen("random", tmp_path / "again", seed=1, n=4, searches=4)
    c, _ = _chosen("random", tmp_path, seed=2, n=4, searches=4)
    assert a == b and a != c and len(set(a)) > 1
    with pytest.raises(ValueError, match="verifier"):
        rollout.run_search(
            toy_problems(1),
            CandidatePolicy(),
            FakeExecutor(),
            rollout.SearchConfig(num_candidates=2, select="lv"),
            tmp_path / "x.jsonl",
        )


def test_skip_failed_never_reselects_a_program_that_failed(tmp_path):
    """The policy offers the same 4 programs every turn; the verifier likes #3 best, which
    fails its public tests. The official search resubmits it every turn; ``skip_failed``
    moves on to the next best (#0, failing too) and then to #2, which passes."""

    def picks(skip, select="lv"):
        cfg = rollout.SearchConfig(
            num_candidates=len(CANDS), max_turns=3, select=select, skip_failed=skip
        )
        out = tmp_path / f"{select}_{skip}.jsonl"
        (rec,) = rollout.run_search(
            toy_problems(1), CandidatePolicy(), FakeExecutor(), cfg, out, scorer=FakeScorer()
        )
        return [t.selected for t in rec.turns], rec

    assert picks(False)[0] == [3, 3, 3]
    chosen, rec = picks(True)
    assert chosen == [3, 0, 2] and rec.labels[-1]
    assert rec.settings.prompt.endswith("/skip_failed")
    # When every candidate already failed, the selection mode picks among all of them.
    one = [CANDS[3]]
    orig = CANDS[:]
    CANDS[:] = one
    try:
        assert picks(True, "random")[0] == [0, 0, 0]
    finally:
        CANDS[:] = orig


def test_config_errors():
    with pytest.raises(ValueError, match="at least 1"):
        rollout.SearchConfig(max_turns=0)
    with pytest.raises(ValueError, match="selection mode"):
        rollout.SearchConfig(select="best")


# --- asynchronous overlap ---------------------------------------------------------------------


class SlowExecutor:
    """Futures resolved only when the test says so; records what was pending at each call."""

    def __init__(self):
        self.futures = []
        self.resolved = False

    def submit(self, code, tests, **kw):
        f = cf.Future()
        self.futures.append(f)
        if self.resolved:
            self.resolve_all()
        return f

    def resolve_all(self):
        self.resolved = True
        for f in self.futures:
            if not f.done():
                f.set_result(ExecResult(verdict="passed", tests=(TestResult(0, "passed"),)))


def test_generation_overlaps_execution(tmp_path):
    ex = SlowExecutor()
    seen = []

    class Policy:
        def complete(self, conversations, *, seeds):
            seen.append(sum(not f.done() for f in ex.futures))
            if len(seen) == 3:  # the first batches were all generated before any result
                ex.resolve_all()
            return [rollout.Completion(fence("x = 1")) for _ in conversations]

    cfg = rollout.SearchConfig(max_turns=2, batch_size=2)
    recs = rollout.run_search(toy_problems(6), Policy(), ex, cfg, tmp_path / "o.jsonl")
    assert len(recs) == 6 and seen[:3] == [0, 4, 8]
    assert all(len(r.turns) == 1 for r in recs)


# --- a real model: no recompilation after warm-up ---------------------------------------------


def tiny_model_policy(corpus, *, seed, max_new_tokens, batch, wrap=lambda sampler: sampler):
    """A random tiny Llama with a local tokenizer, as a `ModelPolicy` at temperature 1."""
    from flax import nnx

    from mucode_jax.data.tokenizer import build_tokenizer, eos_token_ids
    from mucode_jax.models.llama import Llama, LlamaConfig
    from mucode_jax.sampling import Sampler
    from mucode_jax.sampling.methods import make_method

    tok = build_tokenizer(corpus, vocab_size=300)
    model = Llama(LlamaConfig.tiny(vocab_size=len(tok)), rngs=nnx.Rngs(seed))
    sampler = Sampler(
        model,
        max_new_tokens=max_new_tokens,
        eos_ids=eos_token_ids(tok),
        prompt_buckets=(256,),
        batch_buckets=(batch,),
        pad_id=tok.pad_token_id or 0,
    )
    sampler = wrap(sampler)
    return (
        tok,
        model,
        sampler,
        rollout.ModelPolicy(sampler, tok, method=make_method(temperature=1.0)),
    )


def test_model_policy_does_not_recompile(tmp_path):
    corpus = [
        "def add(a, b):\n    return a + b\n",
        "Write a function. Feedback: Code passed all tests ```python\nx = 1\n```",
    ] * 20
    _, _, sampler, policy = tiny_model_policy(corpus, seed=0, max_new_tokens=6, batch=4)
    problems = toy_problems(2)
    cfg = rollout.SearchConfig(num_searches=2, max_turns=3, batch_size=4)
    ex = FakeNoCode()
    recs = rollout.run_search(problems, policy, ex, cfg, tmp_path / "m1.jsonl")
    assert [len(r.turns) for r in recs] == [3] * 4
    warm = sampler.num_traces
    assert warm > 0
    cfg2 = rollout.SearchConfig(num_searches=2, max_turns=3, batch_size=4, seed=7)
    recs = rollout.run_search(problems, policy, ex, cfg2, tmp_path / "m2.jsonl")
    assert [len(r.turns) for r in recs] == [3] * 4
    assert sampler.num_traces == warm
    assert all(0 < len(t.prompt_ids) <= 256 for r in recs for t in r.turns)  # all sampled
    cands = [c for r in recs for t in r.turns for c in t.candidates]
    assert all(1 <= len(c.tokens) <= 6 for c in cands)


def test_a_search_replays_exactly_whatever_shares_its_batch(tmp_path):
    corpus = [
        "def add(a, b):\n    return a + b\n",
        "Write a function. Feedback: Code passed all tests ```python\nx = 1\n```",
    ] * 20
    _, _, _, policy = tiny_model_policy(corpus, seed=0, max_new_tokens=6, batch=8)
    problems = toy_problems(3)
    runs = []
    for batch_size in (2, 8):  # different batches: 1 search per call, then 4 (x 2 candidates)
        cfg = rollout.SearchConfig(
            num_searches=2, num_candidates=2, max_turns=3, batch_size=batch_size, seed=5
        )
        recs = rollout.run_search(
            problems, policy, FakeNoCode(), cfg, tmp_path / f"b{batch_size}.jsonl"
        )
        runs.append(
            {
                (r.problem_id, r.search, t, j): c.tokens
                for r in recs
                for t, turn in enumerate(r.turns)
                for j, c in enumerate(turn.candidates)
            }
        )
    assert len(runs[0]) == 3 * 2 * 3 * 2
    assert runs[0] == runs[1]
    assert len(set(runs[0].values())) > len(runs[0]) // 2  # the seeds do differ per candidate


class FakeNoCode(FakeExecutor):
    def submit(self, code, tests, **kw):
        f = cf.Future()
        f.set_result(ExecResult(verdict="wrong_answer", tests=(TestResult(0, "wrong_answer"),)))
        return f


def test_model_policy_gives_over_long_prompts_an_empty_completion():
    from mucode_jax.data.tokenizer import build_tokenizer
    from mucode_jax.sampling.sampler import SampleOutput

    tok = build_tokenizer(["def f():\n    return 1\n"] * 20, vocab_size=300)
    short = [{"role": "user", "content": "hi"}]
    long = [{"role": "user", "content": "x " * 200}]
    limit = len(P.render(tok, short)) + 1

    class FakeSampler:
        prompt_buckets = (limit,)
        eos_ids = (tok.eos_token_id,)

        def sample(self, prompts, **kw):
            assert all(len(p) <= limit for p in prompts)
            toks = [[tok.encode("ok", add_special_tokens=False)[0], tok.eos_token_id]] * len(
                prompts
            )
            lps = [[-0.5, -0.25]] * len(prompts)
            return SampleOutput(toks, lps, lps, None, None)

    out = rollout.ModelPolicy(FakeSampler(), tok).complete([long, short, long], seeds=[1, 2, 3])
    assert [len(c.tokens) for c in out] == [0, 2, 0]
    assert [len(c.prompt_ids) for c in out] == [len(P.render(tok, m)) for m in (long, short, long)]
    assert out[0].text == "" and out[1].text != ""


class SpySampler:
    """A real `Sampler` that records what it was given and what it returned."""

    def __init__(self, sampler):
        self.sampler = sampler
        self.prompt_buckets = sampler.prompt_buckets
        self.eos_ids = sampler.eos_ids
        self.returned = {}  # prompt ids -> [(tokens, logprobs, sampling_logprobs), ...]

    def sample(self, prompts, **kw):
        out = self.sampler.sample(prompts, **kw)
        for p, t, lp, slp in zip(prompts, out.tokens, out.logprobs, out.sampling_logprobs):
            self.returned.setdefault(tuple(p), []).append((tuple(t), tuple(lp), tuple(slp)))
        return out


def test_model_policy_rollout_keeps_sampled_ids_and_logprobs(tmp_path, monkeypatch):
    import jax
    import numpy as np

    from mucode_jax.data.sft import token_examples

    corpus = ["Task 1. ```python\nx = 1\n``` Feedback: failed"] * 20
    tok, model, sampler, policy = tiny_model_policy(
        corpus, seed=1, max_new_tokens=5, batch=8, wrap=SpySampler
    )
    cfg = rollout.SearchConfig(num_candidates=2, max_turns=2, batch_size=8)
    out = tmp_path / "m.jsonl"
    trajs = rollout.run_search(toy_problems(2), policy, FakeNoCode(), cfg, out)
    assert records_io.read_trajectories(out) == trajs  # the ids survive the JSONL codec
    n = 0
    for traj in trajs:
        for turn in traj.turns:
            returned = sampler.returned[turn.prompt_ids]  # the prompt the sampler was given
            for cand in turn.candidates:
                assert (cand.tokens, cand.logprobs, cand.sampling_logprobs) in returned
                assert len(cand.tokens) == len(cand.logprobs) >= 1
                n += 1
    assert n == 2 * 2 * 2

    # Training on the stored ids never encodes text: the tokenizer may as well be gone.
    def no_encoding(*a, **k):
        raise AssertionError("the stored text was encoded again")

    monkeypatch.setattr(type(tok), "apply_chat_template", no_encoding)
    monkeypatch.setattr(type(tok), "encode", no_encoding)
    examples = token_examples(trajs)
    assert len(examples) == n
    for ex in examples:
        logits = model(np.asarray(ex["inputs"])[None])[0]
        logp = jax.nn.log_softmax(logits.astype("float32"), axis=-1)
        mine = np.take_along_axis(np.asarray(logp), ex["targets"][:, None], axis=-1)[:, 0]
        on = ex["weights"] > 0
        np.testing.assert_allclose(mine[on], ex["logprobs"][on], atol=2e-4)


def test_feedback_body_and_wrapper_reach_the_rollout(tmp_path):
    cfg = rollout.SearchConfig(max_turns=2, feedback=dict(body="rlef", wrapper="rlef"))
    (traj,) = rollout.run_search(
        toy_problems(1), CandidatePolicy(), FakeNoCode(), cfg, tmp_path / "f.jsonl"
    )
    t1, t2 = traj.turns
    from mucode_jax.execution import feedback

    assert t1.feedback == feedback.rlef(t1.chosen.public, max_chars=2000)
    assert t1.feedback.startswith("Your code failed the following tests:")
    assert t2.user == P.rlef_feedback_message(t1.feedback)["content"]
    assert traj.settings.feedback == "rlef/rlef/2000"
    with pytest.raises(ValueError, match="Unknown feedback body 'nice'"):
        rollout.SearchConfig(feedback=dict(body="nice"))


def test_a_system_message_does_not_change_the_first_prompt(tmp_path):
    cfg = rollout.SearchConfig(max_turns=2, system="You write Python.")
    (traj,) = rollout.run_search(
        toy_problems(1), CandidatePolicy(), FakeNoCode(), cfg, tmp_path / "s.jsonl"
    )
    assert traj.system == "You write Python." and traj.messages[0]["role"] == "system"
    assert traj.prompt == P.first_turn_prompt(toy_problems(1)[0]) == traj.messages[1]["content"]
    assert traj.context(1)[-1]["content"] == traj.turns[1].user


def test_a_record_of_another_version_is_refused_in_one_sentence(tmp_path):
    path = tmp_path / "old.jsonl"
    path.write_text(json.dumps({"problem_id": "p", "search": 0, "messages": []}) + "\n")
    with pytest.raises(ValueError, match=r"old.jsonl holds records of version None, but .* 1;"):
        records_io.read_trajectories(path)
    scores = tmp_path / "scores.jsonl"
    records_io.write_scores(scores, {("p", 0, 1, 2): 0.5})
    assert records_io.read_scores(scores) == {("p", 0, 1, 2): 0.5}
    with pytest.raises(ValueError, match=r"scores.jsonl holds 'score' records, not 'trajectory'"):
        records_io.read_trajectories(scores)


def test_a_damaged_or_wrong_file_is_refused_and_left_as_it_was(tmp_path):
    path = tmp_path / "s.jsonl"
    cfg = rollout.SearchConfig(max_turns=1)
    trajs = rollout.run_search(toy_problems(3), CandidatePolicy(), FakeNoCode(), cfg, path)
    good = path.read_bytes()
    lines = good.splitlines(keepends=True)
    damaged = lines[0] + b"{not json\n" + lines[2]
    path.write_bytes(damaged)
    for repair in (False, True):
        with pytest.raises(ValueError, match=r"s.jsonl:2 is not a JSON trajectory record"):
            records_io.read_trajectories(path, repair=repair)
        assert path.read_bytes() == damaged
    text = tmp_path / "README.md"  # a wrong --search path: refused, never cut to nothing
    text.write_text("# title\n\nsome prose\n")
    with pytest.raises(ValueError, match=r"README.md:1 is not a JSON"):
        records_io.read_trajectories(text)
    assert text.read_text() == "# title\n\nsome prose\n"

    torn = good + lines[0][:20]  # a writer killed mid-line: a reader skips it and changes nothing
    path.write_bytes(torn)
    assert records_io.read_trajectories(path) == trajs and path.read_bytes() == torn
    assert records_io.read_trajectories(path, repair=True) == trajs  # a writer cuts it
    assert path.read_bytes() == good
    path.write_bytes(good[:-1])  # complete, but its newline is missing: a writer restores it
    assert records_io.read_trajectories(path, repair=True) == trajs and path.read_bytes() == good


def test_official_protocol_reaches_the_rollout(shared_data, executor, tmp_path):
    """Official prompt form, extraction and feedback body: the first prompt is the official
    text, the program the first ```python block, the feedback the script's raw stderr (MBPP)
    or the ``[Error]`` line (CodeContests), wrapped as "Feedback: ..."."""
    from mucode_jax.execution import feedback as F

    mbpp = load_problems(
        "mbpp",
        path=shared_data / "mbpp" / "mbpp.jsonl",
        split="train",
        public_tests="all",
        challenge_tests=False,
        preamble="official",
    )[:2]
    cc = load_problems(
        "codecontests",
        path=shared_data / "codecontests" / "codecontests_train_sample100.jsonl",
        generated_tests=False,
        preamble="official",
    )[:2]
    problems = mbpp + cc
    cfg = rollout.SearchConfig(
        max_turns=T,
        batch_size=4,
        feedback=dict(body="official"),
        prompt_form="official",
        extraction="official",
    )
    policy = ScriptedPolicy(problems)
    policy.by_prompt = {P.first_turn_prompt(p, form="official"): i for i, p in enumerate(problems)}
    records = rollout.run_search(problems, policy, executor, cfg, tmp_path / "o.jsonl")
    assert len(records) == 4
    for r in records:
        p = next(q for q in problems if q.id == r.problem_id)
        assert r.labels == (False, True)
        t1 = r.turns[0]
        assert r.prompt == P.first_turn_prompt(p, form="official")
        assert t1.feedback == F.official(t1.chosen.public, t1.chosen.code, p.public_tests)
        assert t1.feedback.startswith("[Error] " if p.dataset == "codecontests" else "Traceback")
        assert r.messages[2]["content"] == "Feedback: " + t1.feedback.strip()
        assert r.settings.prompt == "official/form=official/extract=official"
        assert r.settings.feedback == "official/mucode/2000"
