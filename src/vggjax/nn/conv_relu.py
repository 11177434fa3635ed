"""A conv → ReLU pair as one layer, for ``impl="cpu_fast"`` with oneDNN: bias and ReLU fused.

:class:`ConvReLU` has ``nn.Conv``'s parameters (``kernel`` ``[k, k, C_in, C_out]``, ``bias``
``[C_out]``, made in the same order with the same initialisers, so a model initialises to the
same values whether or not it fuses) and computes ``relu(conv(x) + bias)`` in one oneDNN
primitive (:func:`vggjax.nn.onednn.conv_bias_relu`). ``VGGBlock`` uses it, under the conv's own
name, for a conv followed directly by its ReLU when :func:`fuses` says so and the conv's own
(pre-ReLU) output is not a requested tap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from vggjax.nn import fastops, onednn, onednn_build
from vggjax.nn.impl import resolve_impl


def fuses(impl: str, dtype: Any, kernel: int, dilation: int) -> bool:
    """Whether a conv (``kernel`` pixels, ``dilation``) and its ReLU run as one :class:`ConvReLU`.

    True for ``impl`` ``"cpu_fast"`` (or ``"auto"`` on a CPU) with the oneDNN extension loaded,
    a float32 computation and an undilated odd kernel.

    Raises:
      ArchError: for an unknown ``impl``.
    """
    return (
        resolve_impl(impl) == "cpu_fast"
        and jnp.dtype(dtype) == jnp.float32
        and kernel % 2 == 1
        and dilation == 1
        and onednn_build.available()
    )


class ConvReLU(nn.Module):
    """``relu(conv(x, kernel) + bias)`` [→ 2×2 max-pool]: k×k, stride 1, zero padding k//2, NHWC / HWIO.

    Attributes:
      features: output channels ``C_out``.
      kernel_size: the kernel side ``k`` (pixels, odd).
      kernel_init: the kernel initialiser (the bias starts at zero, as ``nn.Conv``'s).
      pool: the 2×2 max-pool that follows is part of the layer too
        (:func:`vggjax.nn.onednn.conv_bias_relu_pool`): output ``[N, H//2, W//2, C_out]``.

    Input ``float32[N, H, W, C_in]``, output ``float32[N, H, W, C_out]`` ≥ 0. Runs on oneDNN
    where :func:`vggjax.nn.onednn.usable`, else as the pure-JAX conv plus bias and ReLU (same
    numbers to float rounding).
    """

    features: int
    kernel_size: int
    kernel_init: Callable[..., jax.Array] = nn.initializers.lecun_normal()
    pool: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """The activation ``float32[N, H, W, features]`` (pooled: ``[N, H//2, W//2, features]``) of
        ``x``: ``float32[N, H, W, C_in]``."""
        k = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        if onednn.usable(x, kernel):
            return (onednn.conv_bias_relu_pool if self.pool else onednn.conv_bias_relu)(x, kernel, bias)
        y = nn.relu(fastops.conv_same(x, kernel) + bias.reshape(1, 1, 1, -1))
        return fastops.max_pool_2x2(y) if self.pool else y
