"""The parameter-free layers of a VGG: 2×2 max-pool, adaptive average pool, LRN.

All act on NHWC maps ``float32[N, H, W, C]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from vggjax.arch import ADAPTIVE_SIDE


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2×2 max-pool with stride 2 (VALID): ``[N, H, W, C]`` → ``[N, H//2, W//2, C]``."""
    return nn.max_pool(x, (2, 2), strides=(2, 2))


def adaptive_avg_pool(x: jax.Array, size: int = ADAPTIVE_SIDE) -> jax.Array:
    """torchvision's ``AdaptiveAvgPool2d(size)``: ``[N, H, W, C]`` → ``[N, size, size, C]``.

    Output cell ``i`` averages input rows ``floor(i·H/size)`` to ``ceil((i+1)·H/size)``
    (exclusive), the same bins as PyTorch, so a 1×1 map is replicated to 7×7.
    """

    def pool(x: jax.Array, axis: int) -> jax.Array:
        n = x.shape[axis]
        if n == size:
            return x
        cells = [
            jnp.mean(
                jax.lax.slice_in_dim(x, (i * n) // size, -(-((i + 1) * n) // size), axis=axis),
                axis=axis,
                keepdims=True,
            )
            for i in range(size)
        ]
        return jnp.concatenate(cells, axis=axis)

    return pool(pool(x, 1), 2)


def local_response_norm(
    x: jax.Array, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0
) -> jax.Array:
    """AlexNet's local response normalisation across channels (the VGG paper's A-LRN).

    ``b_c = a_c / (k + alpha · Σ_{c' = max(0, c - size//2)}^{min(C-1, c + size//2)} a_{c'}²) ** beta``
    with AlexNet's constants ``k = 2, n = size = 5, alpha = 1e-4, beta = 0.75``
    (Krizhevsky et al. 2012, section 3.3; the VGG paper takes them from AlexNet, section 2.1).
    AlexNet applies it after the ReLU, and so does ``VGGBlock``. PyTorch's
    ``nn.LocalResponseNorm`` and Caffe divide ``alpha`` by ``size``: this equals theirs
    with ``alpha = 5e-4``.

    Args:
      x: ``float32[N, H, W, C]``, normalised across ``C``.
      size: channels in the window ``n``, centred on each channel (odd).
      alpha: scale of the sum of squares.
      beta: exponent.
      k: additive constant.

    Returns:
      ``float32[N, H, W, C]``.
    """
    sq = jnp.square(x)
    half = size // 2
    padded = jnp.pad(sq, [(0, 0), (0, 0), (0, 0), (half, half)])
    window = sum(padded[..., i : i + x.shape[-1]] for i in range(size))
    return x / (k + alpha * window) ** beta
