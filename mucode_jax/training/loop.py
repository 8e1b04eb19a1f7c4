"""The step loop shared by generator and verifier training.

One loop, in this order: build the sharded state, compile the step ahead of time
(printing its memory), restore the latest checkpoint of the workdir if there is
one (train state *and* data iterator), then for each step: next batch -> its
iterator state -> jitted step (async dispatch, so the host prepares the next batch
while the devices compute) -> log -> maybe save. A run restarted after SIGKILL at
any moment resumes from the newest complete checkpoint and logs exactly the losses
of an uninterrupted run (same compiled program, same restored bits, same batches).

On several processes (`mucode_jax.multihost`) every process runs this same loop: before
anything is built the processes check that they hold the same config, the same data and
the same step count (one sentence when not, never a hang); each reads its own rows of
every global batch (`feed.BatchFeed`); orbax writes the checkpoint shards of every process
into the shared workdir; process 0 alone writes ``metrics.jsonl`` and TensorBoard, and the
others wait for it at a barrier at the end.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grain
import jax
import ml_collections
import numpy as np
import optax
from flax import nnx

from mucode_jax import multihost
from mucode_jax import sharding as sh
from mucode_jax.report import write_json_atomic
from mucode_jax.training import steps as steps_lib
from mucode_jax.training.checkpoint import Checkpointer
from mucode_jax.training.config import check_train_config, micro_batch_size, remat_policies
from mucode_jax.training.feed import BatchFeed
from mucode_jax.training.state import TrainState, abstract_like, create_train_state
from mucode_jax.training.writers import MetricsLog, Progress, TensorBoardWriter

log = logging.getLogger("mucode_jax.training")


@dataclasses.dataclass
class LoopResult:
    """What a finished run hands back.

    Attributes:
      graphdef, state: the model structure and the final train state.
      num_steps: optimizer steps of the run.
      last_metrics: the metrics of the last logged step.
    """

    graphdef: nnx.GraphDef
    state: TrainState
    num_steps: int
    last_metrics: dict[str, Any]

    def model(self) -> nnx.Module:
        return nnx.merge(self.graphdef, self.state.params)


def mesh_and_rules(config: ml_collections.ConfigDict) -> tuple[jax.sharding.Mesh, sh.LogicalRules]:
    rules = tuple(tuple(r) for r in config.rules) if config.rules else sh.DEFAULT_RULES
    return sh.make_mesh(tuple(tuple(a) for a in config.mesh)), rules


def run(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    make_model: Callable[[], nnx.Module] | nnx.Module,
    make_loss: Callable[[nnx.GraphDef], steps_lib.LossFn],
    make_optimizer: Callable[[int], tuple[optax.GradientTransformation, optax.Schedule]],
    make_dataset: Callable[[np.ndarray | None], grain.IterDataset],
    data_fingerprint: str = "",
    summarize: Callable[[dict[str, float]], dict[str, float]],
    evaluate: Callable[[nnx.GraphDef, TrainState], dict[str, float]] | None = None,
    eval_every: int = 0,
) -> LoopResult:
    """Trains until the dataset (its epochs) or ``config.max_steps`` is exhausted.

    Args:
      config: a training config (`mucode_jax.training.config`).
      workdir: checkpoints, ``metrics.jsonl`` and TensorBoard files go here.
      make_model: a model factory (random init) or a loaded model.
      make_loss: graphdef -> micro-batch loss (`steps.sft_loss_fn`, `steps.verifier_loss_fn`).
      make_optimizer: total steps -> (optimizer, schedule).
      make_dataset: keep_rows -> the grain pipeline of global batches of ``config.batch_size``
        rows, keeping only those rows (None: all), e.g. `pipeline.sft_dataset`; or of steps of
        1..grad_accum micro-batches (`pipeline.sft_step_dataset`, which also knows its length):
        each micro-batch count gets its own compiled step.
      data_fingerprint: a hash of the training data, compared across processes.
      summarize: raw step metrics (sums) -> what to log (adds means, rates).
      evaluate: optional (graphdef, state) -> metrics, run every ``eval_every`` steps and at
        the end; its values join that step's log record.
    """
    check_train_config(config)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    multihost.check_same(config, "the training config")
    multihost.check_same(data_fingerprint, "the training data")
    multihost.check_shared_directory(workdir)
    mesh, rules = mesh_and_rules(config)
    micro = micro_batch_size(config)
    steps_lib.check_batch_divides(micro, mesh, rules)
    accum = config.grad_accum
    feed = BatchFeed(config.batch_size, accum, mesh, rules)
    dataset = make_dataset(feed.rows if jax.process_count() > 1 else None)

    num_steps = _count_steps(dataset)
    if config.max_steps and config.max_steps > 0:
        num_steps = min(num_steps, config.max_steps)
    multihost.check_same(num_steps, "the number of training steps")
    if num_steps == 0:
        raise ValueError("The dataset yields no batch; nothing to train on.")
    check_resume(workdir, config, data_fingerprint, num_steps)
    optimizer, schedule = make_optimizer(num_steps)

    graphdef, state, shardings = create_train_state(
        make_model, optimizer, mesh, rules, seed=config.seed
    )
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    log.info(
        "model: %s parameters; mesh %s; %d steps", f"{n_params:,}", dict(mesh.shape), num_steps
    )

    step_fn = steps_lib.make_train_step(make_loss(graphdef), optimizer, schedule)
    # One compiled step per batch layout: one for fixed-row batches; for packed steps of
    # `pipeline.sft_step_dataset` one per number of micro-batches (at most grad_accum), each
    # compiled when first met, on every process at the same step.
    compiled_by_micro: dict[int, tuple[Any, Any]] = {}
    abs_state = abstract_like(state, shardings)

    def compiled_for(batch):
        a = feed.num_micro(batch)
        if a not in compiled_by_micro:
            spec = feed.global_spec(batch)
            exe = steps_lib.compile_step(
                step_fn, shardings, abs_state, spec, mesh, rules,
                log=log.info, remat_policies=remat_policies(config),
            )  # fmt: skip
            compiled_by_micro[a] = (exe, feed.shardings(spec))
            # Processes finish compiling at different times; the next collectives must not
            # start apart by more than the CPU collectives' 30 s rendezvous timeout.
            multihost.barrier(f"train step compiled ({a} micro-batches)")
        return compiled_by_micro[a]

    compiled_for(next(iter(dataset)))

    ckpt = Checkpointer(
        workdir / "checkpoints",
        keep=config.checkpoint.keep,
        async_save=config.checkpoint.async_save,
    )
    it = iter(dataset)
    start = 0
    latest = ckpt.latest_step()
    if latest is not None:
        try:
            state, data_state = ckpt.restore(latest, abstract_like(state, shardings))
        except ValueError:
            ckpt.close()  # its background threads must not outlive the one-sentence exit
            raise
        it.set_state(data_state)
        start = int(latest)
        log.info("resumed from %s at step %d", workdir / "checkpoints", start)
    is_main = jax.process_index() == 0
    metrics_log = MetricsLog(workdir / "metrics.jsonl", resume_step=start) if is_main else None
    tb = TensorBoardWriter(workdir / "tensorboard", resume_step=start) if is_main else None
    progress = Progress(num_steps, start, enabled=bool(config.progress) and is_main)

    last: dict[str, Any] = {}
    t_last, tokens_since, steps_since = time.perf_counter(), 0.0, 0
    t_start = t_last
    pending: list[tuple[int, Any]] = []
    try:
        for step in range(start, num_steps):
            try:
                batch = next(it)
            except StopIteration:
                break
            data_state = it.get_state()
            compiled, b_sh = compiled_for(batch)
            state, metrics = compiled(state, feed.put(batch, b_sh))
            pending.append((step + 1, metrics))
            done = step + 1
            is_last = done == num_steps
            if done % config.log_every == 0 or is_last:
                host = [(s, jax.device_get(m)) for s, m in pending]
                pending = []
                now = time.perf_counter()
                for _, m in host:
                    tokens_since += float(m.get("tokens", 0.0))
                    steps_since += 1
                rate = tokens_since / max(now - t_last, 1e-9)
                for s, m in host:
                    record = summarize({k: float(v) for k, v in m.items()})
                    record["tokens_per_s"] = rate
                    record["elapsed_s"] = now - t_start
                    if (
                        s == done
                        and evaluate is not None
                        and (is_last or (eval_every and s % eval_every == 0))
                    ):
                        record.update(evaluate(graphdef, state))
                    if metrics_log is not None:
                        metrics_log.write(s, record)
                        tb.scalars(s, record)
                    last = {"step": s, **record}
                progress.update(steps_since, loss=last.get("loss"), tok_s=round(rate))
                t_last, tokens_since, steps_since = now, 0.0, 0
            if done % config.checkpoint.every_steps == 0 or is_last:
                ckpt.save(done, state, data_state)
        ckpt.wait()
    except jax.errors.JaxRuntimeError as e:
        if jax.process_count() == 1:
            raise
        raise multihost.MultihostError(
            f"A step failed across processes ({str(e).splitlines()[0][:160]}), most likely because "
            "another process died; see the other processes' logs and restart the job on every "
            "process to resume from the last checkpoint."
        ) from None
    finally:
        progress.close()
        ckpt.close()
        if metrics_log is not None:
            metrics_log.close()
            tb.close()
    multihost.barrier("training finished")
    return LoopResult(graphdef=graphdef, state=state, num_steps=num_steps, last_metrics=last)


RUN_SETTINGS = "run_settings.json"
# What a resumed run may change: how it reports and saves, and the device layout (orbax
# restores the checkpoint onto any mesh); in `model`, how attention is computed and what a
# rematerialised layer keeps (the same function, other kernels and memory).
_FREE = ("progress", "checkpoint", "log_every", "export_hf", "mesh", "rules")
_FREE_MODEL = ("attention", "remat_policy")


def run_settings(config: ml_collections.ConfigDict, data_fingerprint: str, num_steps: int):
    """What makes a run the same run: its config (less `_FREE`), its data and its steps."""
    cfg = {k: v for k, v in config.to_dict().items() if k not in _FREE}
    out = {"config": cfg, "data": data_fingerprint, "num_steps": num_steps}
    return _without_free_model(json.loads(json.dumps(out, sort_keys=True, default=repr)))


def _without_free_model(settings: Any) -> Any:
    """``settings`` less `_FREE_MODEL` (also read from files written before they were free)."""
    model = settings.get("config", {}).get("model") if isinstance(settings, dict) else None
    if isinstance(model, dict):
        settings["config"]["model"] = {k: v for k, v in model.items() if k not in _FREE_MODEL}
    return settings


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def check_resume(
    workdir: Path, config: ml_collections.ConfigDict, data_fingerprint: str, num_steps: int
) -> None:
    """Refuses to resume a checkpointed run of `workdir` with other settings (a changed batch
    size, epoch count, learning rate or data would continue another run's steps and mix both
    in ``metrics.jsonl``); otherwise records this run's settings there (process 0).

    Raises:
      ValueError: one sentence naming what changed.
    """
    path = workdir / RUN_SETTINGS
    new = run_settings(config, data_fingerprint, num_steps)
    ckpts = workdir / "checkpoints"
    checkpointed = ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir())
    if checkpointed and path.is_file():
        try:
            old = _without_free_model(json.loads(path.read_text()))
        except ValueError:
            old = None
        if old != new:
            a, b = _flat(old if isinstance(old, dict) else {}), _flat(new)
            names = {"data": "the training data", "num_steps": "the number of steps"}
            changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
            what = [names.get(k, k.removeprefix("config.")) for k in changed]
            more = f" and {len(what) - 6} more" if len(what) > 6 else ""
            raise ValueError(
                f"{workdir} holds checkpoints of a run with other settings ("
                f"{', '.join(what[:6])}{more} changed); use a fresh workdir, or the old "
                "settings to resume that run."
            )
        return
    if jax.process_index() == 0:
        write_json_atomic(path, new)


def _count_steps(dataset: grain.IterDataset) -> int:
    if hasattr(dataset, "__len__"):  # pipeline.StepDataset knows its steps
        return len(dataset)
    n = 0
    for _ in dataset:
        n += 1
    return n
