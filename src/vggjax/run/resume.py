"""The config ``vggjax train`` runs with: a preset and flags, an ``--init-from`` run's network, or a
resumed run's saved config.

:func:`train_config` is the whole of that merge, so the command line only parses flags and
calls it. Like :class:`~vggjax.run.folder.RunDir`'s checks it writes nothing, and it reads an
``--init-from`` run's ``config.json`` only (its weights are read once, by training).
:func:`already_complete` tells a resume that has nothing left to do.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vggjax.config import TrainConfig, flag_name
from vggjax.errors import ConfigError, shorten
from vggjax.interop import hub
from vggjax.presets import get_preset
from vggjax.run.files import read_jsonl
from vggjax.run.folder import RunDir
from vggjax.run.meta import Position

# Settings that may change when a run is resumed: they do not change the trajectory
# so far. A longer --epochs trains on; the cosine schedule (or warm-up) is then
# recomputed for the new total, so only a constant schedule equals a straight run.
CHANGEABLE_ON_RESUME = ("epochs", "checkpoint_every", "keep")


# Fields that define the network (and so must match --init-from weights); the rest is training.
MODEL_FIELDS = ("arch", "width", "head", "hidden")


def inherit_model(config: TrainConfig, source: TrainConfig) -> TrainConfig:
    """``config`` with the network fields (arch, width, head, hidden) of ``source``."""
    return dataclasses.replace(config, **{name: getattr(source, name) for name in MODEL_FIELDS})


def check_same_model(config: TrainConfig, source: TrainConfig) -> None:
    """Checks that ``config`` builds the network whose weights ``source`` holds.

    Raises:
      ConfigError: naming the first field that differs and both values.
    """
    for name in MODEL_FIELDS:
        mine, theirs = getattr(config, name), getattr(source, name)
        if mine != theirs:
            flag = name.replace("_", "-")
            raise ConfigError(
                f"--{flag} {shorten(repr(mine))} differs from the --init-from run's {theirs!r}; "
                f"drop --{flag} (the network comes from the weights)"
            )


def train_config(
    overrides: Mapping[str, Any],
    *,
    preset: str | None = None,
    resume: str | None = None,
    out: str | None = None,
    overwrite: bool = False,
    multi_process: bool = False,
) -> tuple[TrainConfig, str, list[str]]:
    """The config, run folder and notes of a ``vggjax train`` command, checked before anything runs.

    A new run is ``preset`` (``"default"`` if None) with ``overrides`` on top; with an
    ``init_from`` override, the network fields (arch, width, head, hidden) come from that
    run's ``config.json`` instead of the preset. A resumed run is the saved config, which
    flags given again must agree with (see :func:`resume_config`).

    Args:
      overrides: config fields given on the command line, e.g. ``{"lr": 0.1, "init_from": "runs/a"}``.
      preset: the ``--preset`` name.
      resume: the ``--resume`` folder.
      out: the ``--out`` folder (a new run's default is ``runs/<timestamp>``).
      overwrite: ``--overwrite``: a new run may replace an earlier one in ``out``.
      multi_process: the run spans several processes, which need one folder named by ``--out``.

    Returns:
      ``(config, out, notes)``: the validated config, the run folder, and lines to print
      (a resumed run's schedule change).

    Raises:
      ConfigError: for an empty folder flag, an unknown preset, an invalid setting, an
        ``out`` that may not be written, ``resume`` with ``overwrite`` or another ``out``,
        or a flag that disagrees with the resumed run's saved config.
      ArchError: for an invalid arch or width.
      CheckpointError: if ``init_from`` is neither a run folder nor torchvision weights by name
        (:func:`vggjax.interop.hub.named`; those are downloaded here if need be), or ``resume``
        is not a resumable run.
    """
    folders = {"out": out, "resume": resume, **{k: overrides.get(k) for k in ("init_from", "data_dir")}}
    for name, value in folders.items():
        # an empty value (e.g. an unset shell variable) would read as no flag at all, or as "."
        if value is not None and not str(value).strip():
            flag = f"--{flag_name(name)}"
            raise ConfigError(f"{flag} is empty; give it a folder, or drop {flag}")
    base = get_preset(preset) if preset else None
    if overrides.get("init_from") and not resume:
        base = inherit_model(base or get_preset("default"), hub.run_config(overrides["init_from"]))
    if multi_process and not (out or resume):
        raise ConfigError("a multi-process run needs --out, one folder that every process can reach")
    if resume:
        if out and Path(out).absolute() != Path(resume).absolute():
            raise ConfigError(f"--out {out} and --resume {resume} differ; drop --out to resume")
        if overwrite:
            raise ConfigError("--resume and --overwrite contradict each other; choose one")
        config, notes = resume_config(resume, overrides, preset=base)
        return config, resume, notes
    config = dataclasses.replace(base or get_preset("default"), **overrides).validate()
    out = out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}"
    RunDir(out).check_new(overwrite=overwrite)
    return config, out, []


def resume_config(
    run_dir: str | Path, overrides: Mapping[str, Any], *, preset: TrainConfig | None = None
) -> tuple[TrainConfig, list[str]]:
    """The config to resume ``run_dir`` with: the saved one, checked against flags given again.

    Args:
      run_dir: the run folder.
      overrides: config fields given on the command line.
      preset: the preset named on the command line, if any; all its fields are then
        compared as if given.

    Returns:
      ``(config, notes)``: the saved config with any of :data:`CHANGEABLE_ON_RESUME` taken
      from ``overrides``, and a note when a new ``epochs`` recomputes the LR schedule.

    Raises:
      CheckpointError: if ``run_dir`` is not a resumable run (see :meth:`RunDir.check_resumable`).
      ConfigError: if a flag disagrees with the saved config, naming both values.
    """
    run = RunDir(run_dir)
    run.check_resumable()
    saved = TrainConfig.load(run.config_file)
    given = {**(dataclasses.asdict(preset) if preset else {}), **overrides}
    for name, value in given.items():
        if name in CHANGEABLE_ON_RESUME or value == getattr(saved, name):
            continue
        raise ConfigError(
            f"--{flag_name(name)} {shorten(repr(value))} disagrees with the run's saved {name} = "
            f"{getattr(saved, name)!r} ({run.config_file}); drop the flag to resume, or start a new run "
            "with another --out"
        )
    changes = {name: overrides[name] for name in CHANGEABLE_ON_RESUME if name in overrides}
    config = dataclasses.replace(saved, **changes).validate()
    notes = []
    if config.epochs != saved.epochs and (config.schedule != "constant" or config.warmup_epochs):
        notes.append(
            f"note: --epochs {config.epochs} (was {saved.epochs}) recomputes the {config.schedule} "
            "schedule and warm-up for the new length from here on"
        )
    return config, notes


def already_complete(run_dir: str | Path, config: TrainConfig) -> str | None:
    """The line to print if resuming ``run_dir`` under ``config`` has nothing to do, else None.

    A run is complete when its newest checkpoint is the end of epoch ``config.epochs`` and
    its final files are written (``weights/``, ``report.html``, a ``metrics.jsonl`` record per
    epoch). A run stopped after its last checkpoint but before those files is not: resuming
    writes them. Reads only ``metrics.jsonl`` and the checkpoint's JSON ``meta``, and writes
    nothing (opening the checkpoints, orbax removes the temporary folder of a save that was
    killed, as every resume does).

    Args:
      run_dir: a resumable run folder (see :meth:`RunDir.check_resumable`).
      config: the config it is resumed with (:func:`resume_config`), ``epochs`` maybe raised.

    Raises:
      CheckpointError: if the newest checkpoint's ``meta`` is unreadable.
    """
    from vggjax.run.checkpoint import RunCheckpoints  # orbax: only when resuming

    run, epochs = RunDir(run_dir), config.epochs
    if not (run.weights_dir.is_dir() and run.report_file.is_file()):
        return None
    try:
        if len(read_jsonl(run.metrics_file)) != epochs:
            return None
    except (OSError, ValueError):  # unreadable: resuming rewrites it from the checkpoint
        return None
    with RunCheckpoints(run.checkpoints_dir, keep=config.keep) as ckpts:
        meta = ckpts.meta()
    if not isinstance(meta, dict) or meta.get("position") != dataclasses.asdict(Position(epochs + 1, 0)):
        return None
    return (
        f"run {run_dir} is already complete ({epochs} of {epochs} epochs); nothing to do: resume with "
        f"--epochs {epochs + 1} or more to train on"
    )
