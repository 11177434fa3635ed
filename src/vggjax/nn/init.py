"""Kernel initialisers of a VGG's conv, dense and logits layers, by scheme (:data:`vggjax.config.INITS`)."""

from __future__ import annotations

from typing import Any

from flax import linen as nn

from vggjax.config import INITS
from vggjax.errors import ArchError


def initializers(scheme: str) -> dict[str, Any]:
    """Kernel initialisers for ``conv``, ``dense`` (fc6, fc7) and ``logits`` (fc8) layers.

    Biases are always zero. Schemes:
      ``"he"`` (default): He et al. 2015, normal with variance 2 / fan_in for convs,
        fc6 and fc7, which keeps activations at unit scale through the ReLUs, so the
        d2l chapter's plain SGD (lr 0.01) trains every depth; fc8 is normal with std
        0.01 so the step-0 loss is ln(num_classes).
      ``"torchvision"``: torchvision's VGG: conv normal with variance 2 / fan_out,
        dense normal with std 0.01.
      ``"lecun"``: Flax's default, normal with variance 1 / fan_in.

    Raises:
      ArchError: for an unknown scheme.
    """
    vs = nn.initializers.variance_scaling
    if scheme == "he":
        conv = dense = vs(2.0, "fan_in", "normal")
        logits = nn.initializers.normal(0.01)
    elif scheme == "torchvision":
        conv, dense = vs(2.0, "fan_out", "normal"), nn.initializers.normal(0.01)
        logits = dense
    elif scheme == "lecun":
        conv = dense = logits = nn.initializers.lecun_normal()
    else:
        raise ArchError(f"unknown init {scheme!r}; use one of {', '.join(INITS)}")
    return {"conv": conv, "dense": dense, "logits": logits}
