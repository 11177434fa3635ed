"""oneDNN convolutions as JAX ops: XLA FFI custom calls under a ``jax.custom_vjp``.

:func:`conv_same` computes the same function and gradients as :func:`vggjax.nn.fastops.conv_same`
(a k×k convolution, stride 1, zero padding k//2, NHWC / HWIO, float32) with oneDNN's forward,
backward-data and backward-weights primitives (``onednn_conv.cc``, built by
:mod:`vggjax.nn.onednn_build`). Under ``jit`` each is one custom call; under ``grad`` the input
gradient of a layer whose input is not differentiated (the first) is never computed (XLA drops
the unused call). Under ``vmap`` a mapped input with shared weights is folded into the batch
(one call); anything else (mapped weights) loops over the mapped axis (``lax.map``). Under a
data-parallel mesh (``jit`` with the batch sharded) each device runs the calls on its own
rows (``custom_partitioning``), and the weight gradient's partial sums are all-reduced.

:func:`usable` says whether an input can take this path (oneDNN loaded, float32, a CPU backend);
:func:`vggjax.nn.fastops.conv_general_dilated` falls back to the pure-JAX convolution otherwise.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_batching import custom_vmap
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from vggjax.nn import fastops, onednn_build


def usable(x: jax.Array, w: jax.Array) -> bool:
    """Whether ``conv_same(x, w)`` can run on oneDNN: float32 operands on a CPU backend, extension loaded."""
    return (
        x.dtype == jnp.float32
        and w.dtype == jnp.float32
        and jax.default_backend() == "cpu"
        and onednn_build.available()
    )


def _ffi(target: str, rule: str, shape_of, *, reduce: bool = False):
    """The FFI call ``target`` for a k×k kernel (``shape_of(k, *args)``: the result's shape) with
    its SPMD rule.

    Under a data-parallel mesh each device runs the call on its own rows of the batch (the
    leading axis of every batched operand); ``reduce``: the result sums over the batch (the
    weight gradient), so each device's partial sum is all-reduced (``psum``) over the batch's
    mesh axes. Every other axis stays whole.
    """

    def call(k: int, *args: jax.Array) -> jax.Array:
        out = jax.ShapeDtypeStruct(shape_of(k, *args), jnp.float32)
        return jax.ffi.ffi_call(target, out, vmap_method="sequential")(*args, pad=np.int64(k // 2))

    def partition(k, mesh, arg_shapes, result_shape):
        spec = arg_shapes[0].sharding.spec
        axes = spec[0] if len(spec) else None
        rows = NamedSharding(mesh, P(axes, None, None, None))
        whole = NamedSharding(mesh, P())
        if reduce:
            arg_shardings, out_sharding = (rows, rows), whole
        else:
            arg_shardings, out_sharding = (rows, whole), rows

        def lower(*args):
            y = call(k, *args)
            return jax.lax.psum(y, axes) if reduce and axes is not None else y

        return mesh, lower, out_sharding, arg_shardings

    def infer(k, mesh, arg_shapes, result_shape):
        return partition(k, mesh, arg_shapes, result_shape)[2]

    op = custom_partitioning(call, static_argnums=(0,))
    factors = rule.replace(",", " ").replace("->", " ").split()
    others = tuple(dict.fromkeys(f for f in factors if f != "n"))  # in rule order, as Shardy wants
    op.def_partition(
        partition,
        infer_sharding_from_operands=infer,
        sharding_rule=rule,
        reduction_factors=("n",) if reduce else (),
        need_replication_factors=others,
    )

    @functools.cache
    def batchable(k: int):
        f = custom_vmap(lambda *args: op(k, *args))

        @f.def_vmap
        def rule(axis_size, in_batched, *args):
            if not reduce and list(in_batched) == [True, False]:  # fold the mapped axis into the batch
                y = f(args[0].reshape(-1, *args[0].shape[2:]), args[1])
                return y.reshape(axis_size, -1, *y.shape[1:]), True
            pairs = zip(args, in_batched, strict=True)
            args = [a if b else jnp.broadcast_to(a, (axis_size, *a.shape)) for a, b in pairs]
            return jax.lax.map(lambda a: f(*a), args), True

        return f

    def run(k: int, *args: jax.Array) -> jax.Array:
        if not onednn_build.available():
            raise RuntimeError(f"oneDNN convolutions: {onednn_build.status()}")
        return batchable(k)(*args)

    return run


_conv_forward = _ffi(
    "vggjax_conv_fwd", "n h w i, k l i o -> n h w o", lambda k, x, w: x.shape[:3] + w.shape[3:]
)
_backward_data = _ffi(
    "vggjax_conv_bwd_data", "n h w o, k l i o -> n h w i", lambda k, dy, w: dy.shape[:3] + w.shape[2:3]
)
_backward_weights = _ffi(
    "vggjax_conv_bwd_weights",
    "n h w i, n h w o -> k l i o",
    lambda k, x, dy: (k, k, x.shape[3], dy.shape[3]),
    reduce=True,
)


def _forward(x: jax.Array, w: jax.Array) -> jax.Array:
    return _conv_forward(w.shape[0], x, w)


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
      RuntimeError: if the extension cannot be loaded (the message says why); check :func:`usable`.
    """
    return _forward(x, w)


def _conv_fwd(x, w):
    return _forward(x, w), (x, w)


def _conv_bwd(res, dy):
    x, w = res
    k = w.shape[0]
    return _backward_data(k, dy, w), _backward_weights(k, x, dy)


conv_same.defvjp(_conv_fwd, _conv_bwd)


def conv_or_jax(x: jax.Array, w: jax.Array) -> jax.Array:
    """:func:`conv_same` where :func:`usable`, else :func:`vggjax.nn.fastops.conv_same` (same numbers).

    Shapes as in :func:`conv_same`; any float dtype.
    """
    return conv_same(x, w) if usable(x, w) else fastops.conv_same(x, w)
