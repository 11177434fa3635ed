"""The JSON ``meta`` item of a run's checkpoints: the model the params fit, and where training stands.

:func:`model_signature` is what a config's params fit; every checkpoint stores it and
:func:`check_signature` compares it on restore, reading signatures written before a key
was added (:data:`ADDED_SIGNATURE_KEYS`). :class:`Position` is the next batch to train.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from vggjax.config import TrainConfig
from vggjax.errors import CheckpointError


@dataclasses.dataclass(frozen=True)
class Position:
    """Where training stands in the data order: the next batch to train.

    The order of epoch ``e`` is a pure function of ``(seed, e)`` (see
    :func:`vggjax.data.batches`), so resuming at ``Position(e, b)`` skips ``b`` batches.

    Attributes:
      epoch: the epoch in progress, from 1.
      batch: batches of that epoch already trained, 0 to steps per epoch (all
        trained but not yet evaluated).
    """

    epoch: int
    batch: int


def model_signature(config: TrainConfig) -> dict:
    """What the params of ``config``'s model fit (stored with and checked against each checkpoint)."""
    arch = config.resolved_arch()
    return {
        "arch": str(arch),
        "batch_norm": arch.batch_norm,
        "lrn": arch.lrn,
        "head": config.head,
        "hidden": config.hidden,
        "channels": config.channels,
        "num_classes": config.num_classes,
        "image_size": config.image_size,  # fc6's shape depends on it with the flatten head
    }


# Keys added to the model signature after checkpoints had been written without them. A
# checkpoint that lacks one was written for the field's default (before the key was
# stored, every model had 1 input channel and 10 classes), so it still resumes under
# the config it was written with.
ADDED_SIGNATURE_KEYS = ("channels", "num_classes")


def _with_added_keys(model: Any) -> Any:
    """A stored model signature with the keys it predates set to their config defaults."""
    if not isinstance(model, dict):
        return model
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.name in ADDED_SIGNATURE_KEYS}
    return {**defaults, **model}


def _describe(model: Any) -> str:
    """A signature in words, e.g. ``((1,16),...)+batch_norm (head flatten, hidden 64, 32 px, ...)``."""
    if not isinstance(model, dict):
        return "unknown"
    extras = [k for k in ("batch_norm", "lrn") if model.get(k)]
    return (
        f"{model.get('arch')}{'+' + '+'.join(extras) if extras else ''} "
        f"(head {model.get('head')}, hidden {model.get('hidden')}, {model.get('image_size')} px, "
        f"channels {model.get('channels')}, classes {model.get('num_classes')})"
    )


def check_signature(saved: Any, model: dict, *, where: Path) -> None:
    """Checks that a checkpoint's stored signature is ``model`` (:func:`model_signature`).

    Args:
      saved: the signature read from the checkpoint's meta (None or anything else if absent).
      model: the signature of the run's config.
      where: the checkpoint folder, for the message.

    Raises:
      CheckpointError: if they differ, naming both models.
    """
    saved = _with_added_keys(saved)
    if saved != model:
        raise CheckpointError(
            f"checkpoint {where} was written for model {_describe(saved)}, not "
            f"{_describe(model)}; resume with the config it was written with, or start a new run"
        )
