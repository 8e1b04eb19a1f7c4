"""Default training configs (ml_collections), shared by the launchers and the μCode driver.

`sft_defaults()` and `verifier_defaults()` return complete ConfigDicts; config files
in ``configs/`` start from them and change what they need. The official μCode
settings (μCode step 5) are the defaults where they are cheap: generator lr 5e-7,
2 epochs, 16 examples per optimizer step, max length 8192; verifier lr 1e-6, 2 epochs,
effective batch 64, max length 2048, AdamW eps 1e-5 and weight decay 0.01, no clipping,
linear schedule without warm-up over the official (doubled) horizon, BT with λ = 1e-3, score
head N(0, 1/sqrt(H+1)), no held-out problems.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import ml_collections

from mucode_jax.models.llama import LlamaConfig

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _common() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = ml_collections.ConfigDict()
    c.model.preset = "tiny"  # LlamaConfig.preset name, used when init_from is empty
    c.model.overrides = ml_collections.ConfigDict()  # extra LlamaConfig fields
    c.model.dtype = "float32"  # compute dtype ("bfloat16" on accelerators)
    c.model.param_dtype = "float32"  # master weights, kept float32 for training
    c.model.remat = False  # rematerialise each decoder layer in the backward pass
    # What a rematerialised layer keeps: "auto" (its matmul results, "dots", where the compiled
    # step fits 90 % of the device's memory, else only its input, "full"), "full", "dots" or
    # "dots_all" (`LlamaConfig.remat_policy`).
    c.model.remat_policy = "auto"
    # "auto" (cuDNN's flash kernel on GPU for bf16/fp16, else XLA's), "xla", "cudnn" or
    # "grouped" (faster on CPU, equal to float32 rounding, not bitwise; the demos keep "auto",
    # XLA's on CPU, so their tables stay reproducible): `LlamaConfig.attention`.
    c.model.attention = "auto"
    c.init_from = ""  # HF checkpoint directory; empty: random init from model.preset
    c.tokenizer = "toy"  # "toy" (built locally) or a tokenizer directory (launchers)

    c.batch_size = 16  # global rows (sequences or pairs) per optimizer step
    c.grad_accum = 1  # micro-batches per step; the micro-batch is batch_size / grad_accum
    c.num_epochs = 2
    c.max_steps = 0  # > 0 caps the number of optimizer steps

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 5e-7
    c.optim.schedule = "linear"  # constant | linear | cosine
    c.optim.warmup_steps = 0
    c.optim.final_lr_fraction = 0.0  # decay to this fraction of lr (Zheng et al.: 0.1)
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0
    c.optim.clip_norm = 1.0  # 0 disables clipping
    # The schedule's horizon: "steps" (the run's optimizer steps: a linear decay ends at
    # final_lr_fraction) or "steps_x_epochs" (the official verifier script counts the epochs
    # twice, so its linear decay stops at 1 - 1/num_epochs of the peak: 0.5 for 2 epochs).
    c.optim.horizon = "steps"

    c.mesh = (("data", 1), ("fsdp", -1), ("tensor", 1))
    c.rules = ()  # logical-axis rules; empty: mucode_jax.sharding.DEFAULT_RULES

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 100
    c.checkpoint.keep = 3
    c.checkpoint.async_save = True

    c.log_every = 1
    c.progress = True
    c.export_hf = True  # write WORKDIR/hf (safetensors + config.json) at the end
    return c


def sft_defaults() -> ml_collections.ConfigDict:
    """Generator SFT (μCode step 5)."""
    c = _common()
    c.data = ml_collections.ConfigDict()
    c.data.source = "toy"  # launchers: "toy" (built-in) or a .jsonl of conversations
    c.data.num_problems = 64
    c.data.max_length = 8192  # row length, in (input, target) token pairs
    c.data.prefix_expansion = True  # one example per conversation prefix (μCode)
    c.data.target = "final"  # final | all: which assistant turns carry the loss
    c.data.overflow = "truncate"  # truncate | drop longer examples (counted)
    # What batch_size counts. "examples" (official: TRL's 16 examples per optimizer step):
    # packing then only changes the layout, a step's examples packed into as few rows as
    # needed. "rows" (our earlier default): batch_size rows, each packed with as many
    # examples as fit (several times fewer optimizer steps at the same learning rate).
    c.data.batch_unit = "examples"
    c.data.pack = False  # pack a step's examples into shared rows (segment-aware attention)
    # Train on the end-of-turn token (<|eot_id|>). The official run does not (TRL with
    # pad_token = eos_token masks it out of the labels); a model trained from scratch (the
    # demo's warm start, configs/sft_tiny.py) must learn to stop, so sets it True.
    c.data.train_eos = False
    c.data.shuffle = True
    c.batch_size = 16
    c.optim.lr = 5e-7
    return c


def verifier_defaults() -> ml_collections.ConfigDict:
    """Verifier training (μCode step 3)."""
    c = _common()
    c.loss = "bt"  # bt | bce
    c.l2 = 1e-3  # BT only: λ·mean(r²)
    c.data = ml_collections.ConfigDict()
    c.data.source = "toy"
    c.data.num_problems = 64
    c.data.max_length = 2048
    c.data.overflow = "drop"  # drop | truncate pairs with a longer side
    c.data.pairs_per_problem = 32
    c.data.label_non_final_negative = True
    # Problems held out for AUC / accuracy / calibration. Official: 0 (train on every
    # problem; the driver reports the verifier's AUC on the test-set searches instead).
    c.data.eval_fraction = 0.0
    c.data.shuffle = True
    c.eval_every = 0  # steps between evaluations (0: only at the end)
    c.eval_batch_size = 32
    c.batch_size = 64
    c.optim.lr = 1e-6
    c.optim.eps = 1e-5
    c.optim.schedule = "linear"
    # Official (src/verifiers/rm_bt.py): torch AdamW's weight decay 0.01, no clipping, the
    # horizon counted twice. Ours before: no decay, clip 1.0, decay to 0 at the last step.
    c.optim.weight_decay = 0.01
    c.optim.clip_norm = 0.0
    c.optim.horizon = "steps_x_epochs"
    # The new score head of a verifier built from a causal LM: "official" N(0, 1/sqrt(H+1))
    # or "initializer_range" (N(0, config.initializer_range), 0.02 for Llama; ours before).
    c.score_init = "official"
    return c


def check_train_config(c: ml_collections.ConfigDict, name: str = "config") -> None:
    """Raises ValueError with one sentence naming the first bad value of training config `c`
    (`name` says which config: ``config.sft``, ``config.verifier``, ...), before any work."""
    import math

    from mucode_jax.models.llama import ATTENTION_IMPLS, REMAT_CHOICES
    from mucode_jax.training.optim import HORIZONS, SCHEDULES

    def need(ok: bool, field: str, what: str) -> None:
        if not ok:
            value = c
            for part in field.split("."):
                value = value[part]
            raise ValueError(f"{name}.{field} must be {what}, got {value!r}.")

    def number(x) -> bool:
        return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)

    o = c.optim
    need(isinstance(c.batch_size, int) and c.batch_size >= 1, "batch_size", "a positive integer")
    need(isinstance(c.grad_accum, int) and c.grad_accum >= 1, "grad_accum", "a positive integer")
    need(isinstance(c.num_epochs, int) and c.num_epochs >= 1, "num_epochs", "a positive integer")
    need(isinstance(c.max_steps, int) and c.max_steps >= 0, "max_steps", ">= 0 (0: no cap)")
    need(number(o.lr) and o.lr >= 0, "optim.lr", "a number >= 0")
    need(o.schedule in SCHEDULES, "optim.schedule", f"one of {', '.join(SCHEDULES)}")
    need(o.horizon in HORIZONS, "optim.horizon", f"one of {', '.join(HORIZONS)}")
    need(isinstance(o.warmup_steps, int) and o.warmup_steps >= 0, "optim.warmup_steps", ">= 0")
    need(number(o.final_lr_fraction) and 0 <= o.final_lr_fraction <= 1,
         "optim.final_lr_fraction", "in [0, 1]")  # fmt: skip
    need(number(o.b1) and 0 <= o.b1 < 1, "optim.b1", "in [0, 1)")
    need(number(o.b2) and 0 <= o.b2 < 1, "optim.b2", "in [0, 1)")
    need(number(o.eps) and o.eps > 0, "optim.eps", "> 0")
    need(number(o.weight_decay) and o.weight_decay >= 0, "optim.weight_decay", ">= 0")
    need(o.clip_norm is None or (number(o.clip_norm) and o.clip_norm >= 0),
         "optim.clip_norm", ">= 0 (0: no clipping)")  # fmt: skip
    for field in ("dtype", "param_dtype"):
        need(c.model[field] in DTYPES, f"model.{field}", f"one of {', '.join(DTYPES)}")
    if "remat_policy" in c.model:
        need(c.model.remat_policy in REMAT_CHOICES, "model.remat_policy",
             f"one of {', '.join(REMAT_CHOICES)}")  # fmt: skip
    if "attention" in c.model:
        need(c.model.attention in ATTENTION_IMPLS, "model.attention",
             f"one of {', '.join(ATTENTION_IMPLS)}")  # fmt: skip
    if "loss" in c:
        need(c.loss in ("bt", "bce"), "loss", "'bt' or 'bce'")
    if "data" in c and "max_length" in c.data:
        need(isinstance(c.data.max_length, int) and c.data.max_length >= 2,
             "data.max_length", "an integer >= 2")  # fmt: skip
    micro_batch_size(c, name)


def micro_batch_size(c: ml_collections.ConfigDict, name: str = "config") -> int:
    """Rows per micro-batch: ``batch_size / grad_accum`` (ValueError unless it divides)."""
    if c.grad_accum < 1 or c.batch_size % c.grad_accum:
        raise ValueError(
            f"{name}.batch_size={c.batch_size} is not a multiple of {name}.grad_accum="
            f"{c.grad_accum}; make the batch a whole number of micro-batches."
        )
    return c.batch_size // c.grad_accum


def dtype_of(name: str | Any) -> Any:
    if not isinstance(name, str):
        return name
    if name not in DTYPES:
        raise ValueError(f"Unknown dtype {name!r}; use one of {sorted(DTYPES)}.")
    return DTYPES[name]


def model_config(config: ml_collections.ConfigDict, vocab_size: int | None = None) -> LlamaConfig:
    """The `LlamaConfig` of a random-init run: preset + overrides + dtypes + remat."""
    overrides = dict(config.model.overrides)
    if vocab_size is not None and "vocab_size" not in overrides:
        overrides["vocab_size"] = vocab_size
    return LlamaConfig.preset(
        config.model.preset,
        dtype=dtype_of(config.model.dtype),
        param_dtype=dtype_of(config.model.param_dtype),
        remat=bool(config.model.remat),
        remat_policy=config.model.get("remat_policy", "auto"),
        attention=config.model.get("attention", "auto"),
        **overrides,
    )


def remat_policies(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The remat policies the train step's compiler tries, best first (`steps.compile_step`):
    ``("dots", "full")`` for a rematerialised model with ``remat_policy="auto"``, else none (the
    model config's own policy)."""
    if config.model.remat and config.model.get("remat_policy", "auto") == "auto":
        return ("dots", "full")
    return ()
