"""oneDNN convolutions as JAX ops: XLA FFI custom calls under a ``jax.custom_vjp``.

:func:`conv_same` computes the same function and gradients as :func:`vggjax.nn.fastops.conv_same`
(a k×k convolution, stride 1, zero padding k//2, NHWC / HWIO, float32) with oneDNN's forward,
backward-data and backward-weights primitives (``onednn_conv.cc``, built by
:mod:`vggjax.nn.onednn_build`). :func:`conv_bias_relu` is a convolution with its bias and ReLU
fused into the forward primitive, and :func:`conv_bias_relu_pool` adds the 2×2 max-pool; the VGG
model keeps its layers separate (no measurable gain: docs/speed.md). Under ``jit`` each is one
custom call; under ``grad`` the input gradient of a layer whose input is not differentiated (the
first) is never computed (XLA drops the unused call). Under ``vmap`` a mapped input with shared
weights is folded into the batch (one call); anything else (mapped weights) loops over the mapped
axis (``lax.map``). Under a data-parallel mesh (``jit`` with the batch sharded) each device runs
the calls on its own rows (``custom_partitioning``), and the weight gradient's partial sums are
all-reduced.

Differentiation is first-order reverse mode (``grad``, ``vjp``, ``jacrev``): forward mode (``jvp``)
is refused by ``custom_vjp``, and a second derivative fails in ``custom_partitioning``. Inside
``shard_map`` the forward pass works; its gradient needs ``check_vma=False`` (the custom calls'
outputs do not carry the mesh axis they vary over).

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


def _ffi(target: str, rule: str, shape_of, *, rows: int = 1, reduce: bool = False, kernel: bool = True):
    """The FFI call ``target`` for a k×k kernel (``shape_of(k, *args)``: the result's shape) with
    its SPMD rule.

    Under a data-parallel mesh each device runs the call on its own rows of the batch: the
    leading axis of the first ``rows`` operands (the others, weights and bias, are whole on
    every device). ``reduce``: the result sums over the batch (the weight gradient), so each
    device's partial sum is all-reduced (``psum``) over the batch's mesh axes; else the result
    is split by rows too. Every other axis stays whole. ``kernel``: the handler takes the
    padding ``k // 2`` as its attribute ``pad`` (the convolutions; not the ReLU's backward).
    """

    def call(k: int, *args: jax.Array) -> jax.Array:
        out = jax.ShapeDtypeStruct(shape_of(k, *args), jnp.float32)
        attrs = {"pad": np.int64(k // 2)} if kernel else {}
        return jax.ffi.ffi_call(target, out, vmap_method="sequential")(*args, **attrs)

    def partition(k, mesh, arg_shapes, result_shape):
        spec = arg_shapes[0].sharding.spec
        axes = spec[0] if len(spec) else None
        split = NamedSharding(mesh, P(axes, None, None, None))
        whole = NamedSharding(mesh, P())
        arg_shardings = (split,) * rows + (whole,) * (len(arg_shapes) - rows)
        out_sharding = whole if reduce else split

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
            if not reduce and all(in_batched[:rows]) and not any(in_batched[rows:]):  # fold into the batch
                n = args[0].shape[1]  # explicit sizes: -1 cannot be inferred when the arrays are empty
                folded = [a.reshape(axis_size * n, *a.shape[2:]) for a in args[:rows]]
                y = f(*folded, *args[rows:])
                return y.reshape(axis_size, n, *y.shape[1:]), True
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
_conv_bias_relu = _ffi(
    "vggjax_conv_bias_relu_fwd",
    "n h w i, k l i o, o -> n h w o",
    lambda k, x, w, b: x.shape[:3] + w.shape[3:],
)
_backward_data = _ffi(
    "vggjax_conv_bwd_data", "n h w o, k l i o -> n h w i", lambda k, dy, w: dy.shape[:3] + w.shape[2:3]
)
_backward_weights = _ffi(
    "vggjax_conv_bwd_weights",
    "n h w i, n h w o -> k l i o",
    lambda k, x, dy: (k, k, x.shape[3], dy.shape[3]),
    rows=2,
    reduce=True,
)
_relu_backward = _ffi(
    "vggjax_relu_bwd", "n h w c, n h w c -> n h w c", lambda k, dy, y: dy.shape, rows=2, kernel=False
)


def _check(x: jax.Array, w: jax.Array, b: jax.Array | None = None) -> int:
    """The kernel side ``k``, after checking the operands (the C++ side trusts their shapes).

    Raises:
      TypeError: unless every operand is a float32 array.
      ValueError: unless ``x`` is ``[N, H, W, I]``, ``w`` ``[k, k, I, O]`` with odd ``k`` and
        ``I``, ``O`` ≥ 1, and ``b`` (if given) ``[O]``.
    """
    operands = {"x": x, "w": w} | ({} if b is None else {"b": b})
    for name, a in operands.items():
        if not isinstance(a, jax.Array | np.ndarray) or a.dtype != np.float32:
            got = a.dtype if isinstance(a, jax.Array | np.ndarray) else type(a).__name__
            raise TypeError(f"oneDNN conv: {name} must be a float32 array, got {got}; convert it first")
    k = w.shape[0] if w.ndim == 4 else 0
    ok = x.ndim == 4 and w.ndim == 4 and w.shape[1] == k and k % 2 == 1 and w.shape[2] == x.shape[3]
    if not ok or min(w.shape[2:]) < 1 or (b is not None and b.shape != (w.shape[3],)):
        bias = "" if b is None else f", b {tuple(b.shape)}"
        raise ValueError(
            f"oneDNN conv: x {tuple(x.shape)}, w {tuple(w.shape)}{bias} do not fit; need x [N, H, W, I], "
            "w [k, k, I, O] with odd k and I, O >= 1" + ("" if b is None else ", and b [O]")
        )
    return k


def _forward(x: jax.Array, w: jax.Array) -> jax.Array:
    return _conv_forward(_check(x, w), x, w)


def _fused(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    return _conv_bias_relu(_check(x, w, b), x, w, b)


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
      TypeError: for an operand that is not a float32 array.
      ValueError: if the shapes do not fit together as above (or a channel count is 0).
    """
    return _forward(x, w)


def _conv_fwd(x, w):
    return _forward(x, w), (x, w)


def _conv_bwd(res, dy):
    x, w = res
    k = w.shape[0]
    return _backward_data(k, dy, w), _backward_weights(k, x, dy)


conv_same.defvjp(_conv_fwd, _conv_bwd)


@jax.custom_vjp
def conv_bias_relu(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """``relu(conv_same(x, w) + b)`` in one oneDNN primitive (bias and ReLU as its post-ops).

    One pass over the output instead of three (convolution, bias, ReLU); the gradient masks
    ``dy`` by ``y > 0`` (so 0 at a zero pre-activation, like ``jax.nn.relu``), sums the bias
    gradient in JAX and runs the two backward primitives of :func:`conv_same` on the masked ``dy``.

    Args:
      x: ``float32[N, H, W, I]``.
      w: ``float32[k, k, I, O]``, odd ``k``.
      b: ``float32[O]``.

    Returns:
      ``float32[N, H, W, O]``, ≥ 0. A NaN pre-activation gives 0 (oneDNN's ReLU), where
      ``jax.nn.relu`` gives NaN; check the loss or the gradient norm for divergence.

    Raises:
      RuntimeError: if the extension cannot be loaded; check :func:`usable`.
      TypeError: for an operand that is not a float32 array.
      ValueError: if the shapes do not fit together as above (or a channel count is 0).
    """
    return _fused(x, w, b)


def _cbr_fwd(x, w, b):
    y = _fused(x, w, b)
    return y, (x, w, y)


def _cbr_bwd(res, dy):
    x, w, y = res
    # The ReLU's backward is a custom call, not ``jnp.where(y > 0, dy, 0)``: XLA (jaxlib 0.10.2)
    # fuses that where with a following 2x2 max-pool's backward, which reads y's other window
    # elements, and writes the fusion's result into y's buffer as it goes: wrong gradients (the
    # model-gradient checks in tests/test_onednn.py caught it). A custom call's output never
    # shares an operand's buffer.
    dz = _relu_backward(w.shape[0], dy, y)
    return (*_conv_bwd((x, w), dz), dz.sum(axis=(0, 1, 2)))


conv_bias_relu.defvjp(_cbr_fwd, _cbr_bwd)


@jax.custom_vjp
def conv_bias_relu_pool(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """``max_pool_2x2(conv_bias_relu(x, w, b))``: a VGG block's last conv, its ReLU and the pool.

    The same numbers and gradients as the two ops in a row (the pool is
    :func:`vggjax.nn.fastops.max_pool_2x2`); the backward pass applies the ReLU's mask on the
    pooled side (``h > 0``: a window's maximum routes the gradient, and it is positive exactly
    where the ReLU passed it), so the pool's backward writes the convolution's output gradient
    in one XLA fusion, with no separate ReLU backward.

    Args:
      x: ``float32[N, H, W, I]``.
      w: ``float32[k, k, I, O]``, odd ``k``.
      b: ``float32[O]``.

    Returns:
      ``float32[N, H//2, W//2, O]``, ≥ 0 (a NaN pre-activation gives 0, as in :func:`conv_bias_relu`).

    Raises:
      RuntimeError: if the extension cannot be loaded; check :func:`usable`.
      TypeError: for an operand that is not a float32 array.
      ValueError: if the shapes do not fit together as above (or a channel count is 0).
    """
    return fastops.max_pool_2x2(_fused(x, w, b))


def _cbrp_fwd(x, w, b):
    y = _fused(x, w, b)
    h = fastops.max_pool_2x2(y)
    return h, (x, w, y, h)


def _cbrp_bwd(res, dh):
    x, w, y, h = res
    _, pool_vjp = jax.vjp(fastops.max_pool_2x2, y)
    (dz,) = pool_vjp(jnp.where(h > 0, dh, 0.0))
    return (*_conv_bwd((x, w), dz), dz.sum(axis=(0, 1, 2)))


conv_bias_relu_pool.defvjp(_cbrp_fwd, _cbrp_bwd)


def conv_or_jax(x: jax.Array, w: jax.Array) -> jax.Array:
    """:func:`conv_same` where :func:`usable`, else :func:`vggjax.nn.fastops.conv_same` (same numbers).

    Shapes as in :func:`conv_same`; any float dtype.
    """
    return conv_same(x, w) if usable(x, w) else fastops.conv_same(x, w)
