"""BatchNorm with a hand-written gradient: Flax's ``nn.BatchNorm`` numbers, fewer passes over memory.

:class:`BatchNorm` has ``nn.BatchNorm``'s variables (``params``: ``scale``, ``bias``;
``batch_stats``: ``mean``, ``var``), its statistics (biased batch variance, ``mean(x²) −
mean²`` clamped at 0, Flax's ``use_fast_variance``) and its running-average update, so the
two are interchangeable on the same weights. In training its normalisation is
:func:`batch_norm`, whose ``custom_vjp`` gives the closed-form BatchNorm gradient (Ioffe &
Szegedy 2015, sec. 3): two per-channel sums over the cotangent and one elementwise pass,
where autodiff through ``nn.BatchNorm`` leaves XLA:CPU about twice as many passes over each
activation: about 2× per layer, 1.02–1.13× on a whole train step of the CPU presets
(``benchmarks/batchnorm.py``, ``docs/speed.md``). ``impl="cpu_fast"`` and
``"cpu_jax"`` use it (:func:`vggjax.nn.impl.layer_ops`); ``"xla"`` keeps ``nn.BatchNorm``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn


def _row(v: jax.Array, x: jax.Array) -> jax.Array:
    """``float32[C]`` as ``[1, …, 1, C]``, to broadcast against ``x`` explicitly."""
    return v.reshape((1,) * (x.ndim - 1) + (-1,))


def _stats(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    axes, n = tuple(range(x.ndim - 1)), x.size // x.shape[-1]
    mean = jnp.sum(x, axes) / n
    return mean, jnp.maximum(jnp.sum(x * x, axes) / n - mean * mean, 0.0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm(
    x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float = 1e-5
) -> tuple[jax.Array, ...]:
    """Training-mode BatchNorm of ``float32[..., C]`` over all axes but the last (NHWC: N, H, W).

    Args:
      x: ``float32[..., C]`` activations.
      scale, bias: ``float32[C]``, BatchNorm's γ and β.
      epsilon: added to the variance (1e-5: torchvision's and VGGBlock's).

    Returns:
      ``(y, mean, var)``: ``y = (x − mean) / sqrt(var + epsilon) · scale + bias``, the shape
      of ``x``, and the batch's ``float32[C]`` mean and biased variance. Differentiable in
      all three outputs (the gradient of ``mean`` and ``var`` too, though training does not
      use it).
    """
    return _forward(x, scale, bias, epsilon)[0]


def _forward(x, scale, bias, epsilon):
    mean, var = _stats(x)
    inv = jax.lax.rsqrt(var + epsilon)
    y = x * _row(scale * inv, x) + _row(bias - mean * scale * inv, x)
    return (y, mean, var), (x, scale, mean, inv)


def _backward(epsilon, res, cotangents):
    del epsilon  # static; its effect is in inv
    x, scale, mean, inv = res
    dy, dmean, dvar = cotangents
    axes, n = tuple(range(x.ndim - 1)), x.size // x.shape[-1]
    sum_dy = jnp.sum(dy, axes)
    sum_dy_xhat = inv * (jnp.sum(dy * x, axes) - mean * sum_dy)  # Σ dy·x̂, x̂ = (x − mean)·inv
    k = scale * inv
    # dx = k·(dy − Σdy/n − x̂·Σ(dy·x̂)/n) + dmean/n + dvar·2(x − mean)/n
    shift, slope = k * sum_dy / n - dmean / n, k * inv * sum_dy_xhat / n - 2 * dvar / n
    dx = dy * _row(k, x) - _row(shift, x) - (x - _row(mean, x)) * _row(slope, x)
    return dx, sum_dy_xhat, sum_dy


batch_norm.defvjp(_forward, _backward)


class BatchNorm(nn.Module):
    """``nn.BatchNorm`` over the last axis with :func:`batch_norm` in training; same variables and numbers.

    Attributes:
      momentum: running averages become ``momentum · old + (1 − momentum) · batch``.
      epsilon: added to the variance.
      dtype: output dtype (None: ``x``'s promoted with the float32 params, as Flax does);
        statistics and normalisation are computed in float32.

    ``__call__(x, use_running_average)`` takes ``float32[..., C]`` and returns its shape:
    with ``use_running_average`` it normalises by ``batch_stats``; otherwise by the batch's
    own statistics, updating ``batch_stats`` (which then must be mutable) except while the
    module is initialised, as Flax's does.
    """

    momentum: float = 0.99
    epsilon: float = 1e-5
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, use_running_average: bool = False) -> jax.Array:
        """The normalised ``x`` (see the class docstring)."""
        c = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        x32 = x.astype(jnp.float32)
        if use_running_average:
            inv = jax.lax.rsqrt(ra_var.value + self.epsilon)
            y = (x32 - _row(ra_mean.value, x)) * _row(scale * inv, x) + _row(bias, x)
        else:
            y, mean, var = batch_norm(x32, scale, bias, self.epsilon)
            if not self.is_initializing():
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return y.astype(self.dtype or jnp.result_type(x, jnp.float32))
