"""Named intermediate activations of a VGG, and the Gram matrix of :mod:`vggjax.perceptual.style`'s losses.

The names are the VGG paper's and the perceptual-loss literature's: Johnson et al.
(2016) tap ``relu2_2`` for content and ``relu1_2``, ``relu2_2``, ``relu3_3``,
``relu4_3`` for style; Gatys et al. (2016) tap ``conv{b}_1``, which in their Caffe
model (in-place ReLU) is ``relu{b}_1`` here. Per layer:

- ``conv{b}_{i}``: the raw output of conv ``i`` of block ``b`` (both from 1), before
  the ReLU, and in ``_bn`` variants before the BatchNorm too;
- ``bn{b}_{i}``: after the BatchNorm, before the ReLU (``_bn`` variants only);
- ``relu{b}_{i}``: after the ReLU; the usual perceptual and style taps;
- ``lrn``: after A-LRN's local response normalisation;
- ``pool{b}``: after block ``b``'s max-pool;
- ``fc6``, ``fc7``: dense outputs before their ReLU; ``relu6``, ``relu7`` after it
  (before dropout); ``fc8``: the logits.

Unlike a fixed ``features_only`` list, any set of these can be asked for, and only
the layers up to the deepest one asked for are run: their parameters alone are
needed, so ``relu1_2`` of a headless or partly loaded VGG works.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from vggjax.arch import feature_names
from vggjax.errors import ArchError, ConfigError
from vggjax.nn.vgg import VGG

__all__ = ["GRAM_NORMALIZATIONS", "feature_names", "features", "gram_matrix"]
GRAM_NORMALIZATIONS = ("none", "hw", "chw")  # gram_matrix's Z: 1, H·W, C·H·W


def features(
    model: VGG, variables: Mapping[str, Any], x: jax.Array, layers: Sequence[str]
) -> dict[str, jax.Array]:
    """The activations of ``layers`` for input ``x``, in evaluation mode.

    ``model.apply(variables, x, layers, method=VGG.features)`` with the names checked.
    Works under ``jax.jit`` (``layers`` must be static, e.g. closed over).

    Args:
      model: the VGG whose ``variables`` these are.
      variables: ``{"params": …}`` (and ``"batch_stats"`` for ``_bn`` archs); only the
        layers up to the deepest asked for must be present.
      x: ``float32[N, H, W, C]``, as the model's ``__call__`` takes it.
      layers: names such as ``("relu1_2", "relu2_2", "pool5", "fc7")``; see
        :func:`vggjax.arch.feature_names` for the full list of a model's arch.

    Returns:
      A dict from each name to its activation, in the order asked (under ``jit``, keys
      come back sorted, as for any dict pytree):
      ``[N, H', W', C']`` for conv-side layers, ``[N, features]`` for ``fc*``/``relu6``/``relu7``.

    Raises:
      ArchError: for a name the model does not have (the message lists the valid
        ones), an empty list, or an input the model cannot take.
    """
    names = layers if isinstance(layers, str) else tuple(layers)  # a str is refused by VGG.features
    return model.apply(variables, x, names, method=VGG.features)


def gram_matrix(f: jax.Array, normalize: str = "hw") -> jax.Array:
    """Channel-by-channel Gram matrix of a feature map, ``G[n, c, d] = Σ_{h,w} f[n,h,w,c] f[n,h,w,d] / Z``.

    ``Z`` is 1 (``"none"``, Gatys et al.), ``H·W`` (``"hw"``, the default: comparable across
    image sizes) or ``C·H·W`` (``"chw"``, Johnson et al.). Computed in float32.

    Worked 2×2 example: one image with ``H = 1, W = 2, C = 2`` whose positions hold ``(1, 2)``
    and ``(3, 4)``: ``F = [[1, 3], [2, 4]]`` (channels × positions), ``F Fᵀ = [[10, 14], [14,
    20]]``, so ``"none"`` gives that, ``"hw"`` ``[[5, 7], [7, 10]]``, ``"chw"`` ``[[2.5, 3.5],
    [3.5, 5]]``.

    Args:
      f: ``[N, H, W, C]`` activations, e.g. ``features(…)["relu3_3"]``.
      normalize: ``"none"``, ``"hw"`` or ``"chw"``.

    Returns:
      ``float32[N, C, C]``, symmetric.

    Raises:
      ArchError: if ``f`` is not a 4-D NHWC map.
      ConfigError: for another ``normalize``.
    """
    if f.ndim != 4:
        raise ArchError(f"gram_matrix needs an NHWC map [N, H, W, C], got shape {tuple(f.shape)}")
    if normalize not in GRAM_NORMALIZATIONS:
        raise ConfigError(
            f"gram normalize must be one of {', '.join(GRAM_NORMALIZATIONS)}, got {normalize!r}"
        )
    _, h, w, c = f.shape
    z = {"none": 1, "hw": h * w, "chw": c * h * w}[normalize]
    f = f.astype(jnp.float32)
    return jnp.einsum("nhwc,nhwd->ncd", f, f) / z
