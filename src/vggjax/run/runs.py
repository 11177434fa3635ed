"""Logits of a loaded run's model for host images, through the training preprocess.

Loading a run is :meth:`vggjax.run.folder.RunDir.load`, the one place that decides which
weights of a run are used; :func:`load_run` and :class:`LoadedRun` stay importable from here.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import numpy as np

from vggjax import data
from vggjax.nn.vgg import VGG
from vggjax.run.folder import LoadedRun, RunDir
from vggjax.training.steps import preprocess

__all__ = ["LoadedRun", "load_run", "predict_logits", "softmax"]


def load_run(run_dir: str | Path, checkpoint_dir: str | Path | None = None) -> LoadedRun:
    """``RunDir(run_dir).load(checkpoint_dir)``: see :meth:`vggjax.run.folder.RunDir.load`.

    Raises:
      CheckpointError: if the folder is not a run, its config is unusable, or the weights
        are missing or do not fit the config's model.
    """
    return RunDir(run_dir).load(checkpoint_dir)


@functools.partial(jax.jit, static_argnames=("model", "image_size", "preprocessing"))
def _logits(model: VGG, variables: dict, images: jax.Array, image_size: int, preprocessing) -> jax.Array:
    return model.apply(variables, preprocess(images, image_size, preprocessing), train=False)


def predict_logits(run: LoadedRun, images: np.ndarray, *, batch_size: int = 500) -> np.ndarray:
    """Logits of the run's model for host images, through the training preprocess.

    Images go through :func:`vggjax.training.steps.preprocess` with the run's
    ``config.preprocessing`` (scale to [0, 1], bilinear resize to ``config.image_size``,
    then its mean/std), exactly as in ``train_step``; batches are padded to
    ``batch_size`` so one compiled shape serves every batch.

    Args:
      run: a loaded run.
      images: ``uint8[N, H, W, C]`` as :func:`vggjax.data.images.load_image` makes them
        (Fashion-MNIST: 28×28 grey, light object on black; ImageNet: 224×224 RGB).
      batch_size: images per device call.

    Returns:
      ``float32[N, num_classes]`` logits.
    """
    n = len(images)
    batch_size = min(batch_size, max(n, 1))  # data.batches rejects batch_size < 1
    size, prep = run.config.image_size, run.config.preprocessing
    out = [
        np.asarray(_logits(run.model, run.variables, b["image"], size, prep))
        for b in data.batches({"image": images}, batch_size, shuffle=False, pad=True)
    ]
    return np.concatenate(out)[:n] if out else np.zeros((0, run.model.num_classes), np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``float[N, K]`` logits, computed in float64; rows sum to 1."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)
