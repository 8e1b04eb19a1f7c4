"""Verifier training (μCode step 3): pairs in, a trained `Verifier` (and its HF export) out."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np
from flax import nnx

from mucode_jax.data import pipeline
from mucode_jax.data import verifier_data as vd
from mucode_jax.scoring import VerifierScorer
from mucode_jax.training import loop, losses, optim, steps
from mucode_jax.training.sft import TrainResult, build_model, examples_fingerprint, export

log = logging.getLogger("mucode_jax.training")


def prepare_pairs(
    config: ml_collections.ConfigDict, pairs_or_samples: Sequence[Mapping[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Text pairs from either pairs (``chosen``/``rejected``) or samples (``label``)."""
    rows = list(pairs_or_samples)
    if not rows:
        raise ValueError(
            "The verifier dataset is empty; pass samples with labels or (chosen, rejected) pairs."
        )
    if all("chosen" in r and "rejected" in r for r in rows):
        return [dict(r) for r in rows], {"pairs": len(rows)}
    if all("label" in r and "response" in r for r in rows):
        return vd.build_verifier_pairs(
            rows,
            pairs_per_problem=config.data.pairs_per_problem,
            seed=config.seed,
            label_non_final_negative=config.data.label_non_final_negative,
        )
    raise ValueError(
        "Verifier rows must all be pairs {'prompt', 'chosen', 'rejected'} or all samples "
        "{'problem_id', 'prompt', 'response', 'label'}; got a mix or neither."
    )


def evaluate_pairs(scorer: VerifierScorer, pairs: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Pairwise accuracy, AUC and calibration of the verifier on tokenized pairs.

    AUC and calibration are over the pairs' members as pointwise samples (chosen = 1,
    rejected = 0), each distinct token sequence counted once.
    """
    if not pairs:
        return {}
    seqs: dict[bytes, tuple[np.ndarray, int]] = {}
    for p in pairs:
        for key, label in (("chosen", 1), ("rejected", 0)):
            x = np.asarray(p[key], np.int32)
            seqs.setdefault(x.tobytes(), (x, label))
    keys = list(seqs)
    out = scorer.score_ids([seqs[k][0] for k in keys])
    scores = {k: float(v) for k, v in zip(keys, out)}
    chosen = np.array([scores[np.asarray(p["chosen"], np.int32).tobytes()] for p in pairs])
    rejected = np.array([scores[np.asarray(p["rejected"], np.int32).tobytes()] for p in pairs])
    pointwise = np.array([scores[k] for k in keys])
    labels = np.array([seqs[k][1] for k in keys])
    cal = losses.calibration(pointwise, labels)
    return {
        "eval/pair_accuracy": losses.pairwise_accuracy(chosen, rejected),
        "eval/auc": losses.auc(pointwise, labels),
        "eval/ece": cal["ece"],
        "eval/brier": cal["brier"],
        "eval/pairs": float(len(pairs)),
    }


def train_verifier(
    config: ml_collections.ConfigDict,
    pairs_or_samples: Sequence[Mapping[str, Any]],
    workdir: str | os.PathLike,
    *,
    tokenizer: Any,
    init_params_from: str | os.PathLike | nnx.Module | None = None,
) -> TrainResult:
    """Trains the verifier with the Bradley–Terry (default) or pointwise BCE loss.

    Args:
      config: `mucode_jax.training.config.verifier_defaults()` or a variant.
      pairs_or_samples: samples (``problem_id, prompt, response, label[, final, iteration]``;
        pairs are drawn by `build_verifier_pairs`) or ready pairs
        (``problem_id, prompt, chosen, rejected``), e.g. aggregated over iterations.
      workdir: checkpoints, metrics and the HF export (``workdir/hf``, a
        ``LlamaForSequenceClassification``); an existing run there is resumed.
      tokenizer: renders ``[user: prompt, assistant: response]`` with its chat template.
      init_params_from: an HF directory (a causal LM: μCode's base model, given a new
        score head; or a verifier) or a model; default ``config.init_from`` or random init.

    Returns:
      A `TrainResult`; ``last_metrics`` includes the held-out ``eval/*`` metrics.
    """
    d = config.data
    text_pairs, pair_stats = prepare_pairs(config, pairs_or_samples)
    tokenized, tok_stats = vd.tokenize_verifier_pairs(
        text_pairs, tokenizer, max_length=d.max_length, overflow=d.overflow
    )
    stats = {**pair_stats, **{f"tokenized_{k}": v for k, v in tok_stats.items()}}
    log.info("verifier data: %s", stats)
    train_pairs, eval_pairs = vd.split_by_problem(tokenized, d.eval_fraction, seed=config.seed)
    if not train_pairs:
        raise ValueError(
            f"No verifier pairs are left to train on ({stats}); give problems with both correct and "
            "incorrect programs that fit data.max_length."
        )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def make_dataset(keep_rows):
        return pipeline.verifier_pair_dataset(
            train_pairs,
            seq_len=d.max_length,
            rows=config.batch_size,
            seed=config.seed,
            num_epochs=config.num_epochs,
            shuffle=d.shuffle,
            pad_id=pad_id,
            keep_rows=keep_rows,
        )

    make_model = build_model(
        config, vocab_size=len(tokenizer), init_params_from=init_params_from, verifier=True
    )
    mesh, rules = loop.mesh_and_rules(config)
    scorers: list[VerifierScorer] = []

    def evaluate(graphdef, state):
        if not scorers:  # built once; later calls only swap the weights
            scorers.append(
                VerifierScorer(
                    nnx.merge(graphdef, state.params),
                    tokenizer,
                    max_length=d.max_length,
                    max_batch_size=config.eval_batch_size,
                    mesh=mesh,
                    rules=rules,
                )
            )
        scorers[0].update_params(state.params)
        out = evaluate_pairs(scorers[0], eval_pairs or train_pairs)
        if not eval_pairs:  # no held-out problems: label the numbers honestly
            out = {k.replace("eval/", "train_eval/"): v for k, v in out.items()}
        return out

    def summarize(m):
        pairs = max(m["pairs"], 1.0)
        return {
            "loss": m["loss"],
            "grad_norm": m["grad_norm"],
            "lr": m.get("lr", float("nan")),
            "pair_accuracy": m["correct"] / pairs,
            "margin": m["margin"] / pairs,
            "pairs": m["pairs"],
            "tokens": m["tokens"],
        }

    result = loop.run(
        config,
        workdir,
        make_model=make_model,
        make_loss=lambda g: steps.verifier_loss_fn(g, config.loss, config.l2),
        make_optimizer=lambda n: optim.make_optimizer(config.optim, n, config.num_epochs),
        make_dataset=make_dataset,
        data_fingerprint=examples_fingerprint(train_pairs, ("chosen", "rejected")),
        summarize=summarize,
        evaluate=evaluate,
        eval_every=config.eval_every,
    )
    model = result.model()
    hf_path = export(model, workdir, tokenizer) if config.export_hf else None
    return TrainResult(model, hf_path, result.num_steps, result.last_metrics, stats)
