"""A VGG as an ONNX graph, built straight from its layer list with the ``onnx`` library's helpers.

Why this route and not a converter of the jitted function (``jax2onnx``), measured with
the tiny models of the tests (``docs/export.md`` has the figures): beside vggjax's
``orbax-checkpoint>=0.12.8`` pip resolves ``jax2onnx`` to 0.13.0, which brings some 20 more
packages (equinox, huggingface-hub, netron, dm-pix, orbax-export, chex …; 75 MB besides
onnx and onnxruntime), fails on Flax's own max-pool (``impl="xla"``: a TypeError in its
MaxPool plugin) and, from the ``cpu_fast`` ops, makes 149–221 nodes of Gather, Squeeze and
Shape whose adaptive head onnxruntime refuses at opset 17. A VGG is data: every layer of
:func:`vggjax.arch.layers` maps to one or two ONNX ops with the run's exact weights (30
nodes for VGG-11, 35 with the preprocessing); ``onnx`` and ``onnxruntime`` are all it needs.

The graph takes NHWC images, as vggjax does, and computes in NCHW (ONNX's ``Conv``):

==============  ==========================================================================
input           ``float32[N, S, S, C]``; with ``preprocessing``, ``uint8[N, P, P, C]`` →
                Cast, ÷255, bilinear resize P→S, Clip [0, 1], (x − mean) / std, as
                :func:`vggjax.training.steps.preprocess` does
conv            ``Conv`` (kernel ``[kh, kw, I, O]`` → ``[O, I, kh, kw]``, pads ``k // 2``)
bn              ``BatchNormalization`` (running statistics, epsilon 1e-5)
relu / lrn      ``Relu`` / ``LRN`` (ONNX's alpha is divided by its size: 5 × 1e-4)
pool            ``MaxPool`` 2×2 stride 2 (an odd last row is dropped, as in Flax)
avgpool         nothing at 7×7; ``AveragePool`` when 7 divides the side; else the adaptive
                bins as two ``MatMul`` with the matrix of :func:`vggjax.nn.ops.adaptive_avg_pool`
flatten         ``Transpose`` back to NHWC, then ``Flatten``: vggjax's fc6 row order
dense           ``Gemm`` (kernel ``[in, out]``); dropout is the identity in evaluation
==============  ==========================================================================

The bilinear resize is two ``MatMul`` with the matrix ``jax.image.resize`` itself applies
(computed from it for the fixed sizes), so it is JAX's resize, antialiasing included.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vggjax.arch import ADAPTIVE_SIDE, Layer
from vggjax.errors import ExportError
from vggjax.nn.ops import adaptive_avg_pool, local_response_norm
from vggjax.preprocessing import Preprocessing

OPSET = 17  # every op used is in ONNX since opset 13 at the latest; onnxruntime runs 17 everywhere
INPUT = "images"
BN_EPSILON = 1e-5  # VGGBlock's nn.BatchNorm(epsilon=1e-5), torchvision's
_LRN = {k: p.default for k, p in inspect.signature(local_response_norm).parameters.items() if k != "x"}


def onnx_module() -> Any:
    """The ``onnx`` package.

    Raises:
      ExportError: when it is not installed (``pip install 'vggjax[onnx]'``).
    """
    try:
        import onnx
    except ImportError:
        raise ExportError(
            "--format onnx needs the onnx package, which is not installed: pip install 'vggjax[onnx]'"
        ) from None
    return onnx


def resize_matrix(src: int, dst: int) -> np.ndarray:
    """The ``float32[dst, src]`` matrix of ``jax.image.resize(..., method="bilinear")`` along one axis."""
    return np.asarray(jax.image.resize(jnp.eye(src, dtype=jnp.float32), (dst, src), "bilinear"))


def adaptive_matrix(side: int, size: int = ADAPTIVE_SIDE) -> np.ndarray:
    """The ``float32[size, side]`` averaging matrix of :func:`~vggjax.nn.ops.adaptive_avg_pool` on one axis.

    Row ``i`` averages the bin of input rows ``floor(i·side/size)`` … ``ceil((i+1)·side/size)``.
    """
    eye = jnp.eye(side, dtype=jnp.float32).reshape(side, side, 1, 1)  # [b, h, 1, 1]: pools h, copies w
    return np.asarray(adaptive_avg_pool(eye, size)[:, :, 0, 0]).T


class _Graph:
    """Nodes and initializers of one graph; node ``name`` outputs tensor ``name:0`` (or ``out``)."""

    def __init__(self, onnx: Any) -> None:
        self.onnx, self.nodes, self.inits = onnx, [], []

    def const(self, name: str, value: Any) -> str:
        self.inits.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], name: str, out: str | None = None, **attrs: Any) -> str:
        out = out or f"{name}:0"  # graph outputs take the bare names (logits, relu4_3 ...)
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [out], name=name, **attrs))
        return out


def _f32(x: Any) -> np.ndarray:
    return np.asarray(x, np.float32)


def _spatial_linear(g: _Graph, x: str, name: str, rows: np.ndarray, cols: np.ndarray) -> str:
    """``rows @ x @ cols.T`` on the last two axes of NCHW ``x``: a separable linear resize or pool."""
    x = g.op("MatMul", [x, g.const(f"{name}.w", cols.T)], f"{name}.along_w")
    return g.op("MatMul", [g.const(f"{name}.h", rows), x], name)


def _preprocess(g: _Graph, x: str, prep: Preprocessing, image_size: int) -> str:
    """uint8 NHWC → float32 NCHW in the run's input range, as :func:`vggjax.training.steps.preprocess`."""
    x = g.op("Cast", [x], "to_float", to=g.onnx.TensorProto.FLOAT)
    x = g.op("Div", [x, g.const("pixel_max", _f32(255.0))], "scale")
    x = g.op("Transpose", [x], "to_nchw", perm=[0, 3, 1, 2])
    if prep.size != image_size:
        m = resize_matrix(prep.size, image_size)
        x = _spatial_linear(g, x, "resize", m, m)
    x = g.op("Clip", [x, g.const("zero", _f32(0.0)), g.const("one", _f32(1.0))], "clip")
    if any(m != 0 for m in prep.mean) or any(s != 1 for s in prep.std):
        shape = (1, len(prep.mean), 1, 1)
        x = g.op("Sub", [x, g.const("mean", _f32(prep.mean).reshape(shape))], "sub_mean")
        x = g.op("Div", [x, g.const("std", _f32(prep.std).reshape(shape))], "normalise")
    return x


