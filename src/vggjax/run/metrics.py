"""TensorBoard event files in the run folder, through tensorboardX.

``tensorboard --logdir runs`` then compares runs side by side. Tags, all against the
global optimiser step:

    train/loss, train/images_per_s   every ``LOG_EVERY`` steps (values the loop has already
                                     brought to the host; no extra device sync)
    train/epoch_loss, train/epoch_acc, val/loss, val/acc, val/acc5   once per epoch
    test/loss, test/acc, test/acc5   at the last step (every epoch with --eval-test-every-epoch
                                     or --val-size 0, when the test split is the validation)
    config (text)                    the run's config.json, once
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from tensorboardX import SummaryWriter

from vggjax.run.records import SPLITS, fields

LOG_EVERY = 20  # train steps between logged points: one host sync per 20 steps


class MetricsWriter:
    """Writes a run's scalars to ``events.out.tfevents.*`` in its folder.

    Images/s is measured between consecutive :meth:`train` calls of an epoch, so it
    shows the current rate (the first point of a run includes XLA compilation).

    Args:
      run_dir: the run folder (must exist).
      config_json: the run's config, shown on TensorBoard's text tab (written once, not
        again on resume).
      active: False makes every method a no-op (processes other than 0 of a multi-process run).
      resume_step: the checkpoint step a resumed run continues from. Points an earlier
        process logged after it (between the checkpoint and a kill) are then hidden
        from TensorBoard (tensorboardX's ``purge_step``), so no step appears twice.
    """

    def __init__(
        self,
        run_dir: str | Path,
        config_json: str = "",
        *,
        active: bool = True,
        resume_step: int | None = None,
    ) -> None:
        self._writer = _NoWriter()
        if active:
            purge = None if resume_step is None else resume_step + 1
            # A nanosecond suffix: the default name (seconds and host) is the same for two
            # writers opened within a second, and the second would replace the first
            # file; TensorBoard reads the files in name order, which stays time order.
            self._writer = SummaryWriter(
                logdir=str(run_dir),
                flush_secs=30,
                purge_step=purge,
                filename_suffix=f".{time.time_ns()}",
            )
            if config_json and resume_step is None:
                self._writer.add_text("config", f"```\n{config_json}\n```", 0)
        self._last: tuple[int, float] | None = None

    def start_epoch(self, step: int) -> None:
        """Marks the start of an epoch at global ``step`` (the images/s clock restarts)."""
        self._last = (step, time.perf_counter())

    def train(self, step: int, loss: float, batch_size: int) -> None:
        """Logs the train loss at global ``step`` and the images/s since the previous point.

        Args:
          step: global optimiser step (1-based: after ``step`` updates).
          loss: the mean loss of that step's batch (already on the host).
          batch_size: images per step.
        """
        now = time.perf_counter()
        self._writer.add_scalar("train/loss", loss, step)
        if self._last is not None and step > self._last[0]:
            rate = (step - self._last[0]) * batch_size / (now - self._last[1])
            self._writer.add_scalar("train/images_per_s", rate, step)
        self._last = (step, now)

    def epoch(self, record: dict, only: Sequence[str] | None = None) -> None:
        """Logs one ``metrics.jsonl`` record (its ``only`` fields, if given) at its ``step``; flushes."""
        step = record["step"]
        tags = {"train_loss": "train/epoch_loss", "train_acc": "train/epoch_acc"}
        tags |= {key: key.replace("_", "/", 1) for split in SPLITS for key in fields(split)}
        for key, tag in tags.items():
            if key in record and (only is None or key in only):
                self._writer.add_scalar(tag, record[key], step)
        self._writer.flush()

    def close(self) -> None:
        """Flushes and closes the event file."""
        self._writer.close()


class _NoWriter:
    """Stands in for ``SummaryWriter`` on processes that write nothing."""

    def add_scalar(self, *args, **kwargs) -> None:
        pass

    flush = close = add_text = add_scalar
