"""One process of a test job: ``python job.py KIND WORKDIR '{"overrides": ...}'``.

KIND is ``sft``, ``verifier``, ``sample``, ``score``, ``store``, ``rollout`` or
``warm_start``. Started once with 8 CPU devices, or as one of
several processes with ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` /
``JAX_PROCESS_ID`` and 4 devices each (`tests/distributed/procs.py`). Prints one line
``RESULT {json}``: losses and gradient norms read back from ``metrics.jsonl``, or the
sampled tokens, or ``{"error": ...}`` for a one-sentence failure.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "training"))

MESH = (("data", 2), ("fsdp", 2), ("tensor", 2))


def _apply(c, overrides):
    for k, v in overrides.items():
        node = c
        *parents, leaf = k.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = tuple(tuple(x) for x in v) if k in ("mesh", "rules") else v
    return c


def sft(workdir, overrides):
    from run_sft_job import tiny_sft_config

    from mucode_jax.training import inputs
    from mucode_jax.training.sft import train_sft

    drop = overrides.pop("_drop_conversations", 0)  # this process's data differs (a test)
    config = tiny_sft_config(mesh=MESH)
    config = _apply(config, overrides)
    tok = inputs.tokenizer_from_config(config)
    conversations = inputs.sft_conversations_from_config(config)
    conversations = conversations[: len(conversations) - drop]
    result = train_sft(config, conversations, workdir, tokenizer=tok)
    return {"num_steps": result.num_steps, "hf": str(result.hf_path)}


def verifier(workdir, overrides):
    from configs.verifier_tiny import get_config
    from mucode_jax.training import inputs
    from mucode_jax.training.verifier import train_verifier

    c = get_config()
    c.data.num_problems = 12
    c.data.max_length = 96
    c.data.pairs_per_problem = 4
    c.batch_size = 8
    c.max_steps = 3
    c.export_hf = False
    c.progress = False
    c.checkpoint.async_save = False
    c.mesh = MESH
    c = _apply(c, overrides)
    tok = inputs.tokenizer_from_config(c)
    result = train_verifier(c, inputs.verifier_rows_from_config(c), workdir, tokenizer=tok)
    return {
        "num_steps": result.num_steps,
        "eval": {k: v for k, v in result.last_metrics.items() if "eval" in k},
    }


def sample(workdir, overrides):
    import numpy as np
    from flax import nnx

    from mucode_jax import sharding as sh
    from mucode_jax.models.llama import Llama, LlamaConfig
    from mucode_jax.sampling import Sampler, Temperature

    cfg = LlamaConfig.tiny(initializer_range=0.2, eos_token_id=(7, 9))
    mesh = sh.make_mesh(MESH)
    model = sh.create_sharded(lambda: Llama(cfg, rngs=nnx.Rngs(0)), mesh)
    sampler = Sampler(model, mesh=mesh, max_new_tokens=12, max_prompt_length=32, max_batch_size=16)
    rng = np.random.RandomState(0)
    prompts = [rng.randint(10, cfg.vocab_size, n).tolist() for n in (3, 17, 9, 1, 30, 12, 5, 20)]
    greedy = sampler.sample(prompts, seed=1)
    temp = sampler.sample(prompts, seed=1, method=Temperature(0.9))
    again = sampler.sample(prompts, seed=1)  # compiled already: no barrier, no trace
    out = {"greedy": greedy.tokens, "temperature": temp.tokens, "logprobs": greedy.logprobs,
           "again": again.tokens, "traces": sampler.num_traces}  # fmt: skip
    return {**out, **score(workdir, overrides)}


def score(workdir, overrides):
    import numpy as np
    from flax import nnx

    from mucode_jax import sharding as sh
    from mucode_jax.models.llama import LlamaConfig
    from mucode_jax.models.verifier import Verifier
    from mucode_jax.scoring import VerifierScorer

    cfg = LlamaConfig.tiny(initializer_range=0.2)
    mesh = sh.make_mesh(MESH)
    model = sh.create_sharded(lambda: Verifier(cfg, rngs=nnx.Rngs(0)), mesh)
    scorer = VerifierScorer(model, tokenizer=None, max_length=64, max_batch_size=16, mesh=mesh)
    rng = np.random.RandomState(0)
    seqs = [rng.randint(10, cfg.vocab_size, n).tolist() for n in (3, 17, 9, 1, 30, 12, 64, 40)]
    return {"scores": scorer.score_ids(seqs).tolist()}


def store(workdir, overrides):
    from mucode_jax import multihost
    from mucode_jax.algorithms.artifacts import Store

    calls = []

    def fn(out):
        calls.append(out)
        if multihost.is_main():  # a stage writes its host files from process 0
            (out / "x.txt").write_text("written by process 0")

    st = Store(workdir / "artifacts")
    a = st.run("stage", {"cfg": overrides.get("cfg", 1)}, fn)
    text = (a.path / "x.txt").read_text()  # every process reads the published folder
    again = st.run("stage", {"cfg": overrides.get("cfg", 1)}, fn)
    return {"key": a.key, "text": text, "reused": again.reused, "calls": len(calls)}


def rollout(workdir, overrides):
    """Multi-turn BoN (``lv``) of 6 toy problems with a scripted policy and scorer on a real
    executor. The policy and the scorer stand for collective calls: they record a hash of
    every call's inputs, which must be the same on every process. Process 1's executor
    answers late (random delays), so the processes' turns finish in different rounds."""
    import concurrent.futures as cf
    import hashlib
    import random
    import threading

    import jax

    from mucode_jax import prompts as P
    from mucode_jax import records
    from mucode_jax import rollout as R
    from mucode_jax.data import toy
    from mucode_jax.execution import Executor

    problems = toy.toy_problems("train", 6, seed=0)
    by_prompt = {P.first_turn_prompt(p): p for p in problems}
    calls = []

    def digest(x):
        return hashlib.sha256(json.dumps(x).encode()).hexdigest()[:12]

    class Policy:
        def complete(self, conversations, *, seeds):
            calls.append(["policy", digest([conversations, list(seeds)])])
            out = []
            for conv, seed in zip(conversations, seeds):
                code, _, _ = toy.noisy_solution(by_prompt[conv[0]["content"]], random.Random(seed))
                out.append(R.Completion(f"```python\n{code}\n```"))
            return out

    class Scorer:
        def score(self, prompts, completions):
            calls.append(["scorer", digest([list(prompts), list(completions)])])
            return [int(digest([x, y]), 16) % 1000 / 1000 for x, y in zip(prompts, completions)]

    class LateExecutor:  # process 1: each result arrives 0-0.3 s late
        def __init__(self, inner):
            self.inner, self.rng = inner, random.Random(jax.process_index())

        def submit(self, code, tests, **kw):
            if jax.process_index() == 0:
                return self.inner.submit(code, tests, **kw)
            late = cf.Future()
            delay = self.rng.random() * 0.3
            self.inner.submit(code, tests, **kw).add_done_callback(
                lambda f: threading.Timer(delay, lambda: late.set_result(f.result())).start()
            )
            return late

    search = R.SearchConfig(num_searches=2, num_candidates=2, max_turns=3, select="lv",
                            batch_size=4, seed=3)  # fmt: skip
    out = workdir / "search_lv.jsonl"
    with Executor(workers=1) as ex:
        trajs = R.run_search(problems, Policy(), LateExecutor(ex), search, out, scorer=Scorer())
    key = lambda t: [  # noqa: E731 - what a search decided, without timings
        t.problem_id, t.search, [[u.selected, [(c.completion, c.label, c.score) for c in u.candidates]]
                                 for u in t.turns]]  # fmt: skip
    return {
        "trajectories": [key(t) for t in trajs],
        "file": [key(t) for t in records.read_trajectories(out)],
        "order": [[p.id, i] for p in problems for i in range(search.num_searches)],
        "files": sorted(p.name for p in workdir.iterdir()),
        "calls": calls,
    }


