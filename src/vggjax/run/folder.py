"""Run folders: what counts as a vggjax run, refusing unsafe ``--out`` folders, resume configs.

A run folder holds ``config.json`` (a :class:`~vggjax.config.TrainConfig`), ``metrics.jsonl``,
``curves.png``, ``checkpoints/`` and, once training has finished, ``weights/``. The
checks here write nothing that stays, so a refused command leaves every folder as it was.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vggjax.config import TrainConfig, flag_name
from vggjax.errors import CheckpointError, ConfigError

RUN_FILES = ("config.json", "metrics.jsonl", "curves.png", "checkpoints", "weights")
CHECKPOINTS = "checkpoints"
# Settings that may change when a run is resumed: they do not change the trajectory
# so far. A longer --epochs trains on; the cosine schedule (or warm-up) is then
# recomputed for the new total, so only a constant schedule equals a straight run.
CHANGEABLE_ON_RESUME = ("epochs", "checkpoint_every", "keep")


def is_run(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a readable vggjax ``config.json``."""
    try:
        TrainConfig.load(Path(path) / "config.json")
    except (ValueError, TypeError):  # missing, not JSON, or JSON of another tool
        return False
    return True


def check_new_run_dir(run_dir: str | Path, *, overwrite: bool) -> None:
    """Checks that a new run may be written to ``run_dir``; writes nothing that stays.

    Allowed: a folder that does not exist yet (its parent writable), an empty
    writable folder, or an earlier vggjax run when ``overwrite`` is set.

    Raises:
      ConfigError: if ``run_dir`` holds an earlier run (without ``overwrite``), is a file
        or a non-empty folder that is not a vggjax run, or cannot be written.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"output folder {run_dir} is a file; choose another --out")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not is_run(run_dir):
            raise ConfigError(
                f"output folder {run_dir} is not empty and is not a vggjax run (no readable config.json); "
                "choose another --out"
            )
        if not overwrite:
            raise ConfigError(
                f"output folder {run_dir} already holds a vggjax run; pass --resume {run_dir} to continue "
                "it, --overwrite to replace it, or choose another --out"
            )
    _check_writable(run_dir)


def _check_writable(run_dir: Path) -> None:
    """Creates and removes a temporary folder where the run's files would go."""
    probe_in = run_dir
    while not probe_in.exists():
        probe_in = probe_in.parent
    try:
        if not probe_in.is_dir():
            raise NotADirectoryError(f"{probe_in} is a file")
        with tempfile.TemporaryDirectory(dir=probe_in, prefix=".vggjax-probe-"):
            pass
    except OSError as e:
        raise ConfigError(
            f"cannot write output folder {run_dir}: {e.strerror or e}; choose a writable --out"
        ) from None


def prepare_run_dir(run_dir: str | Path, *, overwrite: bool) -> None:
    """Creates ``run_dir``; with ``overwrite``, first removes an earlier run's files.

    Call :func:`check_new_run_dir` first. Only the files a run writes (:data:`RUN_FILES`)
    are removed; anything else in the folder is left alone.

    Raises:
      ConfigError: if the folder cannot be created.
    """
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for name in RUN_FILES:
                path = run_dir / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
    except OSError as e:
        raise ConfigError(f"cannot create output folder {run_dir}: {e.strerror or e}") from None


def check_resumable(run_dir: str | Path) -> None:
    """Checks that ``run_dir`` is a vggjax run with at least one complete checkpoint.

    Raises:
      CheckpointError: naming the path, if it does not exist, is not a run, or holds
        no checkpoint (never a silent fresh start).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(
            f"--resume {run_dir}: no such folder; give the --out folder of an earlier vggjax train"
        )
    if not is_run(run_dir):
        raise CheckpointError(
            f"--resume {run_dir}: not a vggjax run (no readable config.json); "
            "give the --out folder of an earlier vggjax train"
        )
    folder = run_dir / CHECKPOINTS
    steps = [p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()] if folder.is_dir() else []
    if not steps:
        raise CheckpointError(
            f"--resume {run_dir}: the run holds no checkpoint (nothing in {folder}); "
            "it stopped before its first save, so start it again with --out and --overwrite"
        )


def resume_config(
    run_dir: str | Path, overrides: Mapping[str, Any], *, preset: TrainConfig | None = None
) -> TrainConfig:
    """The config to resume ``run_dir`` with: the saved one, checked against flags given again.

    Args:
      run_dir: the run folder.
      overrides: config fields given on the command line.
      preset: the preset named on the command line, if any; all its fields are then
        compared as if given.

    Returns:
      The saved config, with any of :data:`CHANGEABLE_ON_RESUME` taken from ``overrides``.

    Raises:
      CheckpointError: if ``run_dir`` is not a resumable run (see :func:`check_resumable`).
      ConfigError: if a flag disagrees with the saved config, naming both values.
    """
    run_dir = Path(run_dir)
    check_resumable(run_dir)
    saved = TrainConfig.load(run_dir / "config.json")
    given = {**(dataclasses.asdict(preset) if preset else {}), **overrides}
    for name, value in given.items():
        if name in CHANGEABLE_ON_RESUME or value == getattr(saved, name):
            continue
        raise ConfigError(
            f"--{flag_name(name)} {value!r} disagrees with the run's saved {name} = {getattr(saved, name)!r} "
            f"({run_dir / 'config.json'}); drop the flag to resume, or start a new run with another --out"
        )
    changes = {name: overrides[name] for name in CHANGEABLE_ON_RESUME if name in overrides}
    return dataclasses.replace(saved, **changes).validate()
