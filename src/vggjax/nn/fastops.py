"""CPU-fast versions of VGG's three heavy ops, with hand-written gradients.

XLA:CPU runs small convolutions, the 2×2 max-pool's gradient (a select-and-scatter)
and the weight gradient of a dense layer far below the machine's matmul rate. The
ops here compute the same functions with the same gradients (equal to ``jax.grad``
of the plain ops up to float rounding; ``tests/test_fastops.py`` checks it) in forms
XLA:CPU runs well:

* :func:`conv_same`: k×k conv, stride 1, padding k//2 (every VGG conv). Forward and
  input gradient: 9 fused multiply-adds for a 1-channel input, one im2col matmul on
  small maps (side < ``IM2COL_BELOW``) and for 1×1 kernels, ``lax.conv`` otherwise.
  Weight gradient: one im2col matmul ``patches^T @ dy`` on small maps and for a
  1-channel input, XLA's own on larger maps (where im2col measured no faster on a
  2-core x86 with other jobs running).
* :func:`max_pool_2x2`: reshape and pairwise maxima; under differentiation the
  forward pass records which of the four holds the maximum (int8, the first on ties,
  as XLA's select-and-scatter picks), and the gradient is routed by that index with
  element-wise selects.
* :func:`dense`: ``x @ w`` whose weight gradient transposes ``x`` first.

They plug into flax.linen through ``nn.Conv(conv_general_dilated=...)`` and
``nn.Dense(dot_general=...)`` (:func:`conv_general_dilated`, :func:`dot_general`), so
parameters, names and initialisers stay those of the plain model. A dilated conv (an
arch's ``dilations``, ``nn.Conv(kernel_dilation=...)``) is not one of the forms above: it
falls through to XLA's own ``lax.conv_general_dilated`` and its autodiff gradient, with the
same parameters, so a dilated arch runs (correctly, at XLA's speed) under ``cpu_fast`` too.
:mod:`vggjax.nn.impl` selects them for ``VGG``'s ``impl`` switch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

IM2COL_BELOW = 14  # map side (pixels) under which a conv is one im2col matmul


def _patches(x: jax.Array, k: int) -> jax.Array:
    """``[N, H, W, C]`` → ``[N, H, W, k·k·C]``: the zero-padded k×k neighbourhoods, (dy, dx, c) order."""
    p = k // 2
    h, w = x.shape[1], x.shape[2]
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    return jnp.concatenate([xp[:, dy : dy + h, dx : dx + w, :] for dy in range(k) for dx in range(k)], -1)


def _conv_forward(x: jax.Array, w: jax.Array) -> jax.Array:
    """Same-padded stride-1 conv ``[N, H, W, I] * [k, k, I, O]`` → ``[N, H, W, O]``, fastest form."""
    k, _, cin, cout = w.shape
    n, h, wd, _ = x.shape
    if cin == 1:
        p = k // 2
        xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        taps = [
            xp[:, dy : dy + h, dx : dx + wd, :] * w[dy, dx].reshape(1, 1, 1, cout)
            for dy in range(k)
            for dx in range(k)
        ]
        return sum(taps[1:], taps[0])
    if k == 1 or max(h, wd) < IM2COL_BELOW:
        cols = _patches(x, k).reshape(n * h * wd, k * k * cin)
        return (cols @ w.reshape(k * k * cin, cout)).reshape(n, h, wd, cout)
    p = k // 2
    return lax.conv_general_dilated(
        x, w, (1, 1), ((p, p), (p, p)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@jax.custom_vjp
def conv_same(x: jax.Array, w: jax.Array) -> jax.Array:
    """k×k convolution, stride 1, zero padding k//2 (odd k), NHWC / HWIO.

    Args:
      x: ``float[N, H, W, I]``.
      w: ``float[k, k, I, O]`` (Flax's ``nn.Conv`` kernel layout).

    Returns:
      ``float[N, H, W, O]``, equal to ``lax.conv_general_dilated(x, w, (1, 1), "SAME")``
      (cross-correlation, as every deep-learning framework computes it).
    """
    return _conv_forward(x, w)


def _conv_fwd(x, w):
    return _conv_forward(x, w), (x, w)


def _conv_bwd(res, dy):
    x, w = res
    k, _, cin, cout = w.shape
    # dL/dx is the same-padded conv of dy with the kernel rotated 180° and I, O swapped.
    dx = _conv_forward(dy, jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)).astype(x.dtype)
    if max(x.shape[1], x.shape[2]) < IM2COL_BELOW or cin == 1:
        cols = _patches(x, k).reshape(-1, k * k * cin)
        dw = cols.T @ dy.reshape(-1, cout)
    else:
        p = k // 2
        conv = functools.partial(
            lax.conv_general_dilated,
            x,
            window_strides=(1, 1),
            padding=((p, p), (p, p)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        dw = jax.vjp(conv, w)[1](dy)[0]
    return dx, dw.reshape(w.shape).astype(w.dtype)


conv_same.defvjp(_conv_fwd, _conv_bwd)


def _pool_windows(x: jax.Array) -> jax.Array:
    n, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2, :]
    return x.reshape(n, h // 2, 2, w // 2, 2, c)


def _pool_argmax(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The 2×2 window maxima and which of the four (row-major, first on ties) holds each."""
    win = _pool_windows(x)
    best, idx = win[:, :, 0, :, 0, :], jnp.zeros(win.shape[:2] + win.shape[3:4] + win.shape[5:], jnp.int8)
    for k, (i, j) in enumerate(((0, 1), (1, 0), (1, 1)), 1):
        value = win[:, :, i, :, j, :]
        better = value > best
        best, idx = jnp.where(better, value, best), jnp.where(better, jnp.int8(k), idx)
    return best, idx


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2×2 max-pool with stride 2 (VALID): ``[N, H, W, C]`` → ``[N, H//2, W//2, C]``.

    Same values and gradient as ``flax.linen.max_pool(x, (2, 2), strides=(2, 2))``; an
    odd last row or column is dropped, as there.
    """
    # Pairwise maxima, not a reduce: XLA:CPU fuses the conv/ReLU producer into either,
    # but its reduce loop runs 7x slower than four element-wise operands.
    win = _pool_windows(x)
    top = jnp.maximum(win[:, :, 0, :, 0, :], win[:, :, 0, :, 1, :])
    return jnp.maximum(top, jnp.maximum(win[:, :, 1, :, 0, :], win[:, :, 1, :, 1, :]))


def _pool_fwd(x):
    # The forward pass records where each maximum is; the backward never compares floats
    # again (XLA may recompute x in another fusion, rounded differently, and miss it).
    y, idx = _pool_argmax(x)
    return y, (idx, x.shape)


def _pool_bwd(res, dy):
    idx, shape = res
    n, h, w, c = dy.shape
    zero = jnp.zeros_like(dy)
    g = jnp.stack([jnp.where(idx == k, dy, zero) for k in range(4)], axis=-2)  # [N, h, w, 4, C]
    g = g.reshape(n, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w, c)
    return (jnp.pad(g, ((0, 0), (0, shape[1] - 2 * h), (0, shape[2] - 2 * w), (0, 0))),)


max_pool_2x2.defvjp(_pool_fwd, _pool_bwd)


@jax.custom_vjp
def dense(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x @ w``: ``float[N, I] @ float[I, O]`` → ``float[N, O]``; the weight gradient is ``x.T @ dy``."""
    return x @ w


def _dense_fwd(x, w):
    return x @ w, (x, w)


def _dense_bwd(res, dy):
    x, w = res
    return (dy @ w.T).astype(x.dtype), (jnp.transpose(x) @ dy).astype(w.dtype)


dense.defvjp(_dense_fwd, _dense_bwd)


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Any,
    padding: Any,
    lhs_dilation: Any = None,
    rhs_dilation: Any = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    precision: Any = None,
    *,
    same_conv: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    **kwargs: Any,
) -> jax.Array:
    """Drop-in for ``lax.conv_general_dilated`` (``nn.Conv(conv_general_dilated=...)``).

    Runs ``same_conv`` (default :func:`conv_same`; :mod:`vggjax.nn.impl` passes the oneDNN
    one) for the convolutions VGG uses (2-D NHWC/HWIO, stride 1, no dilation, one group,
    symmetric padding k//2, odd square kernel) and hands any other convolution (a dilated
    one included) to ``lax.conv_general_dilated`` unchanged.
    """
    k = rhs.shape[0]
    plain = (
        lhs.ndim == 4
        and rhs.shape[0] == rhs.shape[1]
        and k % 2 == 1
        and tuple(window_strides) == (1, 1)
        and (lhs_dilation is None or tuple(lhs_dilation) == (1, 1))
        and (rhs_dilation is None or tuple(rhs_dilation) == (1, 1))
        and feature_group_count == 1
        and not kwargs
        and _is_nhwc(dimension_numbers, lhs, rhs)
        and not isinstance(padding, str)
        and [tuple(p) for p in padding] == [(k // 2, k // 2)] * 2
    )
    if plain:
        return (same_conv or conv_same)(lhs, rhs)
    return lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        precision=precision,
        **kwargs,
    )


def _is_nhwc(dimension_numbers: Any, lhs: jax.Array, rhs: jax.Array) -> bool:
    nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
    return lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == nhwc


def dot_general(
    lhs: jax.Array,
    rhs: jax.Array,
    dimension_numbers: Any,
    precision: Any = None,
    preferred_element_type: Any = None,
    **kwargs: Any,
) -> jax.Array:
    """Drop-in for ``lax.dot_general`` (``nn.Dense(dot_general=...)``).

    Runs :func:`dense` for a plain ``[N, I] @ [I, O]`` product and anything else through
    ``lax.dot_general`` unchanged.
    """
    if lhs.ndim == rhs.ndim == 2 and dimension_numbers == (((1,), (0,)), ((), ())) and not kwargs:
        if preferred_element_type is None:
            return dense(lhs, rhs)
    return lax.dot_general(
        lhs,
        rhs,
        dimension_numbers,
        precision=precision,
        preferred_element_type=preferred_element_type,
        **kwargs,
    )