def warm_start(workdir, overrides):
    """The driver's first stage alone (`Driver.base`) for `configs/demo_ci.py`."""
    from configs.demo_ci import get_config
    from mucode_jax.algorithms import mucode
    from mucode_jax.algorithms.config import executor_options
    from mucode_jax.execution import Executor
    from mucode_jax.training import inputs

    c = _apply(get_config(), overrides)
    train = mucode.load_problem_set(c.data.train)
    tests = {name: mucode.load_problem_set(c.data.tests[name]) for name in c.data.tests}
    tok = inputs.tokenizer_from_config(c)

    # The warm start's conversations run through the rollout engine, so it needs an executor.
    with Executor(**executor_options(c)) as executor:
        art = mucode.Driver(c, workdir, executor, tok, train, tests).base()
    return {"artifact": art.path.parent.name}


def main():
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("mucode_jax").setLevel(logging.INFO)
    from mucode_jax import multihost

    multihost.initialize()
    import jax

    from mucode_jax.training.writers import read_metrics

    kind, workdir = sys.argv[1], Path(sys.argv[2])
    overrides = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    workdir = Path(f"{workdir}{overrides.pop('_workdir_suffix', '')}")  # a test: not shared
    out = {"devices": jax.device_count(), "processes": jax.process_count()}
    try:
        out.update(
            {
                "sft": sft,
                "verifier": verifier,
                "sample": sample,
                "score": score,
                "store": store,
                "rollout": rollout,
                "warm_start": warm_start,
            }[kind](workdir, overrides)
        )
    except (ValueError, multihost.MultihostError) as e:  # one sentence, no trace
        out["error"] = str(e)
    if kind in ("sft", "verifier") and "error" not in out:
        records = read_metrics(workdir / "metrics.jsonl")
        out["steps"] = [r["step"] for r in records]
        out["losses"] = [r["loss"] for r in records]
        out["grad_norms"] = [r["grad_norm"] for r in records]
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
