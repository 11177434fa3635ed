"""Checkpoints and weights on disk with orbax-checkpoint.

A run's checkpoints live in ``<run>/checkpoints/<step>/``, written by an orbax
``CheckpointManager``. Each holds two items:

``state``
    ``{"params", "batch_stats", "opt_state", "step", "rng"}``, plus ``"ema"`` for a run that
    keeps an EMA of its weights: the whole :class:`~vggjax.training.steps.TrainState` and
    the dropout key's data (``uint32[2]``).
``meta``
    JSON: the model it fits (``model``), the data-order :class:`~vggjax.run.meta.Position`,
    the per-step metrics of the epoch in progress (``partial``) and every finished
    epoch's ``metrics.jsonl`` record (``records``); :mod:`vggjax.run.meta` defines the first two.

Orbax writes each checkpoint into a temporary folder and renames it to ``<step>`` once
complete, so a process killed during a save leaves the previous checkpoint as the
newest one; leftover temporary folders are removed when the run is opened again.
The last ``keep`` checkpoints are kept, plus the one with the best validation accuracy.

The final weights alone (``<run>/weights``) are written by :mod:`vggjax.run.weights`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from vggjax.errors import CheckpointError, first_line
from vggjax.run.meta import Position, check_signature
from vggjax.run.weights import draining_event_loops, load_variables, save_variables  # noqa: F401

if TYPE_CHECKING:  # the state checkpointed; run/ needs only its fields at run time
    from vggjax.training.steps import TrainState


@dataclasses.dataclass
class Restored:
    """A checkpoint read back by :meth:`RunCheckpoints.restore`.

    Attributes:
      step: the checkpoint's step (SGD updates done).
      state: the train state, arrays in the ``sharding`` given to :meth:`RunCheckpoints.restore`.
      rng: the run's base dropout key.
      position: the next batch to train.
      partial: per-step ``{"loss", "accuracy", "grad_norm"}`` (``np.float32``) of the
        epoch in progress, in step order.
      records: the ``metrics.jsonl`` records of the finished epochs.
    """

    step: int
    state: TrainState
    rng: jax.Array
    position: Position
    partial: list[dict[str, np.float32]]
    records: list[dict]


def _val_acc(metrics: dict) -> float:
    # Step checkpoints carry no validation accuracy and never count as best.
    return metrics.get("val_acc", -math.inf)


class RunCheckpoints:
    """The checkpoints of one run: save, list, restore, keep the last K and the best.

    Use as a context manager (or call :meth:`close`) so that a save still in flight
    (saves are asynchronous) finishes before the process moves on.

    Args:
      directory: the checkpoints folder, ``<run>/checkpoints``; created by the first save.
      keep: how many of the newest checkpoints to keep (the best by validation
        accuracy is kept as well).
    """

    def __init__(self, directory: str | Path, *, keep: int = 3):
        self.directory = Path(directory).absolute()
        policy = checkpoint_managers.AnyPreservationPolicy(
            [
                checkpoint_managers.LatestN(n=keep),
                checkpoint_managers.BestN(get_metric_fn=_val_acc, n=1),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy,
            best_fn=_val_acc,  # makes orbax store each checkpoint's metrics
            cleanup_tmp_directories=True,
            create=False,
        )
        try:  # reads every checkpoint's metrics
            self._manager = ocp.CheckpointManager(
                self.directory, item_names=("state", "meta"), options=options
            )
        except Exception as e:  # orbax and tensorstore raise many types
            bad = next((p for p in sorted(self.directory.glob("[0-9]*")) if not _json_readable(p)), None)
            raise CheckpointError(
                f"checkpoint {bad or self.directory} is truncated or unreadable ({first_line(e, 160)}); "
                "delete that folder to resume from the one before it"
            ) from None

    def __enter__(self) -> RunCheckpoints:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Waits for a save in flight, then releases orbax's threads."""
        self._manager.close()

    def wait(self) -> None:
        """Blocks until the last save is on disk."""
        self._manager.wait_until_finished()

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints on disk, oldest first."""
        return list(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None if there is none."""
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The step of the end-of-epoch checkpoint with the best validation accuracy, if any."""
        step = self._manager.best_step()
        if step is None or "val_acc" not in (self._manager.metrics(step) or {}):
            return None
        return step

    def save(
        self,
        state: TrainState,
        *,
        rng: jax.Array,
        position: Position,
        model: dict,
        partial: list[dict] = (),
        records: list[dict] = (),
        val_acc: float | None = None,
    ) -> int:
        """Starts saving a checkpoint at ``state.step``; returns the step.

        The arrays are copied to host memory before this returns, so ``state`` may be
        donated to the next train step at once; the files are written in the background.

        Args:
          state: the train state to save.
          rng: the run's base dropout key.
          position: the next batch to train.
          model: what the params fit (``vggjax.run.meta.model_signature``), checked on restore.
          partial: per-step metrics of the epoch in progress (host or device scalars).
          records: the ``metrics.jsonl`` records of the finished epochs.
          val_acc: the validation accuracy of an end-of-epoch checkpoint (used to keep the best).

        Raises:
          CheckpointError: if the folder cannot be written.
        """
        step = int(state.step)
        # own copies: state may be donated next
        tree = jax.tree.map(np.array, jax.device_get(_state_tree(state, rng)))
        meta = {
            "model": model,
            "position": dataclasses.asdict(position),
            "partial": [{k: float(v) for k, v in m.items()} for m in jax.device_get(list(partial))],
            "records": list(records),
        }
        metrics = {} if val_acc is None else {"val_acc": float(val_acc)}
        try:
            self._manager.save(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)),
                metrics=metrics,
                force=True,
            )
        except OSError as e:
            raise CheckpointError(f"cannot write a checkpoint in {self.directory}: {e}") from None
        return step

    def restore(
        self,
        target: TrainState,
        rng: jax.Array,
        *,
        model: dict,
        step: int | None = None,
        sharding: jax.sharding.Sharding | None = None,
    ) -> Restored:
        """Reads a checkpoint into the tree, shapes and dtypes of ``target``.

        Args:
          target: a freshly initialised state of the run's model and optimizer.
          rng: a key of the run's PRNG implementation (its value is not used).
          model: what ``target`` is (``vggjax.run.meta.model_signature``); must match the checkpoint.
          step: which checkpoint; the newest if None.
          sharding: where orbax puts every restored array, e.g. ``parallel.replicated(mesh)``
            as training's ``init`` puts the state; a mesh over several processes makes the
            restore collective (every process must call it). None: this process's first device.

        Raises:
          CheckpointError: if there is no checkpoint, it was written for another model,
            or it is truncated or unreadable (naming the folder).
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(
                f"no checkpoint in {self.directory}; the run was stopped before its first save, "
                "start it again without --resume"
            )
        where = self.directory / str(step)
        meta = self._restore_item(where, meta=ocp.args.JsonRestore())["meta"]
        check_signature(meta.get("model") if isinstance(meta, dict) else None, model, where=where)
        tree = _state_tree(target, rng)
        # Orbax reads each array straight into ``sharding`` (in a multi-process run, each
        # process fills only its own devices), placed as a fresh state is placed, so a
        # resumed run reuses the straight run's compiled step.
        sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding), tree)
        saved = self._restore_item(where, state=ocp.args.StandardRestore(abstract))["state"]
        state = target.replace(
            step=saved["step"],
            params=saved["params"],
            batch_stats=saved["batch_stats"],
            opt_state=saved["opt_state"],
            ema=saved.get("ema"),
        )
        return Restored(
            step=step,
            state=state,
            rng=jax.random.wrap_key_data(saved["rng"], impl=jax.random.key_impl(rng)),
            position=Position(**meta["position"]),
            partial=[{k: np.float32(v) for k, v in m.items()} for m in meta["partial"]],
            records=meta["records"],
        )

    def val_acc(self, step: int) -> float | None:
        """The validation accuracy stored with ``step``'s end-of-epoch checkpoint (what ``best_step``
        compares); None for a step checkpoint or an unknown step."""
        return (self._manager.metrics(step) or {}).get("val_acc")

    def meta(self, step: int | None = None) -> dict[str, Any] | None:
        """The newest (or ``step``'s) checkpoint's ``meta`` item alone; None if there is no checkpoint.

        Raises:
          CheckpointError: if that item is truncated or unreadable.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        return self._restore_item(self.directory / str(step), meta=ocp.args.JsonRestore())["meta"]

    def read(self, step: int | None = None) -> dict[str, Any]:
        """A checkpoint as saved, without a target: ``{"state": {...}, "meta": {...}}``.

        For inspection; :meth:`restore` is what training resumes with.

        Raises:
          CheckpointError: if there is no checkpoint, or it is truncated or unreadable.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        return self._restore_item(
            self.directory / str(step), state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()
        )

    def _restore_item(self, where: Path, **args: Any) -> dict:
        step = int(where.name)
        try:
            with draining_event_loops():
                return self._manager.restore(step, args=ocp.args.Composite(**args))
        except Exception as e:  # orbax and tensorstore raise many types
            raise CheckpointError(
                f"checkpoint {where} is truncated or unreadable ({first_line(e, 160)}); delete that folder "
                "to resume from the one before it"
            ) from None


def _state_tree(state: TrainState, rng: jax.Array) -> dict[str, Any]:
    """The ``state`` item: the train state's arrays (``ema`` only if kept) and the dropout key's data."""
    tree = {
        "params": state.params,
        "batch_stats": state.batch_stats,
        "opt_state": state.opt_state,
        "step": state.step,
        "rng": jax.random.key_data(rng),
    }
    return tree if state.ema is None else {**tree, "ema": state.ema}


def _json_readable(step_dir: Path) -> bool:
    """Whether the JSON files orbax reads when it lists ``step_dir`` parse."""
    for name in ("_CHECKPOINT_METADATA", "metrics/metrics"):
        try:
            if (step_dir / name).exists():
                json.loads((step_dir / name).read_text())
        except (OSError, ValueError):
            return False
    return True