def _layer(g: _Graph, x: str, layer: Layer, variables: Mapping[str, Any], side: int) -> tuple[str, int]:
    """Appends one layer's ops; returns the output tensor and the map's side after it."""
    name, kind = layer.name, layer.kind
    p = variables["params"]
    for key in layer.path:
        p = p[key]
    if kind == "conv":
        k, pad = layer.kernel, layer.padding
        w = g.const(f"{name}.weight", _f32(p["kernel"]).transpose(3, 2, 0, 1))
        b = g.const(f"{name}.bias", _f32(p["bias"]))
        return g.op("Conv", [x, w, b], name, kernel_shape=[k, k], pads=[pad] * 4, strides=[1, 1]), side
    if kind == "bn":
        s = variables["batch_stats"]
        for key in layer.path:
            s = s[key]
        ins = [g.const(f"{name}.{n}", _f32(v)) for n, v in (("scale", p["scale"]), ("bias", p["bias"]))]
        ins += [g.const(f"{name}.{n}", _f32(s[n])) for n in ("mean", "var")]
        return g.op("BatchNormalization", [x, *ins], name, epsilon=BN_EPSILON), side
    if kind == "relu":
        return g.op("Relu", [x], name), side
    if kind == "lrn":
        size = _LRN["size"]
        attrs = {"size": size, "alpha": _LRN["alpha"] * size, "beta": _LRN["beta"], "bias": _LRN["k"]}
        return g.op("LRN", [x], name, **attrs), side
    if kind == "pool":
        return g.op("MaxPool", [x], name, kernel_shape=[2, 2], strides=[2, 2]), side // 2
    if kind == "avgpool":
        if side == ADAPTIVE_SIDE:
            return g.op("Identity", [x], name), side
        if side % ADAPTIVE_SIDE == 0:
            k = side // ADAPTIVE_SIDE
            return g.op("AveragePool", [x], name, kernel_shape=[k, k], strides=[k, k]), ADAPTIVE_SIDE
        m = adaptive_matrix(side)
        return _spatial_linear(g, x, name, m, m), ADAPTIVE_SIDE
    if kind == "flatten":
        x = g.op("Transpose", [x], f"{name}.to_nhwc", perm=[0, 2, 3, 1])
        return g.op("Flatten", [x], name, axis=1), 0
    if kind == "dense":
        w, b = g.const(f"{name}.weight", _f32(p["kernel"])), g.const(f"{name}.bias", _f32(p["bias"]))
        return g.op("Gemm", [x, w, b], name), 0
    if kind == "dropout":
        return x, side
    if kind == "globalpool":
        op = "GlobalAveragePool" if layer.name == "global_avgpool" else "GlobalMaxPool"
        return g.op("Flatten", [g.op(op, [x], f"{name}.map")], name, axis=1), 0
    raise ExportError(
        f"cannot convert layer {name} (kind {kind!r}) to ONNX: vggjax.interop.onnx_graph has no op for it; "
        "export with --format stablehlo instead"
    )


