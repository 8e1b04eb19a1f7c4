"""A small, locally trained Llama-3-style tokenizer for tests and the CPU demo.

Why: tests and the built-in demo must never download a tokenizer, yet everything downstream
(prompt rendering, loss masks, the sampler's stop tokens) should exercise the same code paths as
with Meta's Llama 3 tokenizer. So we train a byte-level BPE with the `tokenizers` library on a
given corpus, give it Llama 3's pre-tokenizer regex and special tokens, and wrap it as a
`transformers` fast tokenizer whose chat template has the shape of Meta's Llama 3 template::

    <|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\n{content}<|eot_id|>
    <|start_header_id|>assistant<|end_header_id|>\\n\\n{content}<|eot_id|>...

The result round-trips through ``save_pretrained`` / ``AutoTokenizer.from_pretrained(local_dir)``
like any Hugging Face tokenizer, so code that takes "a tokenizer" never needs to know which one
it got. Training is deterministic for the same corpus and settings (a few seconds for a 2k
vocabulary on a few MB); `build_tokenizer` can cache the result on disk by content hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence

import tokenizers
from tokenizers import Regex, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

BOS = "<|begin_of_text|>"
EOS = "<|end_of_text|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
EOT = "<|eot_id|>"
EOM = "<|eom_id|>"  # Llama 3.1+: end of a message that hands over to a tool
PAD = "<|finetune_right_pad_id|>"  # Llama 3.1's name for its padding token.

# Ids 0..5 in this order, so every locally built tokenizer agrees on them.
SPECIAL_TOKENS = (BOS, EOS, START_HEADER, END_HEADER, EOT, PAD)

# Meta's Llama 3 pre-tokenizer split (tokenizer.json of Llama-3.x): contractions, words with one
# leading non-letter, numbers in groups of at most three digits, punctuation runs, newlines and
# whitespace. Code indentation therefore splits into runs of spaces, as in the real tokenizer.
LLAMA3_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Same shape as the chat template of meta-llama/Meta-Llama-3-8B-Instruct: BOS once, a header per
# message, content trimmed, every message closed by <|eot_id|>, and `add_generation_prompt`
# appending an open assistant header.
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}"
    "{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)

# Bump when the recipe changes, so on-disk caches built by an older recipe are not reused.
_RECIPE_VERSION = 1
_BYTE_ALPHABET_SIZE = 256


def eos_token_ids(tokenizer: PreTrainedTokenizerBase, *, eom: bool = False) -> tuple[int, ...]:
    """Ids that end generation: ``<|eot_id|>`` (end of a turn) and ``<|end_of_text|>``.

    Why both: an instruct model closes an assistant turn with ``<|eot_id|>``, but a model that
    is still learning the format (the CPU demo's tiny Llama) may emit ``<|end_of_text|>``; Meta's
    own generation config stops on both. Works for this module's tokenizer and for Meta's.

    Args:
      tokenizer: a Hugging Face tokenizer.
      eom: also stop on ``<|eom_id|>`` when the vocabulary has it (the official μCode sampler,
        SGLang with Llama 3.1+'s generation config, stops on it too).

    Returns:
      The ids of those of the two tokens that the vocabulary has, plus ``tokenizer.eos_token_id``
      when it is something else, then ``<|eom_id|>`` when asked for and present, without
      duplicates, in that order.

    Raises:
      ValueError: if the tokenizer has none of them.
    """
    ids: list[int] = []
    vocab = tokenizer.get_vocab()
    for token in (EOT, EOS):
        if token in vocab and vocab[token] not in ids:
            ids.append(vocab[token])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    if ids and eom and EOM in vocab and vocab[EOM] not in ids:
        ids.append(vocab[EOM])
    if not ids:
        raise ValueError(
            f"Tokenizer {type(tokenizer).__name__} has neither {EOT} nor {EOS} nor an eos_token; "
            "set tokenizer.eos_token before sampling."
        )
    return tuple(ids)


def _as_documents(corpus: str | Iterable[str]) -> list[str]:
    docs = [corpus] if isinstance(corpus, str) else list(corpus)
    if not all(isinstance(d, str) for d in docs):
        raise TypeError("The tokenizer corpus must be a string or an iterable of strings.")
    if not any(d.strip() for d in docs):
        raise ValueError("The tokenizer corpus is empty; pass some Python code and English text.")
    return docs


def _corpus_key(docs: Sequence[str], vocab_size: int, min_frequency: int, max_length: int) -> str:
    h = hashlib.sha256()
    header = {
        "recipe": _RECIPE_VERSION,
        "tokenizers": tokenizers.__version__,
        "vocab_size": vocab_size,
        "min_frequency": min_frequency,
        "max_length": max_length,
    }
    h.update(json.dumps(header, sort_keys=True).encode())
    for d in docs:
        h.update(len(d).to_bytes(8, "little"))
        h.update(d.encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:24]


def _train_bpe(docs: Sequence[str], vocab_size: int, min_frequency: int) -> tokenizers.Tokenizer:
    tok = tokenizers.Tokenizer(models.BPE(byte_fallback=False, ignore_merges=False))
    tok.pre_tokenizer = _pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer, length=len(docs))
    bos_id = tok.token_to_id(BOS)
    # Like Llama 3's tokenizer.json: `encode(text)` (add_special_tokens=True) prepends BOS.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A {BOS} $B:1",
        special_tokens=[(BOS, bos_id)],
    )
    return tok


def _wrap(tok: tokenizers.Tokenizer, max_length: int) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOT,  # As in Llama-3.x-Instruct's tokenizer_config.json.
        pad_token=PAD,
        chat_template=LLAMA3_CHAT_TEMPLATE,
        model_max_length=max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )


def build_tokenizer(
    corpus: str | Iterable[str],
    vocab_size: int = 2048,
    *,
    min_frequency: int = 2,
    max_length: int = 8192,
    cache_dir: str | os.PathLike | None = None,
) -> PreTrainedTokenizerFast:
    """Trains a byte-level BPE on ``corpus`` and wraps it as a Llama-3-style HF tokenizer.

    Args:
      corpus: training text, one string or an iterable of documents (e.g. `toy.toy_corpus()`).
      vocab_size: target vocabulary size including the 256 byte symbols and the 6 special
        tokens; the result may be smaller when the corpus has too few frequent pairs. 512–4096
        suits the CPU demo.
      min_frequency: a pair must occur this often to be merged.
      max_length: ``model_max_length`` recorded in the tokenizer config.
      cache_dir: if given, the tokenizer is stored under ``cache_dir/<content hash>`` and reused
        when the same corpus and settings are asked for again.

    Returns:
      A `PreTrainedTokenizerFast` with special tokens ``SPECIAL_TOKENS`` at ids 0..5, ``eos_token``
      ``<|eot_id|>``, ``pad_token`` ``<|finetune_right_pad_id|>`` and ``chat_template``
      `LLAMA3_CHAT_TEMPLATE`. Stop ids for sampling: `eos_token_ids`.

    Raises:
      ValueError: for a vocabulary too small to hold the byte alphabet and the special tokens,
        or an empty corpus.
    """
    minimum = _BYTE_ALPHABET_SIZE + len(SPECIAL_TOKENS) + 1
    if vocab_size < minimum:
        raise ValueError(
            f"vocab_size={vocab_size} is too small for a byte-level BPE with "
            f"{len(SPECIAL_TOKENS)} special tokens; use at least {minimum} (e.g. 512)."
        )
    docs = _as_documents(corpus)
    target = None
    if cache_dir is not None:
        target = os.path.join(
            os.fspath(cache_dir), _corpus_key(docs, vocab_size, min_frequency, max_length)
        )
        if os.path.isfile(os.path.join(target, "tokenizer.json")):
            return load_tokenizer(target)

    tokenizer = _wrap(_train_bpe(docs, vocab_size, min_frequency), max_length)
    if target is not None:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        tmp = tempfile.mkdtemp(dir=os.path.dirname(target), prefix=".tmp-tokenizer-")
        try:
            tokenizer.save_pretrained(tmp)
            os.replace(tmp, target)  # Atomic: concurrent builders never see half a directory.
        except OSError:
            # Another process finished first (target exists and is non-empty); keep theirs.
            shutil.rmtree(tmp, ignore_errors=True)
    return tokenizer


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def pre_tokens(text: str) -> list[str]:
    """``text`` split as the tokenizers here split it: Llama 3's regex, byte-level symbols."""
    return [piece for piece, _ in _pre_tokenizer().pre_tokenize_str(text)]


def fixed_tokenizer(words: Sequence[str], *, max_length: int = 8192) -> PreTrainedTokenizerFast:
    """A Llama-3-style tokenizer over a fixed vocabulary: no training, no merges.

    Why: a BPE's merges depend on the trainer of the `tokenizers` release that learned them, so
    the same corpus gives different tokens (and a tiny model different results) from one release
    to the next. Here the vocabulary is given: the special tokens (ids 0..5), the 256 byte-level
    symbols, then ``words``, each a whole pre-token (a piece of `pre_tokens`). Encoding splits the
    text with Llama 3's regex, looks each piece up whole, and falls back to its bytes; that is the
    same on every release.

    Args:
      words: pre-tokens in byte-level form (as `pre_tokens` returns them), in id order.
      max_length: ``model_max_length`` recorded in the tokenizer config.

    Returns:
      A tokenizer like `build_tokenizer`'s (special tokens, chat template, BOS on `encode`).

    Raises:
      ValueError: for a duplicate word, or one that is a special token.
    """
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    for w in words:
        if w in vocab:
            raise ValueError(f"Word {w!r} is already in the vocabulary; pass each word once.")
        vocab[w] = len(vocab)
    tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[], ignore_merges=True))
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.pre_tokenizer = _pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B:1", special_tokens=[(BOS, vocab[BOS])]
    )
    return _wrap(tok, max_length)


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, path: str | os.PathLike) -> None:
    """Writes ``tokenizer`` to a directory that `load_tokenizer` / ``AutoTokenizer`` can read."""
    tokenizer.save_pretrained(os.fspath(path))


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerBase:
    """Loads a tokenizer saved by `save_tokenizer` (or any local HF tokenizer directory).

    Never touches the network: ``local_files_only=True``.

    Raises:
      FileNotFoundError: when ``path`` is not a directory holding a tokenizer.
    """
    path = os.fspath(path)
    if not os.path.isdir(path) or not (
        os.path.isfile(os.path.join(path, "tokenizer.json"))
        or os.path.isfile(os.path.join(path, "tokenizer_config.json"))
    ):
        raise FileNotFoundError(
            f"No tokenizer in {path!r}; build one with build_tokenizer(...) and save it with "
            "save_tokenizer(...)."
        )
    return AutoTokenizer.from_pretrained(path, local_files_only=True)
