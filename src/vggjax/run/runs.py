"""A finished run folder, loaded back: its config, the model it describes and the weights.

``vggjax eval`` and ``vggjax predict`` both start from :func:`load_run`; it is the one
place that decides which weights of a run are used.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vggjax import data
from vggjax.config import TrainConfig
from vggjax.errors import CheckpointError
from vggjax.nn.vgg import VGG
from vggjax.run import checkpoint
from vggjax.training.steps import preprocess
from vggjax.training.train import make_model


class LoadedRun(NamedTuple):
    """What :func:`load_run` returns: the config, model, variables and where they came from.

    Attributes:
      config: the run's ``config.json``.
      model: the :class:`~vggjax.nn.vgg.VGG` rebuilt from it (``config.num_classes`` classes).
      variables: ``{"params": ..., "batch_stats": ...}`` restored from the weights
        (``batch_stats`` only with BatchNorm).
      weights: the weights folder they came from.
    """

    config: TrainConfig
    model: VGG
    variables: dict[str, Any]
    weights: Path


def load_run(run_dir: str | Path, checkpoint_dir: str | Path | None = None) -> LoadedRun:
    """Loads a run written by ``vggjax train`` (``train.train_and_evaluate``).

    The model is rebuilt from ``config.json`` with ``train.make_model`` and the weights
    are restored against its freshly initialised variables, so a weights folder from
    another architecture fails here with a clear message instead of at apply time.

    Args:
      run_dir: the run folder (holds ``config.json`` and ``weights/``).
      checkpoint_dir: a weights folder to load instead of ``run_dir/weights``.

    Returns:
      ``(config, model, variables, weights)`` as a :class:`LoadedRun`.

    Raises:
      CheckpointError: if the folder is not a run, its config is unreadable, or the
        weights are missing or do not fit the config's model.
    """
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise CheckpointError(
            f"{run_dir} is not a run folder (no config.json); give a folder from vggjax train"
        )
    try:
        config = TrainConfig.load(config_path).validate()
    except (ValueError, TypeError) as e:  # ConfigError, ArchError, or a field of the wrong type
        raise CheckpointError(f"{config_path} is not a usable config: {e}") from None
    model = make_model(config)
    shape = (1, config.image_size, config.image_size, config.channels)
    target = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape, jnp.float32)))
    weights = Path(checkpoint_dir) if checkpoint_dir is not None else run_dir / "weights"
    # train.py saves both collections, batch_stats empty without BatchNorm
    target = {"params": target["params"], "batch_stats": target.get("batch_stats", {})}
    variables = checkpoint.load_variables(weights, target)
    _check_shapes(variables, target, weights)
    if not variables["batch_stats"]:
        del variables["batch_stats"]
    return LoadedRun(config, model, variables, weights)


def _check_shapes(variables: dict, target: dict, weights: Path) -> None:
    """orbax restores the saved shapes even when the target's differ; refuse them here."""
    want = dict(jax.tree_util.tree_flatten_with_path(target)[0])
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
        if path in want and np.shape(leaf) != want[path].shape:
            name = "/".join(str(getattr(k, "key", k)) for k in path)
            raise CheckpointError(
                f"weights {weights} do not fit the model of config.json: {name} is {np.shape(leaf)} on "
                f"disk but the model needs {want[path].shape}; use the config the weights were trained with"
            )


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
