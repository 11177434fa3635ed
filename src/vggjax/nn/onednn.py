"""oneDNN convolutions as JAX ops: XLA FFI custom calls under a ``jax.custom_vjp``.

:func:`conv_same` computes the same function and gradients as :func:`vggjax.nn.fastops.conv_same`
(a k×k convolution, stride 1, zero padding k//2, NHWC / HWIO, float32) with oneDNN's forward,
backward-data and backward-weights primitives (``onednn_conv.cc``, built by
:mod:`vggjax.nn.onednn_build`). Under ``jit`` each is one custom call; under ``grad`` the input
gradient of a layer whose input is not differentiated (the first) is never computed (XLA drops
the unused call); under ``vmap`` the calls loop over the mapped axis (``vmap_method="sequential"``:
correct, not faster).

:func:`usable` says whether an input can take this path (oneDNN loaded, float32, a CPU backend);
:func:`vggjax.nn.fastops.conv_general_dilated` falls back to the pure-JAX convolution otherwise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vggjax.nn import fastops, onednn_build


def usable(x: jax.Array, w: jax.Array) -> bool:
    """Whether ``conv_same(x, w)`` can run on oneDNN: float32 operands on a CPU backend, extension loaded."""
    return (
        x.dtype == jnp.float32
        and w.dtype == jnp.float32
        and jax.default_backend() == "cpu"
        and onednn_build.available()
    )


def _call(target: str, shape: tuple[int, ...], *args: jax.Array, **attrs) -> jax.Array:
    out = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.ffi.ffi_call(target, out, vmap_method="sequential")(*args, **attrs)


def _forward(x: jax.Array, w: jax.Array) -> jax.Array:
    return _call("vggjax_conv_fwd", x.shape[:3] + w.shape[3:], x, w, pad=np.int64(w.shape[0] // 2))


@jax.custom_vjp
def conv_same(x: jax.Array, w: jax.Array) -> jax.Array:
    """k×k convolution, stride 1, zero padding k//2 (odd k), on oneDNN.

    Args:
      x: ``float32[N, H, W, I]``.
      w: ``float32[k, k, I, O]`` (Flax's ``nn.Conv`` kernel layout).

    Returns:
      ``float32[N, H, W, O]``, equal (to float rounding) to
      ``lax.conv_general_dilated(x, w, (1, 1), "SAME")`` in NHWC / HWIO.

    Raises:
      RuntimeError (XLA's, at run time): if the extension is not loaded; check :func:`usable`.
    """
    return _forward(x, w)


def _conv_fwd(x, w):
    return _forward(x, w), (x, w)


def _conv_bwd(res, dy):
    x, w = res
    pad = np.int64(w.shape[0] // 2)
    dx = _call("vggjax_conv_bwd_data", x.shape, dy, w, pad=pad)
    dw = _call("vggjax_conv_bwd_weights", w.shape, x, dy, pad=pad)
    return dx, dw


conv_same.defvjp(_conv_fwd, _conv_bwd)


def conv_or_jax(x: jax.Array, w: jax.Array) -> jax.Array:
    """:func:`conv_same` where :func:`usable`, else :func:`vggjax.nn.fastops.conv_same` (same numbers).

    Shapes as in :func:`conv_same`; any float dtype.
    """
    return conv_same(x, w) if usable(x, w) else fastops.conv_same(x, w)
