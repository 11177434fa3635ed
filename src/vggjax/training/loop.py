"""The epoch loop: train steps, evaluation, metrics, checkpoints, NaN guard, stop signals.

:meth:`Trainer.fit` runs from a :class:`~vggjax.run.checkpoint.Position` to the last epoch.
Its two points where other features hook in:

* :meth:`Trainer.train_epoch` — one pass over the shuffled training set, each batch
  split over the devices; every ``SYNC_EVERY`` steps it syncs with the host (progress,
  TensorBoard, NaN/Inf check); it saves a step checkpoint every ``checkpoint_every``
  steps and stops on a signal.
* :meth:`Trainer.end_epoch` — evaluation, the ``metrics.jsonl`` record, TensorBoard,
  curves and the end-of-epoch checkpoint.

SIGINT and SIGTERM are caught while :meth:`Trainer.fit` runs (:mod:`vggjax.training.signals`):
the loop finishes the current step, saves a checkpoint and raises
:class:`~vggjax.errors.Interrupted`. A second signal stops at once (the last complete
checkpoint stays usable). With several processes, all of them stop at the same step.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
from jax.sharding import NamedSharding
from tqdm.auto import tqdm

from vggjax import data
from vggjax.config import TrainConfig
from vggjax.errors import Interrupted
from vggjax.run.checkpoint import RunCheckpoints
from vggjax.run.files import write_jsonl
from vggjax.run.folder import RunDir
from vggjax.run.meta import Position
from vggjax.run.metrics import LOG_EVERY, MetricsWriter
from vggjax.run.plots import plot_curves
from vggjax.run.records import fields, scores
from vggjax.training import parallel
from vggjax.training.guards import all_finite, diverged, warn_if_stuck
from vggjax.training.signals import stop_signals
from vggjax.training.steps import TrainState

SYNC_EVERY = LOG_EVERY  # steps between host syncs (progress, TensorBoard, NaN/Inf check)
TIMING_FIELDS = ("seconds", "train_images_per_s")  # the record fields that vary run to run


def evaluate(
    eval_fn: Callable, state: TrainState, ds: dict, batch_size: int, sharding: NamedSharding | None = None
) -> dict[str, float]:
    """Loss, top-1 and top-5 accuracy over every example of ``ds`` (padded, masked batches).

    With ``sharding`` (``parallel.batch_sharding``), each batch is split over the mesh;
    ``eval_fn`` returns replicated sums, so every process gets the same result.
    """
    put = (lambda b: parallel.shard_batch(b, sharding)) if sharding is not None else (lambda b: b)
    sums = [eval_fn(state, put(b)) for b in data.batches(ds, batch_size, shuffle=False, pad=True)]
    total = jax.tree.map(lambda *xs: float(np.sum(xs)), *jax.device_get(sums))
    n = total["count"]
    return {"loss": total["loss"] / n, "acc": total["correct"] / n, "acc5": total["correct5"] / n}


@dataclasses.dataclass
class Trainer:
    """Runs the epochs of one run and writes its metrics and checkpoints.

    Attributes:
      config: the run's config.
      train_fn: jitted ``train_step(state, batch, rng) -> (state, metrics)``.
      eval_fn: jitted ``eval_step(state, batch) -> sums``, the validation after each epoch.
      final_eval_fn: the same with the run's ``tta`` views, which score the final weights: the last
        epoch's splits and the test split at the end (the record then holds ``"tta"``). It is
        ``eval_fn`` itself when the two are the same.
      train_ds: ``{"image": uint8[N, 28, 28, 1], "label": int32[N]}``.
      evals: the splits scored after every epoch, by record prefix (``"val"``, ``"test"``), each
        a loader of a dataset like ``train_ds``; the first one picks the best checkpoint.
      rng: the run's base dropout key (each step folds in its step number).
      steps_per_epoch: train steps per epoch (last partial batch dropped).
      schedule: the learning rate as a function of the number of updates done.
      checkpoints: where checkpoints go.
      model: the model signature stored with each checkpoint.
      run_dir: the run folder (``metrics.jsonl``, ``curves.png``).
      board: TensorBoard scalars (inactive on processes other than 0).
      batch_sharding: how each global batch is split over the devices (None: as given).
      main: whether this is process 0, the one that writes files.
      records: ``metrics.jsonl`` records of the finished epochs (restored ones first).
      progress: show a tqdm bar per epoch.
      log: where one-line messages go.
    """

    config: TrainConfig
    train_fn: Callable
    eval_fn: Callable
    final_eval_fn: Callable
    train_ds: dict
    evals: dict[str, Callable[[], dict]]
    rng: jax.Array
    steps_per_epoch: int
    schedule: Callable[[int], float]
    checkpoints: RunCheckpoints
    model: dict
    run_dir: Path
    board: MetricsWriter
    batch_sharding: NamedSharding | None = None
    main: bool = True
    records: list[dict] = dataclasses.field(default_factory=list)
    progress: bool = True
    log: Callable[[str], None] = print

    def fit(self, state: TrainState, start: Position, partial: list[dict] = ()) -> TrainState:
        """Trains from ``start`` to the end of the last epoch; returns the final state.

        Args:
          state: the state at ``start``.
          start: the next batch to train.
          partial: per-step metrics of the batches of ``start.epoch`` already trained.

        Raises:
          DivergedError: at the first non-finite loss or gradient norm (no checkpoint of
            it is saved).
          Interrupted: on SIGINT or SIGTERM, after saving a checkpoint.
        """
        with stop_signals() as self._stop:
            for epoch in range(start.epoch, self.config.epochs + 1):
                first = start.batch if epoch == start.epoch else 0
                done = list(partial) if epoch == start.epoch else []
                began = time.perf_counter()
                state, metrics = self.train_epoch(state, epoch, first, done)
                self.end_epoch(state, epoch, metrics, steps_run=len(metrics) - len(done), began=began)
                if self._stop.now(at_sync=True) and epoch < self.config.epochs:
                    self._interrupt(state)
        self.checkpoints.wait()
        return state

    def train_epoch(
        self, state: TrainState, epoch: int, first: int, done: list[dict]
    ) -> tuple[TrainState, list[dict]]:
        """Trains batches ``first + 1`` … of ``epoch``; returns the state and every step's metrics.

        ``done`` holds the metrics of batches 1 … ``first`` (from a checkpoint); the
        returned list continues it.
        """
        steps, every = self.steps_per_epoch, self.config.checkpoint_every
        batches = data.batches(
            self.train_ds,
            self.config.batch_size,
            shuffle=True,
            seed=self.config.seed,
            epoch=epoch,
            drop_remainder=True,
        )
        metrics, checked = list(done), len(done)
        bar = tqdm(
            total=steps,
            initial=first,
            desc=f"epoch {epoch}/{self.config.epochs}",
            unit="step",
            disable=not self.progress,
            leave=False,
        )
        began = time.perf_counter()
        self.board.start_epoch((epoch - 1) * steps + first)
        put = (
            (lambda b: parallel.shard_batch(b, self.batch_sharding)) if self.batch_sharding else (lambda b: b)
        )
        with bar:
            for i, batch in enumerate(itertools.islice(batches, first, None), first + 1):
                state, m = self.train_fn(state, put(batch), self.rng)
                metrics.append(m)
                bar.update()
                step = (epoch - 1) * steps + i
                save = every is not None and step % every == 0 and i < steps
                log_point = i % SYNC_EVERY == 0 or i == steps
                stop = self._stop.now(at_sync=log_point or save)
                if log_point or save or stop:
                    self.check_finite(metrics, checked, epoch)
                    checked = len(metrics)
                if log_point:
                    loss = float(metrics[-1]["loss"])
                    self.board.train(step, loss, self.config.batch_size)
                    rate = (i - first) * self.config.batch_size / (time.perf_counter() - began)
                    bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{rate:.0f}")
                if save or stop:
                    self._save(state, Position(epoch, i), metrics)
                if stop:
                    self._interrupt(state)
        return state, metrics

    def end_epoch(self, state: TrainState, epoch: int, metrics: list[dict], *, steps_run: int, began: float):
        """Evaluates, appends and writes the epoch's record, saves the epoch checkpoint."""
        train_seconds = time.perf_counter() - began
        means = jax.tree.map(lambda *xs: float(np.mean(xs)), *jax.device_get(metrics))
        scored = {split: self._evaluate(state, load) for split, load in self.evals.items()}
        selected = scored[next(iter(scored))]["acc"]  # stored as the checkpoint's "val_acc" (the best)
        views = self._views(epoch)
        if views != "none" and self.final_eval_fn is not self.eval_fn:  # the last epoch: score with tta too
            scored = {s: self._evaluate(state, load, self.final_eval_fn) for s, load in self.evals.items()}
        record = {
            "epoch": epoch,
            "step": epoch * self.steps_per_epoch,
            "train_loss": means["loss"],
            "train_acc": means["accuracy"],
            **{k: v for split, r in scored.items() for k, v in scores(split, r).items()},
            **({"tta": views} if views != "none" else {}),
            "seconds": round(time.perf_counter() - began, 3),
            "train_images_per_s": round(steps_run * self.config.batch_size / train_seconds, 1),
        }
        self.records.append(record)
        self._write(record)
        said = "".join(f", {s} loss {r['loss']:.4f}, {s} acc {r['acc']:.4f}" for s, r in scored.items())
        said += f" (--tta {views})" if views != "none" else ""
        self.log(
            f"epoch {epoch}/{self.config.epochs}: train loss {record['train_loss']:.4f}{said}, "
            f"{record['seconds']:.1f} s"
        )
        if epoch == 1:
            warn_if_stuck(record["train_loss"], data.NUM_CLASSES, self.log)
        self._save(state, Position(epoch + 1, 0), [], val_acc=selected)
        return record

    def score_test(self, state: TrainState, load_test: Callable[[], dict]) -> dict:
        """Adds ``state``'s ``test_*`` scores to the last record (and ``test/*`` scalars); returns it.

        Nothing is loaded when that record holds them already (the test split scored every
        epoch). The end-of-epoch checkpoint keeps the record without them, so a run resumed
        for more epochs scores its new final state.
        """
        if "test_acc" in self.records[-1]:
            return self.records[-1]
        test = load_test()
        result = self._evaluate(state, lambda: test, self.final_eval_fn)
        views = f", --tta {self.config.tta}" if self.config.tta != "none" else ""
        self.records[-1] = last = {**self.records[-1], **scores("test", result)}
        self._write(last, only=fields("test"))
        self.log(
            f"test loss {result['loss']:.4f}, test acc {result['acc']:.4f}, test acc5 {result['acc5']:.4f} "
            f"({len(test['label'])} test images, the final weights{views})"
        )
        return last

    def _evaluate(self, state: TrainState, load: Callable[[], dict], fn: Callable | None = None) -> dict:
        """``load()``'s scores by ``fn`` (default ``eval_fn``): ``{"loss", "acc", "acc5"}``."""
        fn = self.eval_fn if fn is None else fn
        return evaluate(fn, state, load(), self.config.eval_batch_size, self.batch_sharding)

    def _views(self, epoch: int) -> str:
        """The ``tta`` of the scores recorded for ``epoch``: the run's on the last epoch or with
        ``tta_every_epoch``, else ``"none"`` (selection always uses the ``eval_fn`` scores)."""
        last = epoch == self.config.epochs or self.final_eval_fn is self.eval_fn
        return self.config.tta if last else "none"

    def _write(self, record: dict, only: tuple[str, ...] | None = None) -> None:
        """Writes ``metrics.jsonl``, ``record``'s TensorBoard scalars (or its ``only`` ones), the curves."""
        if self.main:
            run = RunDir(self.run_dir)
            write_jsonl(run.metrics_file, self.records)
            self.board.epoch(record, only=only)
            plot_curves(self.records, run.curves_file)

    def check_finite(self, metrics: list[dict], start: int, epoch: int) -> None:
        """Raises :class:`DivergedError` for the first of ``metrics[start:]`` with a non-finite value.

        ``metrics[k]`` is batch ``k + 1`` of ``epoch``.
        """
        for k, m in enumerate(jax.device_get(metrics[start:]), start):
            loss, grad_norm = float(m["loss"]), float(m["grad_norm"])
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                step = (epoch - 1) * self.steps_per_epoch + k + 1
                self._diverged(step, f"loss {loss:.4g}, gradient norm {grad_norm:.4g}")

    def _diverged(self, step: int, what: str) -> None:
        lr = float(self.schedule(step - 1))
        raise diverged(step, what, steps_per_epoch=self.steps_per_epoch, lr=lr, checkpoints=self.checkpoints)

    def _save(self, state, position: Position, partial: list[dict], val_acc: float | None = None) -> None:
        """Saves a checkpoint, unless the update that made ``state`` left non-finite params."""
        if not bool(all_finite(state.params)):
            self._diverged(int(state.step), "non-finite parameters after the update")
        self.checkpoints.save(
            state,
            rng=self.rng,
            position=position,
            model=self.model,
            partial=partial,
            records=self.records,
            val_acc=val_acc,
        )

    def _interrupt(self, state) -> None:
        self.checkpoints.wait()
        raise Interrupted(
            f"stopped by {signal.Signals(self._stop.signum).name} at step {int(state.step)}; checkpoint "
            f"saved in {self.checkpoints.directory}; resume with: vggjax train --resume {self.run_dir}",
            self._stop.signum,
        )
