"""Training-time augmentation on the device, inside the jitted train step.

:func:`augment` takes the preprocessed batch, ``float32[B, S, S, C]``, and one key; every
random choice is drawn from that key, vectorised over the batch (no loop over examples),
so the same key gives the same crops, flips and erased rectangles. The train step derives
the key from the run's key and the step number (see :func:`vggjax.training.steps.train_step`),
so a resumed run replays them exactly. In torchvision's order, each optional:

* random crop (``RandomCrop(S, padding=P)``): zero-pad ``P`` pixels per side, cut an
  ``S``×``S`` window at a uniform offset in ``0..2P`` per axis;
* horizontal flip (``RandomHorizontalFlip()``), probability 0.5;
* random erasing (``RandomErasing(p, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0)``,
  Zhong et al. 2017): with probability ``p``, one rectangle of ``scale`` of the area and
  an aspect ratio log-uniform in ``ratio`` is set to 0; like torchvision, up to 10 draws
  are tried for one that fits and the image is left whole if none does.

"Zero" is 0 in the model's input, i.e. after normalisation: black for Fashion-MNIST.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

ERASE_SCALE = (0.02, 0.33)  # fraction of the image's area (torchvision's default)
ERASE_RATIO = (0.3, 3.3)  # height / width, drawn log-uniformly (torchvision's default)
ERASE_ATTEMPTS = 10  # draws tried per image for a rectangle that fits, as torchvision does


class Augment(NamedTuple):
    """What :func:`augment` does; static under jit (a run's ``crop_pad``, ``flip``, ``erase``).

    Attributes:
      crop_pad: pixels of zero padding per side before the random crop; 0 is no crop.
      flip: random horizontal flip with probability 0.5.
      erase: probability of random erasing per image, in [0, 1]; 0 is off.
    """

    crop_pad: int = 0
    flip: bool = False
    erase: float = 0.0

    @property
    def active(self) -> bool:
        """Whether any augmentation is on."""
        return bool(self.crop_pad or self.flip or self.erase)


def augment(key: jax.Array, x: jax.Array, how: Augment) -> jax.Array:
    """Crop, flip and erase ``x``, ``float32[B, H, W, C]``, as ``how`` says; returns the same shape.

    With nothing on, returns ``x`` itself. The three use independent keys split from ``key``.
    """
    crop_key, flip_key, erase_key = jax.random.split(key, 3)
    if how.crop_pad:
        x = random_crop(crop_key, x, how.crop_pad)
    if how.flip:
        x = random_flip(flip_key, x)
    if how.erase:
        x = random_erase(erase_key, x, how.erase)
    return x


def random_crop(key: jax.Array, x: jax.Array, pad: int) -> jax.Array:
    """Each image of ``float32[B, H, W, C]`` zero-padded by ``pad`` per side, then an H×W window of it.

    The window's top-left corner in the padded image is uniform in ``[0, 2 * pad]`` per
    axis, per image (``jax.lax.dynamic_slice`` under ``vmap``).
    """
    b, h, w, c = x.shape
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = jax.random.randint(key, (b, 2), 0, 2 * pad + 1)

    def window(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, c))

    return jax.vmap(window)(padded, offsets)


def random_flip(key: jax.Array, x: jax.Array) -> jax.Array:
    """Each image of ``float32[B, H, W, C]`` mirrored left-right with probability 0.5."""
    mirror = jax.random.bernoulli(key, 0.5, (x.shape[0],))
    return jnp.where(mirror[:, None, None, None], x[:, :, ::-1], x)


def erase_boxes(key: jax.Array, batch: int, height: int, width: int, p: float) -> jax.Array:
    """The rectangle :func:`random_erase` zeroes per image: ``int32[batch, 4]``, rows ``(top, left, h, w)``.

    ``h == w == 0`` where the image is left whole (probability ``1 - p``, or no draw fitted).
    Sizes as torchvision: ``h = round(sqrt(area * ratio))``, ``w = round(sqrt(area / ratio))``.
    """
    k_apply, k_area, k_ratio, k_top, k_left = jax.random.split(key, 5)
    shape = (batch, ERASE_ATTEMPTS)
    area = height * width * jax.random.uniform(k_area, shape, minval=ERASE_SCALE[0], maxval=ERASE_SCALE[1])
    log_ratio = jax.random.uniform(
        k_ratio, shape, minval=math.log(ERASE_RATIO[0]), maxval=math.log(ERASE_RATIO[1])
    )
    h = jnp.round(jnp.sqrt(area * jnp.exp(log_ratio))).astype(jnp.int32)
    w = jnp.round(jnp.sqrt(area / jnp.exp(log_ratio))).astype(jnp.int32)
    fits = (h < height) & (w < width)
    pick = jnp.argmax(fits, axis=1)  # the first draw that fits
    rows = jnp.arange(batch)
    h, w = h[rows, pick], w[rows, pick]
    keep = fits[rows, pick] & jax.random.bernoulli(k_apply, p, (batch,))
    h, w = jnp.where(keep, h, 0), jnp.where(keep, w, 0)
    top = jax.random.randint(k_top, (batch,), 0, height - h + 1)
    left = jax.random.randint(k_left, (batch,), 0, width - w + 1)
    return jnp.stack([top, left, h, w], axis=1)


def random_erase(key: jax.Array, x: jax.Array, p: float) -> jax.Array:
    """``float32[B, H, W, C]`` with, in each image with probability ``p``, one rectangle set to 0.

    The rectangles are :func:`erase_boxes`' of the same key.
    """
    b, height, width, _ = x.shape
    top, left, h, w = jnp.moveaxis(erase_boxes(key, b, height, width, p), 1, 0)[..., None]
    rows, cols = jnp.arange(height)[None, :], jnp.arange(width)[None, :]
    in_rows = (rows >= top) & (rows < top + h)  # [B, H]
    in_cols = (cols >= left) & (cols < left + w)  # [B, W]
    inside = in_rows[:, :, None, None] & in_cols[:, None, :, None]
    return jnp.where(inside, 0.0, x).astype(x.dtype)
