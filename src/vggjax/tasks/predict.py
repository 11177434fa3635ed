"""``vggjax predict``: classify image files with any run, as its ``config.json`` says.

There is one path for every run. Each file is decoded and made into what the model saw
by :func:`vggjax.data.images.load_image` under the run's ``config.preprocessing``
(Fashion-MNIST: a 28×28 grey light garment on black, with ``--invert``; converted
torchvision weights: torchvision's resize 256 + centre crop 224, RGB), then goes through
the training step's own :func:`vggjax.training.steps.preprocess` (scale to [0, 1], resize
to the run's ``image_size``, mean/std) and the model. Each file gives one
:class:`Prediction`: its top classes, or the one-line error of a file that cannot be read
(the other files are still predicted).

Best results on a Fashion-MNIST run come from one garment filling most of the frame on a
plain background.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from vggjax import data
from vggjax.config import TTAS, TrainConfig
from vggjax.data.images import check_invert, load_image
from vggjax.errors import ConfigError, DataError
from vggjax.nn.vgg import VGG
from vggjax.run.folder import LoadedRun
from vggjax.training.steps import predict, preprocess

# Class names a run's dataset comes with (ImageNet's 1000 come from --labels).
DATASET_CLASS_NAMES = {"fashion-mnist": data.CLASS_NAMES}
# Pixels per device call: 8 ImageNet crops (224×224), or 64 pictures of 32×32 and smaller.
PIXELS_PER_CALL = 8 * 224 * 224
MAX_BATCH = 64


class Guess(NamedTuple):
    """One of a file's top classes.

    Attributes:
      index: class index, the model's output unit.
      name: its name (from ``--labels`` or the dataset), None where the run has none.
      prob: softmax probability in [0, 1].
    """

    index: int
    name: str | None
    prob: float


@dataclasses.dataclass(frozen=True)
class Prediction:
    """What :func:`predict_files` says about one file.

    Attributes:
      file: the path as given.
      top: the most probable classes, most probable first (empty for an error).
      inverted: whether the picture was inverted (``--invert``); None where the run's
        preprocessing does not invert (ImageNet weights) or the file had an error.
      error: the one-line message of a file that could not be read, else None.
    """

    file: str
    top: tuple[Guess, ...] = ()
    inverted: bool | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """``{"file", "inverted" (where it applies), "top": [{"class", "index", "prob"}]}``, or
        ``{"file", "error"}``: the layout of ``vggjax predict --json`` for every run."""
        if self.error is not None:
            return {"file": self.file, "error": self.error}
        out: dict[str, Any] = {"file": self.file}
        if self.inverted is not None:
            out["inverted"] = self.inverted
        out["top"] = [{"class": g.name, "index": g.index, "prob": g.prob} for g in self.top]
        return out


def format_prediction(p: Prediction) -> str:
    """One line: ``file: Class 0.912, Class 0.051, ...   (inverted)``, or ``error: <message>``.

    A class without a name shows as ``#index``.
    """
    if p.error is not None:
        return f"error: {p.error}"
    top = ", ".join(f"{g.name if g.name is not None else f'#{g.index}'} {g.prob:.3f}" for g in p.top)
    return f"{p.file}: {top}" + ("   (inverted)" if p.inverted else "")


def read_labels(path: str | Path, num_classes: int) -> list[str]:
    """Class names, one per line (line ``i`` names class ``i``), e.g. ImageNet's 1000.

    Blank lines at the end are ignored; names are stripped.

    Raises:
      DataError: if the file is missing or its line count is not ``num_classes``.
    """
    try:
        names = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read labels file {path}: {e}") from None
    while names and not names[-1].strip():
        names.pop()
    if len(names) != num_classes:
        raise DataError(
            f"labels file {path} has {len(names)} lines but the model has {num_classes} classes; "
            "give one class name per line"
        )
    return [n.strip() for n in names]


def check_imagenet_run(config: TrainConfig, run_dir: str | Path) -> None:
    """Checks that a run holds ImageNet weights (made by ``vggjax convert-torchvision``).

    Raises:
      DataError: for another run, for which ``vggjax predict-imagenet`` was not meant.
    """
    if config.dataset != "imagenet" or config.channels != 3:
        raise DataError(
            f"{run_dir} is a {config.dataset} model with {config.channels} channel(s), not ImageNet weights; "
            "predict-imagenet needs a folder from vggjax convert-torchvision"
        )


def check_tta(tta: str) -> str:
    """Returns ``tta`` if it is one of ``config.TTAS``.

    Raises:
      ConfigError: otherwise, naming ``--tta`` and its choices.
    """
    if tta not in TTAS:
        raise ConfigError(f"--tta must be one of {', '.join(TTAS)}, got {tta!r}")
    return tta


@functools.partial(jax.jit, static_argnames=("model", "image_size", "preprocessing", "tta"))
def _logits(model: VGG, variables: dict, images: jax.Array, image_size: int, preprocessing, tta) -> jax.Array:
    return predict(model.apply, variables, preprocess(images, image_size, preprocessing), tta)


def predict_logits(
    run: LoadedRun, images: np.ndarray, *, batch_size: int = 500, tta: str | None = None
) -> np.ndarray:
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
      tta: one of ``config.TTAS`` (:func:`vggjax.training.steps.predict`); None takes the run's ``tta``.

    Returns:
      ``float32[N, num_classes]`` logits (with ``"flip"``, the log of the mean softmax).

    Raises:
      ConfigError: for another ``tta``.
    """
    tta = check_tta(run.config.tta if tta is None else tta)
    n = len(images)
    batch_size = min(batch_size, max(n, 1))  # data.batches rejects batch_size < 1
    size, prep = run.config.image_size, run.config.preprocessing
    out = [
        np.asarray(_logits(run.model, run.variables, b["image"], size, prep, tta))
        for b in data.batches({"image": images}, batch_size, shuffle=False, pad=True)
    ]
    return np.concatenate(out)[:n] if out else np.zeros((0, run.model.num_classes), np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``float[N, K]`` logits, computed in float64; rows sum to 1."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def predict_files(
    run: LoadedRun,
    paths: Sequence[str | Path],
    *,
    top_k: int = 3,
    invert: str | None = None,
    labels: Sequence[str] | None = None,
) -> list[Prediction]:
    """The top ``top_k`` classes of each image file under a run, as its preprocessing says.

    Args:
      run: a loaded run (:meth:`vggjax.run.folder.RunDir.load`), trained or converted.
      paths: image files (any format, size and mode Pillow reads).
      top_k: classes per file, most probable first.
      invert: ``"auto"`` (None: the default), ``"yes"`` or ``"no"``, for runs whose
        preprocessing inverts (see :func:`vggjax.data.images.load_image`).
      labels: class names (``labels[i]`` names class ``i``); None takes the dataset's.

    Returns:
      One :class:`Prediction` per path, in order; a file that cannot be read gets its
      error and the others are still predicted.

    Raises:
      ConfigError: for ``top_k`` outside 1..num_classes, an unknown ``invert`` or one given
        for a run that does not invert, or ``labels`` of another length than the classes.
    """
    config, k = run.config, run.model.num_classes
    prep = config.preprocessing
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= k:
        raise ConfigError(f"--top-k must be between 1 and {k}, got {top_k!r}")
    if invert is not None and not prep.invert:
        raise ConfigError(
            f"--invert is for runs of light-on-dark pictures (Fashion-MNIST); the {config.dataset} run's "
            "preprocessing does not invert: drop --invert"
        )
    invert = check_invert(invert or "auto")
    if labels is not None and len(labels) != k:
        raise ConfigError(f"{len(labels)} class names for a model of {k} classes; give one name per class")
    names = labels if labels is not None else DATASET_CLASS_NAMES.get(config.dataset)
    names = names if names is not None and len(names) == k else None
    loaded: list[tuple[np.ndarray, bool | None] | DataError] = []
    for path in paths:
        try:
            loaded.append(load_image(path, prep, invert=invert))
        except DataError as e:
            loaded.append(e)
    good = [x for x in loaded if not isinstance(x, DataError)]
    probs = iter(())
    if good:
        side = max(prep.size, config.image_size)
        batch_size = max(1, min(MAX_BATCH, PIXELS_PER_CALL // side**2))
        probs = iter(softmax(predict_logits(run, np.stack([x[0] for x in good]), batch_size=batch_size)))
    results = []
    for path, x in zip(paths, loaded, strict=True):
        if isinstance(x, DataError):
            results.append(Prediction(str(path), error=str(x)))
            continue
        p = next(probs)
        order = np.argsort(-p, kind="stable")[:top_k]
        top = tuple(Guess(int(i), names[i] if names else None, float(p[i])) for i in order)
        results.append(Prediction(str(path), top=top, inverted=x[1]))
    return results
