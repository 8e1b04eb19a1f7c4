"""The evaluation launcher's library function on a tiny random HF checkpoint and real MBPP."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mucode_jax import records, rollout
from mucode_jax.evaluation import eval_defaults, evaluate_from_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, shared_data):
    from flax import nnx

    from mucode_jax.data.problems import load_problems
    from mucode_jax.data.tokenizer import build_tokenizer
    from mucode_jax.models.hf import save_pretrained
    from mucode_jax.models.llama import Llama, LlamaConfig

    problems = load_problems("mbpp", path=shared_data / "mbpp" / "mbpp.jsonl", split="test")[:20]
    corpus = [p.statement + "\n" + p.public_tests_text + "\n" + p.reference for p in problems]
    tok = build_tokenizer(corpus * 3, vocab_size=600)
    path = tmp_path_factory.mktemp("ckpt") / "tiny_llama"
    save_pretrained(Llama(LlamaConfig.tiny(vocab_size=len(tok)), rngs=nnx.Rngs(0)), path)
    tok.save_pretrained(str(path))
    return path


def make_config(checkpoint, shared_data, **kw):
    c = eval_defaults()
    c.checkpoint = str(checkpoint)
    c.dataset = "mbpp"
    c.dataset_path = str(shared_data / "mbpp" / "mbpp.jsonl")
    c.split = "test"
    c.num_problems = 3
    c.modes = "pt,random"
    c.num_candidates = 2
    c.max_turns = 2
    c.max_new_tokens = 8
    c.max_prompt_length = 2048
    c.max_batch_size = 8
    c.pass_k = (1, 2)
    c.workers = 2
    c.dtype = "float32"
    c.progress = False
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def test_evaluate_writes_metrics_plot_and_resumes(checkpoint, shared_data, tmp_path, monkeypatch):
    config = make_config(checkpoint, shared_data)
    metrics = evaluate_from_config(config, tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert set(saved["modes"]) == {"pt", "random"} and saved["num_problems"] == 3
    for m in saved["modes"].values():
        assert [b["t"] for b in m["bon"]] == [1, 2]
        for b in m["bon"]:
            assert 0.0 <= b["lo"] <= b["mean"] <= b["hi"] <= 1.0
        assert set(m["turn1_pass_at_k"]) == {"1", "2"}
        assert len(m["per_turn"]["cumulative"]) == 2
    png = (tmp_path / "per_turn_success.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    jsonl = {m: (tmp_path / f"search_{m}.jsonl").read_text() for m in ("pt", "random")}
    for mode in jsonl:
        recs = records.read_trajectories(tmp_path / f"search_{mode}.jsonl")
        assert len(recs) == 3 and {r.settings.select for r in recs} == {mode}
        assert all(len(r.turns[0].candidates) == 2 for r in recs)
        assert all(len(c.tokens) == len(c.logprobs) >= 1 for c in recs[0].turns[0].candidates)

    # Resume: everything is in the JSONL files, so the model is never asked again.
    def refuse(self, conversations, *, seed):
        raise AssertionError("a finished search was generated again")

    monkeypatch.setattr(rollout.ModelPolicy, "complete", refuse)
    again = evaluate_from_config(config, tmp_path)
    assert json.loads(json.dumps(again)) == saved
    slash = make_config(f"{checkpoint}/", shared_data)  # the same checkpoint, spelled otherwise
    assert json.loads(json.dumps(evaluate_from_config(slash, tmp_path))) == saved
    assert {m: (tmp_path / f"search_{m}.jsonl").read_text() for m in jsonl} == jsonl
    # A resumed workdir with other settings is refused.
    with pytest.raises(ValueError, match="other settings"):
        evaluate_from_config(make_config(checkpoint, shared_data, max_turns=3), tmp_path)


def test_bad_inputs_give_one_sentence(checkpoint, shared_data, tmp_path):
    with pytest.raises(ValueError, match=r"Unknown dataset 'mbbp'; use one of mbpp, "):
        evaluate_from_config(make_config(checkpoint, shared_data, dataset="mbbp"), tmp_path)
    with pytest.raises(ValueError, match="max_turns must be at least 1"):
        evaluate_from_config(make_config(checkpoint, shared_data, max_turns=0), tmp_path)
    bare = tmp_path / "no_tokenizer"
    bare.mkdir()
    (bare / "config.json").write_text((checkpoint / "config.json").read_text())
    with pytest.raises(ValueError, match="has no tokenizer files"):
        evaluate_from_config(make_config(bare, shared_data), tmp_path)
    with pytest.raises(ValueError, match="not an HF checkpoint"):
        evaluate_from_config(make_config(tmp_path / "missing", shared_data), tmp_path)
    with pytest.raises(ValueError, match="need a learned verifier"):
        evaluate_from_config(make_config(checkpoint, shared_data, modes="pt,lv"), tmp_path)
    with pytest.raises(ValueError, match="config.dtype 'float42' is not one of float32"):
        evaluate_from_config(make_config(checkpoint, shared_data, dtype="float42"), tmp_path)
    generator = make_config(checkpoint, shared_data, modes="lv", verifier=str(checkpoint))
    with pytest.raises(ValueError, match=r"is a Llama checkpoint \(a generator\); a verifier is"):
        evaluate_from_config(generator, tmp_path / "lv")


def test_eval_configs_load():
    for name in ("eval_mbpp", "eval_humaneval", "eval_codecontests"):
        spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        c = mod.get_config()
        assert c.dataset in name and c.max_turns >= 1 and "python launch/evaluate.py" in mod.__doc__


def test_launcher_reports_bad_dataset_in_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "launch" / "evaluate.py"),
            f"--config={REPO / 'configs' / 'eval_mbpp.py'}",
            "--config.dataset=nope",
            f"--workdir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("error: Unknown dataset 'nope'")
