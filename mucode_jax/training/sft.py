"""Generator SFT: chat conversations in, a fine-tuned Llama (and its HF export) out."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from mucode_jax import multihost
from mucode_jax.data import pipeline
from mucode_jax.data.sft import describe_stats, sft_examples_from_conversations
from mucode_jax.models.llama import Llama
from mucode_jax.training import config as config_lib
from mucode_jax.training import loop, optim, steps

log = logging.getLogger("mucode_jax.training")

BATCH_UNITS = ("examples", "rows")


@dataclasses.dataclass
class TrainResult:
    """``model``: the trained model (sharded); ``hf_path``: its HF export (or None);
    ``num_steps``; ``last_metrics``; ``data_stats``: kept / skipped / truncated counts."""

    model: nnx.Module
    hf_path: Path | None
    num_steps: int
    last_metrics: dict[str, Any]
    data_stats: dict[str, int]


def build_model(
    config: ml_collections.ConfigDict,
    *,
    vocab_size: int | None,
    init_params_from: Any,
    verifier: bool,
):
    """A model factory (random init) or a loaded model, on the config's mesh."""
    from mucode_jax.models.verifier import Verifier

    init = init_params_from if init_params_from is not None else (config.init_from or None)
    if isinstance(init, nnx.Module):
        return init
    if init:
        from mucode_jax.models import hf

        mesh, rules = loop.mesh_and_rules(config)
        model = hf.load_pretrained(
            init,
            dtype=config_lib.dtype_of(config.model.dtype),
            param_dtype=config_lib.dtype_of(config.model.param_dtype),
            mesh=mesh,
            rules=rules,
            remat=bool(config.model.remat),
            remat_policy=config.model.get("remat_policy", "auto"),
            attention=config.model.get("attention", "auto"),
        )
        if verifier and not isinstance(model, Verifier):
            return verifier_from_base(
                model, seed=config.seed, score_init=config.get("score_init", "official")
            )
        if not verifier and isinstance(model, Verifier):
            raise ValueError(
                f"init_from {str(init)!r} is a verifier checkpoint "
                "(LlamaForSequenceClassification); generator SFT needs a LlamaForCausalLM."
            )
        return model
    mc = config_lib.model_config(config, vocab_size)
    cls = Verifier if verifier else Llama
    return lambda: cls(mc, rngs=nnx.Rngs(config.seed))


SCORE_INITS = ("official", "initializer_range")


def verifier_from_base(base: Llama, *, seed: int = 0, score_init: str = "official") -> nnx.Module:
    """A `Verifier` whose backbone is ``base`` (a causal LM) and whose score head is new.

    μCode trains each verifier from the *base* model: the decoder weights carry over, the
    LM head (if untied) is dropped, the scalar head starts from N(0, σ²) with σ = 1/√(H+1)
    (``score_init="official"``, the official script's ``layer_init``) or σ =
    ``initializer_range`` (``"initializer_range"``: HF's default init, 0.02 for Llama).
    """
    if score_init not in SCORE_INITS:
        raise ValueError(f"score_init must be one of {SCORE_INITS}, got {score_init!r}.")
    import jax.numpy as jnp

    from mucode_jax.models.verifier import Verifier

    vcfg = base.config
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: Verifier(vcfg, rngs=nnx.Rngs(seed))))
    backbone = nnx.to_pure_dict(nnx.state(base, nnx.Param))
    backbone.pop("lm_head", None)
    key = jax.random.PRNGKey(seed)
    std = (
        1.0 / np.sqrt(vcfg.hidden_size + 1) if score_init == "official" else vcfg.initializer_range
    )
    score = (std * jax.random.normal(key, (vcfg.hidden_size,))).astype(vcfg.param_dtype)
    return nnx.merge(graphdef, {"backbone": backbone, "score": jnp.asarray(score)})


