"""ImageNet preprocessing and top-k prediction for converted torchvision weights.

torchvision's VGG weights were trained on, and expect, this pipeline
(``torchvision.models.VGG16_Weights.IMAGENET1K_V1.transforms``): ``Resize(256)`` (the
shorter side to 256 pixels, bilinear with antialiasing), ``CenterCrop(224)``,
``ToTensor`` (RGB floats in [0, 1]) and ``Normalize(MEAN, STD)``.

Two mistakes give plausible-looking but wrong predictions: normalising 0..255 values
instead of [0, 1] floats, and feeding BGR (OpenCV's order). Here the host side,
:func:`load_image`, always returns RGB ``uint8`` pixels (Pillow converts every mode to
RGB), and :func:`normalize` accepts only ``uint8`` and divides by 255 itself, so the
:func:`predict` path can make neither.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from vggjax.config import TrainConfig
from vggjax.errors import DataError
from vggjax.nn.vgg import VGG

MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet RGB mean, for pixels in [0, 1]
STD = (0.229, 0.224, 0.225)  # torchvision's ImageNet RGB std
RESIZE = 256
CROP = 224


def load_image(path: str | Path, *, resize: int = RESIZE, crop: int = CROP) -> np.ndarray:
    """Reads an image file as torchvision's ``Resize(resize)`` + ``CenterCrop(crop)`` do.

    The shorter side is resized to ``resize`` pixels (the longer to
    ``int(resize · long / short)``), bilinear with Pillow's antialiasing, then the centre
    ``crop × crop`` is cut (top-left at ``round((side - crop) / 2)``), as in
    ``torchvision/transforms/functional.py``.

    Args:
      path: any image file Pillow reads (JPEG, PNG, …; grey, palette, RGBA or CMYK).
      resize: shorter side after resizing, pixels.
      crop: side of the centre crop, pixels (at most ``resize``).

    Returns:
      ``uint8[crop, crop, 3]`` in RGB order.

    Raises:
      DataError: if the file is missing or not an image Pillow can read.
    """
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path}: {e}; give a JPEG or PNG file") from None
    w, h = image.size
    if w <= h:
        size = (resize, int(resize * h / w))
    else:
        size = (int(resize * w / h), resize)
    image = image.resize(size, Image.Resampling.BILINEAR)
    left, top = int(round((size[0] - crop) / 2.0)), int(round((size[1] - crop) / 2.0))
    return np.asarray(image.crop((left, top, left + crop, top + crop)), np.uint8)


def normalize(images: jax.Array | np.ndarray) -> jax.Array:
    """RGB ``uint8[N, H, W, 3]`` → ``float32[N, H, W, 3]``: ``(x / 255 - MEAN) / STD``.

    Raises:
      DataError: if ``images`` is not ``uint8`` (floats already in [0, 1] or 0..255 are
        ambiguous; pass the raw pixels) or its last axis is not 3 RGB channels.
    """
    if images.dtype != np.uint8:
        raise DataError(
            f"ImageNet normalisation takes uint8 RGB pixels (0..255), got {images.dtype}; "
            "pass the raw pixels, e.g. from vggjax.tasks.imagenet.load_image, not scaled floats"
        )
    if images.shape[-1] != 3:
        raise DataError(f"ImageNet normalisation takes 3 RGB channels, got shape {tuple(images.shape)}")
    x = jnp.asarray(images).astype(jnp.float32) / 255.0
    shape = (1,) * (x.ndim - 1) + (3,)
    return (x - jnp.asarray(MEAN, jnp.float32).reshape(shape)) / jnp.asarray(STD, jnp.float32).reshape(shape)


def check_run(config: TrainConfig, run_dir: str | Path) -> None:
    """Checks that a run holds ImageNet weights (made by ``vggjax convert-torchvision``).

    Raises:
      DataError: for a Fashion-MNIST run, which ImageNet preprocessing would feed wrongly.
    """
    if config.dataset != "imagenet" or config.channels != 3:
        raise DataError(
            f"{run_dir} is a {config.dataset} model with {config.channels} channel(s), not ImageNet weights; "
            "predict-imagenet needs a folder from vggjax convert-torchvision"
        )


def read_labels(path: str | Path, num_classes: int) -> list[str]:
    """Class names, one per line (line ``i`` names class ``i``), e.g. ImageNet's 1000.

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


def predict(
    model: VGG, variables: dict, images: np.ndarray, *, top: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``top`` classes of RGB ``uint8[N, H, W, 3]`` images (normalised here, in eval mode).

    Returns:
      ``(indices int32[N, top], probabilities float32[N, top])``, most probable first.

    Raises:
      DataError: for images that are not ``uint8`` RGB (see :func:`normalize`).
    """
    x = normalize(images)
    top = min(top, model.num_classes)
    probs, indices = _top_k(model, variables, x, top)
    return np.asarray(indices), np.asarray(probs)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _top_k(model: VGG, variables: dict, x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    probs = jax.nn.softmax(model.apply(variables, x, train=False), axis=-1)
    return jax.lax.top_k(probs, k)


def predict_files(
    model: VGG, variables: dict, paths: Sequence[str | Path], *, top: int = 5, batch_size: int = 8
) -> list[tuple[np.ndarray, np.ndarray] | DataError]:
    """:func:`load_image` then :func:`predict` for each file, ``batch_size`` images at a time.

    Returns:
      One entry per path, in order: ``(indices int32[top], probabilities float32[top])``,
      or the :class:`DataError` of a file that is not a readable image (the other files
      are still predicted, as by :func:`vggjax.tasks.predict.predict_files`).
    """
    loaded: list[np.ndarray | DataError] = []
    for path in paths:
        try:
            loaded.append(load_image(path))
        except DataError as e:
            loaded.append(e)
    good = [x for x in loaded if not isinstance(x, DataError)]
    results = []
    for i in range(0, len(good), batch_size):
        indices, probs = predict(model, variables, np.stack(good[i : i + batch_size]), top=top)
        results += list(zip(indices, probs, strict=True))
    it = iter(results)
    return [x if isinstance(x, DataError) else next(it) for x in loaded]
