"""Named intermediate activations of a VGG (and ``gram_matrix``, from :mod:`vggjax.perceptual.style`).

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

from vggjax.arch import feature_names
from vggjax.nn.vgg import VGG
from vggjax.perceptual.style import gram_matrix  # style losses live there, with every normalisation

__all__ = ["feature_names", "features", "gram_matrix"]


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
