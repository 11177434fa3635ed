"""A run folder, :class:`RunDir`: the one list of the files a run holds, and reading and writing them.

What a run folder may contain (:attr:`RunDir.FILES`)::

    config.json            the TrainConfig (vggjax train, vggjax convert-torchvision)
    metrics.jsonl          one JSON line per finished epoch
    curves.png             train loss, val loss and val accuracy against epoch
    checkpoints/           orbax checkpoints: the last ``keep`` and the best (see ``checkpoint``)
    weights/               the final Flax variables (orbax, see ``weights``)
    events.out.tfevents.*  TensorBoard scalars (see ``metrics``)
    report.html            config, metrics, evaluation and pictures in one page (see ``report``)
    eval.json              vggjax eval's numbers
    confusion.png          vggjax eval's confusion matrix
    mistakes.png           vggjax eval's most confident mistakes

``vggjax train --overwrite`` removes exactly these and leaves anything else in the folder
alone. The checks here write nothing that stays, so a refused command leaves every folder
as it was.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax

from vggjax.config import TrainConfig
from vggjax.errors import CheckpointError, ConfigError
from vggjax.nn.fit import check_fits, from_config
from vggjax.nn.vgg import VGG
from vggjax.run import weights as weights_io
from vggjax.run.files import atomic_write_text


class LoadedRun(NamedTuple):
    """What :meth:`RunDir.load` returns: the config, model, variables and where they came from.

    Attributes:
      config: the run's ``config.json``.
      model: the :class:`~vggjax.nn.vgg.VGG` rebuilt from it (``config.num_classes`` classes).
      variables: ``{"params": ..., "batch_stats": ...}`` on the default device
        (``batch_stats`` only with BatchNorm).
      weights: the weights folder they came from.
    """

    config: TrainConfig
    model: VGG
    variables: dict[str, Any]
    weights: Path


def _file(name: str) -> property:
    return property(lambda self: self.path / name, doc=f"The path of ``{name}`` in the run folder.")


class RunDir:
    """A run folder: its file names, its config, its weights, and the checks before writing.

    ``RunDir("runs/a").config()`` reads ``config.json`` alone; ``.load()`` also rebuilds the
    model and restores the weights checked against it; ``.save(config, variables, ...)``
    writes a new run (as ``vggjax convert-torchvision`` does).

    Attributes:
      path: the folder.
    """

    CONFIG = "config.json"
    METRICS = "metrics.jsonl"
    CURVES = "curves.png"
    CHECKPOINTS = "checkpoints"
    WEIGHTS = "weights"
    EVENTS = "events.out.tfevents.*"  # a glob: tensorboardX names each file by time and host
    REPORT = "report.html"
    EVAL = "eval.json"
    CONFUSION = "confusion.png"
    MISTAKES = "mistakes.png"
    FILES = (CONFIG, METRICS, CURVES, CHECKPOINTS, WEIGHTS, EVENTS, REPORT, EVAL, CONFUSION, MISTAKES)

    config_file = _file(CONFIG)
    metrics_file = _file(METRICS)
    curves_file = _file(CURVES)
    checkpoints_dir = _file(CHECKPOINTS)
    weights_dir = _file(WEIGHTS)
    report_file = _file(REPORT)
    eval_file = _file(EVAL)
    confusion_file = _file(CONFUSION)
    mistakes_file = _file(MISTAKES)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def event_files(self) -> list[Path]:
        """The TensorBoard event files in the folder, in name (= time) order."""
        return sorted(self.path.glob(self.EVENTS))

    def files(self) -> list[Path]:
        """Every file and folder of :attr:`FILES` that exists now (nothing else in the folder)."""
        return [path for name in self.FILES for path in sorted(self.path.glob(name))]

    def is_run(self) -> bool:
        """Whether the folder holds a readable vggjax ``config.json``."""
        try:
            TrainConfig.load(self.config_file)
        except (ValueError, TypeError):  # missing, not JSON, or JSON of another tool
            return False
        return True

    def config(self) -> TrainConfig:
        """Reads and validates ``config.json``; the weights are not touched.

        Raises:
          CheckpointError: if the folder does not exist, has no ``config.json``, or it is not a
            usable config.
        """
        if not self.path.exists():
            raise CheckpointError(
                f"{self.path}: no such folder; give a folder written by vggjax train or vggjax "
                "convert-torchvision"
            )
        if not self.config_file.is_file():
            raise CheckpointError(
                f"{self.path} is not a vggjax run folder (no {self.CONFIG}); give a folder written by "
                "vggjax train or vggjax convert-torchvision"
            )
        try:
            return TrainConfig.load(self.config_file).validate()
        except (ValueError, TypeError) as e:  # ConfigError, ArchError, or a field of the wrong type
            raise CheckpointError(f"{self.config_file} is not a usable config: {e}") from None

    def write_config(self, config: TrainConfig) -> None:
        """Writes ``config.json`` atomically (the folder must exist)."""
        atomic_write_text(self.config_file, config.to_json() + "\n")

    def read_variables(self, weights: str | Path | None = None) -> dict[str, Any]:
        """The run's weights as saved, not checked against any model (fine-tuning builds another).

        Args:
          weights: a weights folder to read instead of the run's ``weights/``.

        Returns:
          ``{"params": ..., "batch_stats": ...}`` of numpy arrays (``batch_stats`` empty
          without BatchNorm), e.g. ``params/block1/conv1/kernel: float32[3, 3, 3, 64]``.

        Raises:
          CheckpointError: if the weights folder is missing or unreadable.
        """
        variables = weights_io.load_variables(self.weights_dir if weights is None else weights)
        return {"params": variables["params"], "batch_stats": variables.get("batch_stats") or {}}

    def load(self, checkpoint: str | Path | None = None) -> LoadedRun:
        """The run's config, the model rebuilt from it and its weights, checked to fit that model.

        Args:
          checkpoint: a weights folder to load instead of the run's ``weights/``.

        Returns:
          ``(config, model, variables, weights)`` as a :class:`LoadedRun`.

        Raises:
          CheckpointError: if the folder is not a run, its config is unusable, or the weights
            are missing, unreadable, or do not fit the config's model (naming the first
            variable that differs).
        """
        config = self.config()
        model = from_config(config)
        weights = self.weights_dir if checkpoint is None else Path(checkpoint)
        variables = self.read_variables(weights)
        shape = (1, config.image_size, config.image_size, config.channels)
        hint = f"; use the {self.CONFIG} the weights were trained with"
        check_fits(model, variables, shape, what=f"the weights {weights}", hint=hint)
        if not variables["batch_stats"]:
            del variables["batch_stats"]
        return LoadedRun(config, model, jax.device_put(variables), weights)

    def save(self, config: TrainConfig, variables: Mapping[str, Any], *, overwrite: bool) -> None:
        """Writes ``config.json`` and ``weights/`` into a new (or, with ``overwrite``, reused) folder.

        Raises:
          ConfigError: if the folder holds files and ``overwrite`` is False, or cannot be written.
        """
        self.check_new(overwrite=overwrite)
        self.prepare(overwrite=overwrite)
        self.write_config(config)
        weights_io.save_variables(self.weights_dir, dict(variables))

    def check_new(self, *, overwrite: bool) -> None:
        """Checks that a new run may be written here; writes nothing that stays.

        Allowed: a folder that does not exist yet (its parent writable), an empty writable
        folder, or an earlier vggjax run when ``overwrite`` is set.

        Raises:
          ConfigError: if the folder holds an earlier run (without ``overwrite``), is a file
            or a non-empty folder that is not a vggjax run, or cannot be written.
        """
        path = self.path
        if path.exists() and not path.is_dir():
            raise ConfigError(f"output folder {path} is a file; choose another --out")
        if path.is_dir() and any(path.iterdir()):
            if not self.is_run():
                raise ConfigError(
                    f"output folder {path} is not empty and is not a vggjax run (no readable "
                    f"{self.CONFIG}); choose another --out"
                )
            if not overwrite:
                raise ConfigError(
                    f"output folder {path} already holds a vggjax run; pass --resume {path} to continue "
                    "it, --overwrite to replace it, or choose another --out"
                )
        probe_in = path
        while not probe_in.exists():
            probe_in = probe_in.parent
        try:  # create and remove a temporary folder where the run's files would go
            if not probe_in.is_dir():
                raise NotADirectoryError(f"{probe_in} is a file")
            with tempfile.TemporaryDirectory(dir=probe_in, prefix=".vggjax-probe-"):
                pass
        except OSError as e:
            raise ConfigError(
                f"cannot write output folder {path}: {e.strerror or e}; choose a writable --out"
            ) from None

    def prepare(self, *, overwrite: bool) -> None:
        """Creates the folder; with ``overwrite``, first removes every file of :attr:`FILES`.

        Call :meth:`check_new` first. Only a run's own files (:meth:`files`: config, metrics,
        curves, checkpoints, weights, TensorBoard events, report and evaluation) are removed;
        anything else in the folder is left alone.

        Raises:
          ConfigError: if the folder cannot be created or an old file cannot be removed.
        """
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            for path in self.files() if overwrite else ():
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        except OSError as e:
            raise ConfigError(f"cannot create output folder {self.path}: {e.strerror or e}") from None

    def check_resumable(self) -> None:
        """Checks that the folder is a vggjax run with at least one complete checkpoint.

        Raises:
          CheckpointError: naming the path, if it does not exist, is not a run, or holds no
            checkpoint (never a silent fresh start).
        """
        if not self.path.is_dir():
            raise CheckpointError(
                f"--resume {self.path}: no such folder; give the --out folder of an earlier vggjax train"
            )
        if not self.is_run():
            raise CheckpointError(
                f"--resume {self.path}: not a vggjax run (no readable {self.CONFIG}); "
                "give the --out folder of an earlier vggjax train"
            )
        folder = self.checkpoints_dir
        steps = [p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()] if folder.is_dir() else []
        if not steps:
            raise CheckpointError(
                f"--resume {self.path}: the run holds no checkpoint (nothing in {folder}); "
                "it stopped before its first save, so start it again with --out and --overwrite"
            )