def train_sft(
    config: ml_collections.ConfigDict,
    conversations: Sequence[Any],
    workdir: str | os.PathLike,
    *,
    tokenizer: Any,
    init_params_from: str | os.PathLike | nnx.Module | None = None,
) -> TrainResult:
    """Fine-tunes the generator on chat conversations (μCode step 5).

    Args:
      config: `mucode_jax.training.config.sft_defaults()` or a variant.
      conversations: message lists or ``{"messages": [...], ...}`` dicts.
      workdir: checkpoints, metrics and the HF export (``workdir/hf``); an existing run there
        is resumed from its latest checkpoint.
      tokenizer: the HF tokenizer whose chat template renders the conversations.
      init_params_from: an HF checkpoint directory or a `Llama`; default ``config.init_from``,
        and when that is empty a random init of ``config.model``.

    Returns:
      A `TrainResult`.

    Raises:
      ValueError: for an empty dataset (after skips), a malformed row, or a batch that does not
        divide over the mesh.
    """
    d = config.data
    if d.batch_unit not in BATCH_UNITS:
        raise ValueError(
            f"data.batch_unit must be one of {BATCH_UNITS}, got {d.batch_unit!r}: 'examples' "
            "makes batch_size examples per optimizer step (official), 'rows' packed rows."
        )
    examples, stats = sft_examples_from_conversations(
        conversations,
        tokenizer,
        prefix_expansion=d.prefix_expansion,
        target=d.target,
        max_length=d.max_length,
        overflow=d.overflow,
        train_eos=d.train_eos,
    )
    log.info("SFT data: %s", describe_stats(stats))
    if not examples:
        raise ValueError(
            f"No SFT examples are left from {stats['rows']} rows ({describe_stats(stats)}); "
            "give conversations with an assistant turn that fits data.max_length."
        )

    def make_dataset(keep_rows):
        if d.batch_unit == "examples":
            return pipeline.sft_step_dataset(
                examples,
                seq_len=d.max_length,
                batch_size=config.batch_size,
                micro_rows=loop.micro_batch_size(config),
                pack=d.pack,
                seed=config.seed,
                num_epochs=config.num_epochs,
                shuffle=d.shuffle,
                keep_rows=keep_rows,
            )
        return pipeline.sft_dataset(
            examples,
            seq_len=d.max_length,
            rows=config.batch_size,
            pack=d.pack,
            seed=config.seed,
            num_epochs=config.num_epochs,
            shuffle=d.shuffle,
            keep_rows=keep_rows,
        )

    make_model = build_model(
        config, vocab_size=len(tokenizer), init_params_from=init_params_from, verifier=False
    )

    def summarize(m):
        return {
            "loss": m["loss"],
            "grad_norm": m["grad_norm"],
            "lr": m.get("lr", float("nan")),
            "target_tokens": m["count"],
            "tokens": m["tokens"],
        }

    result = loop.run(
        config,
        workdir,
        make_model=make_model,
        make_loss=steps.sft_loss_fn,
        make_optimizer=lambda n: optim.make_optimizer(config.optim, n, config.num_epochs),
        make_dataset=make_dataset,
        data_fingerprint=examples_fingerprint(examples, ("inputs", "targets", "weights")),
        summarize=summarize,
    )
    model = result.model()
    hf_path = export(model, workdir, tokenizer) if config.export_hf else None
    return TrainResult(model, hf_path, result.num_steps, result.last_metrics, stats)


def examples_fingerprint(examples: Sequence[Any], keys: Sequence[str]) -> str:
    """A hash of tokenized examples (compared across processes before training)."""
    h = hashlib.sha256()
    for ex in examples:
        for k in keys:
            h.update(np.ascontiguousarray(ex[k]).tobytes())
            h.update(b"|")
    return h.hexdigest()[:16]


def export(model: nnx.Module, workdir: str | os.PathLike, tokenizer: Any = None) -> Path:
    """Writes ``workdir/hf``: HF safetensors + config.json (+ the tokenizer, if given).

    Every process takes part (the weights are gathered); process 0 writes, and the others
    wait at a barrier until the directory is complete.
    """
    from mucode_jax.models.hf import save_pretrained

    path = Path(workdir) / "hf"
    save_pretrained(model, path)
    if tokenizer is not None and multihost.is_main():
        tokenizer.save_pretrained(str(path))
    multihost.barrier("hf export")
    log.info("exported %s", path)
    return path