def build_onnx(
    layers: Sequence[Layer],
    variables: Mapping[str, Any],
    *,
    input_shape: Sequence[int | str],
    image_size: int,
    outputs: Mapping[str, Sequence[int | str]],
    preprocessing: Preprocessing | None = None,
    taps: Sequence[str] | None = None,
    probs: bool = False,
    metadata: Mapping[str, str] | None = None,
) -> Any:
    """The ONNX model of a VGG's layers with its weights, checked by ``onnx.checker``.

    Args:
      layers: the model's layers in order (:func:`vggjax.arch.layers` with its head).
      variables: ``{"params": ..., "batch_stats": ...}`` of the model (numpy or JAX arrays).
      input_shape: NHWC, batch an int or a name (``"N"``: any batch), e.g. ``("N", 28, 28, 1)``;
        ``uint8`` with ``preprocessing``, else ``float32``. The input is named ``images``.
      image_size: the model's input side ``S`` (the resize target with ``preprocessing``).
      outputs: output name → shape, in order: ``{"logits": ("N", 10)}``, ``{"probs": ...}``,
        or one entry per tap (NHWC ``[N, H', W', C']`` or ``[N, F]``), as ``jax.eval_shape`` gives them.
      preprocessing: bake the run's device-side preprocessing in front (input uint8).
      taps: layer names to output instead of the logits (:func:`vggjax.arch.feature_names`);
        the graph stops at the deepest.
      probs: a ``Softmax`` after the logits.
      metadata: string pairs for the model's ``metadata_props``.

    Returns:
      ``onnx.ModelProto`` at opset :data:`OPSET`, not yet serialized.

    Raises:
      ExportError: without the onnx package, for a layer kind it has no op for (naming the
        layer), or when ``onnx.checker`` refuses the graph (naming the node).
    """
    onnx = onnx_module()
    g, side = _Graph(onnx), image_size
    dtype = onnx.TensorProto.UINT8 if preprocessing is not None else onnx.TensorProto.FLOAT
    x = INPUT
    if preprocessing is not None:
        x = _preprocess(g, x, preprocessing, image_size)
    else:
        x = g.op("Transpose", [x], "to_nchw", perm=[0, 3, 1, 2])
    wanted, found = set(taps or ()), {}
    for layer in layers:
        if wanted and len(found) == len(wanted):
            break
        x, side = _layer(g, x, layer, variables, side)
        if layer.name in wanted:
            found[layer.name] = (x, side > 0)
    for name in outputs:
        if taps is None:
            g.op("Softmax" if probs else "Identity", [x], name, out=name, **({"axis": -1} if probs else {}))
        elif found[name][1]:  # a conv-side map: back to NHWC, as vggjax returns it
            g.op("Transpose", [found[name][0]], f"{name}.to_nhwc", out=name, perm=[0, 2, 3, 1])
        else:
            g.op("Identity", [found[name][0]], f"{name}.out", out=name)
    h = onnx.helper
    graph = h.make_graph(
        g.nodes,
        "vggjax",
        [h.make_tensor_value_info(INPUT, dtype, list(input_shape))],
        [h.make_tensor_value_info(n, onnx.TensorProto.FLOAT, list(s)) for n, s in outputs.items()],
        initializer=g.inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)], producer_name="vggjax")
    model.ir_version = 8  # opset 17's IR version: onnxruntime releases of 2022 on read it
    h.set_model_props(model, dict(metadata or {}))
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"onnx.checker refused the graph: {' '.join(str(e).split())[:300]}") from None
    return model
