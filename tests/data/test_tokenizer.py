"""Tests for the locally built Llama-3-style tokenizer (no downloads)."""

import os
import time

import pytest
from transformers import AutoTokenizer

from mucode_jax.data import tokenizer as tk
from mucode_jax.data import toy

CORPUS = toy.toy_corpus(n=300)


@pytest.fixture(scope="module")
def tok():
    return tk.build_tokenizer(CORPUS, 1024)


def test_special_tokens_and_ids(tok):
    assert tok.convert_ids_to_tokens(list(range(6))) == list(tk.SPECIAL_TOKENS)
    assert tok.bos_token == "<|begin_of_text|>"
    assert tok.eos_token == "<|eot_id|>"
    assert tok.pad_token == "<|finetune_right_pad_id|>"
    eot, eos = tok.convert_tokens_to_ids(["<|eot_id|>", "<|end_of_text|>"])
    assert tk.eos_token_ids(tok) == (eot, eos)
    # Special tokens are single tokens inside text.
    ids = tok.encode("a<|eot_id|>b", add_special_tokens=False)
    assert eot in ids


def test_eom_stop_only_when_asked_and_present(tok):
    import copy

    assert tk.eos_token_ids(tok, eom=True) == tk.eos_token_ids(tok)  # no <|eom_id|> here
    with_eom = copy.deepcopy(tok)
    with_eom.add_special_tokens({"additional_special_tokens": [tk.EOM]})
    eom = with_eom.convert_tokens_to_ids(tk.EOM)
    assert tk.eos_token_ids(with_eom) == tk.eos_token_ids(tok)
    assert tk.eos_token_ids(with_eom, eom=True) == (*tk.eos_token_ids(tok), eom)


def test_vocab_size_and_roundtrip(tok):
    assert 600 < len(tok) <= 1024
    code = "def add(a, b):\n    return [x * 2 for x in range(a, b + 1)]  # ünïcödé ✓\n"
    ids = tok.encode(code, add_special_tokens=False)
    assert tok.decode(ids) == code
    assert tok.encode(code)[0] == tok.bos_token_id  # add_special_tokens=True prepends BOS
    # Byte-level: any text encodes, even characters never seen in training.
    assert tok.decode(tok.encode("日本語 🙂", add_special_tokens=False)) == "日本語 🙂"


def test_toy_prompts_are_short(tok):
    from mucode_jax import prompts

    for problem in toy.toy_problems("test", 50):
        n_prompt = len(tok.encode(prompts.first_turn_prompt(problem), add_special_tokens=False))
        n_code = len(tok.encode(problem.reference, add_special_tokens=False))
        assert n_prompt <= 60 and n_code <= 60, (problem.id, n_prompt, n_code)


def test_chat_template_has_llama3_shape(tok):
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "  ```python\nx = 1\n```\n"},
    ]
    text = tok.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n```python\nx = 1\n```<|eot_id|>"
    )
    with_prompt = tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert with_prompt.endswith("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")


def test_deterministic(tok):
    again = tk.build_tokenizer(CORPUS, 1024)
    assert again.get_vocab() == tok.get_vocab()
    assert again.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()


def test_save_and_load_with_auto_tokenizer(tok, tmp_path):
    tk.save_tokenizer(tok, tmp_path / "tok")
    loaded = AutoTokenizer.from_pretrained(str(tmp_path / "tok"), local_files_only=True)
    messages = [{"role": "user", "content": "Write f(x)."}]
    assert loaded.apply_chat_template(
        messages, add_generation_prompt=True, return_dict=False
    ) == tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    assert tk.eos_token_ids(loaded) == tk.eos_token_ids(tok)
    assert tk.load_tokenizer(tmp_path / "tok").get_vocab() == tok.get_vocab()


def test_cache_dir_reuses_the_build(tmp_path):
    corpus = CORPUS[:200]
    first = tk.build_tokenizer(corpus, 600, cache_dir=tmp_path)
    (entry,) = [e for e in os.listdir(tmp_path) if not e.startswith(".")]
    assert os.path.isfile(tmp_path / entry / "tokenizer.json")
    start = time.perf_counter()
    second = tk.build_tokenizer(corpus, 600, cache_dir=tmp_path)
    assert time.perf_counter() - start < 5
    assert second.get_vocab() == first.get_vocab()
    tk.build_tokenizer(corpus, 700, cache_dir=tmp_path)  # other settings, other entry
    assert len([e for e in os.listdir(tmp_path) if not e.startswith(".")]) == 2


def test_bad_input_is_explained(tmp_path):
    with pytest.raises(ValueError, match="at least 263"):
        tk.build_tokenizer(CORPUS, 100)
    with pytest.raises(ValueError, match="corpus is empty"):
        tk.build_tokenizer(["", "  "], 512)
    with pytest.raises(FileNotFoundError, match="build_tokenizer"):
        tk.load_tokenizer(tmp_path / "missing")


def test_fixed_vocabulary_is_shipped_and_release_independent():
    """The demo's tokenizer is the shipped word list: no BPE training, so no `tokenizers`
    release can change how a toy prompt is split."""
    import json
    from pathlib import Path

    from mucode_jax import prompts
    from mucode_jax.data import toy

    shipped = json.loads(Path(toy.__file__).with_name(toy.VOCAB_FILE).read_text())
    assert shipped["size"] == 1024 and shipped["words"] == toy.toy_vocabulary(1024)
    assert toy.demo_vocabulary(1024) == shipped["words"]
    tok = tk.fixed_tokenizer(shipped["words"])
    assert len(tok) == 1024 and tok.convert_ids_to_tokens(list(range(6))) == list(tk.SPECIAL_TOKENS)
    # A problem of a demo family (configs/demo.py): its names are words of the vocabulary.
    problem = next(
        p
        for p in toy.toy_problems("test", variant="shown", test_fraction=0.3)
        if "/series/" in p.id
    )
    messages = prompts.first_turn_messages(problem) + [
        {"role": "assistant", "content": f"```python\n{problem.reference}```"}
    ]
    text = tok.apply_chat_template(messages, tokenize=False)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    pieces = tok.convert_ids_to_tokens(ids)
    assert "Ġreturn" in pieces and "assistant" in pieces and "Ġ" + problem.entry_point in pieces
    assert len(ids) < 90
    # Words outside the vocabulary fall back to bytes; the result still round-trips.
    odd = "zqxj unlikely_identifier 12345"
    assert tok.decode(tok(odd, add_special_tokens=False)["input_ids"]) == odd
    with pytest.raises(ValueError, match="already in the vocabulary"):
        tk.fixed_tokenizer(["Ġreturn", "Ġreturn"])
