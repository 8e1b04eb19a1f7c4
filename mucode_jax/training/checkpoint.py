"""Checkpoints with orbax: the train state and the data iterator's state, together.

Each checkpoint step directory holds ``state`` (params, optimizer state, step and
PRNG key, written by `ocp.args.StandardSave`, each host writing its own shards) and
``data`` (the grain iterator state as JSON). Saves are asynchronous (the step loop
goes on while the arrays are written); orbax writes into a temporary directory and
renames it when complete, so a run killed mid-save leaves the previous checkpoint as
the latest and the half-written one is ignored and cleaned up on restart.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

from mucode_jax.training.state import TrainState


class Checkpointer:
    """Periodic async saves, keep the newest ``keep``, restore the latest.

    Args:
      directory: where step directories go (created).
      keep: how many checkpoints to keep (None keeps all).
      async_save: write in the background.
    """

    def __init__(
        self, directory: str | os.PathLike, *, keep: int | None = 3, async_save: bool = True
    ):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: TrainState, data_state: dict[str, Any] | None) -> None:
        """Starts saving (returns once the arrays are copied off the devices)."""
        self.manager.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state.as_dict()),
                data=ocp.args.JsonSave(data_state or {}),
            ),
            force=True,
        )

    def restore(self, step: int, abstract_state: TrainState) -> tuple[TrainState, dict[str, Any]]:
        """Restores ``step`` onto the shardings of ``abstract_state`` (ShapeDtypeStructs).

        Any state with ``as_dict`` / ``from_dict`` works (the RL trainer's `RLState` too)."""
        try:
            out = self.manager.restore(
                int(step),
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state.as_dict()),
                    data=ocp.args.JsonRestore(),
                ),
            )
        except Exception as e:  # noqa: BLE001 - orbax's errors vary; each becomes one sentence
            raise self._restore_error(step, e) from e
        return type(abstract_state).from_dict(out["state"]), dict(out["data"] or {})

    def _restore_error(self, step: int, e: Exception) -> ValueError:
        directory = Path(self.manager.directory)
        d = directory / str(step)
        why = " ".join(f"{type(e).__name__}: {e}".split())
        why = why if len(why) <= 160 else why[:157].rsplit(" ", 1)[0] + " ..."
        items = [d / "state", d / "data"]
        incomplete = (
            not all(p.is_dir() and any(p.iterdir()) for p in items)
            or isinstance(e, FileNotFoundError)
            or any(m in why.lower() for m in ("not found", "not_found", "no such file"))
        )
        if incomplete:
            older = [s for s in self.manager.all_steps() if s < step]
            fix = (
                f"delete {d} to resume from step {max(older)}, the newest before it"
                if older
                else f"delete {d} to start the run over"
            )
            return ValueError(
                f"Checkpoint step {step} in {directory} is incomplete (files of it are missing: "
                f"{why}); {fix}."
            )
        return ValueError(
            f"Checkpoint step {step} in {directory} does not match this run's model or optimizer "
            f"({why}); use a fresh --workdir, or the settings that wrote it."
        )

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
