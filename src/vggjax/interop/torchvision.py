"""torchvision VGG ``state_dict`` ⇄ vggjax variables, with strict key and shape checks.

What such a file holds (keys, shapes, head, variant) and the checks it must pass are in
:mod:`vggjax.interop.state_dict`; this module converts the arrays.

Conversions (PyTorch → Flax):
  conv ``weight[O, I, kh, kw]`` → ``kernel[kh, kw, I, O]``; linear ``weight[O, I]`` →
  ``kernel[I, O]``; BatchNorm ``weight, bias, running_mean, running_var`` → params
  ``scale, bias`` and batch_stats ``mean, var`` (``num_batches_tracked`` is dropped on
  import and written as 0 on export). ``fc6`` also permutes its inputs: PyTorch flattens
  the last map channel-first (``c·s² + h·s + w``), vggjax NHWC (``(h·s + w)·C + c``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from vggjax.arch import Arch, get_arch, layers
from vggjax.errors import ArchError, CheckpointError
from vggjax.interop.state_dict import (
    HeadShape,
    check_keys_and_shapes,
    check_variant,
    head_shape,
    strip_module_prefix,
    torchvision_layout,
)
from vggjax.nn.fit import check_fits


def from_torchvision(
    state: Mapping[str, np.ndarray],
    arch: str | Arch,
    *,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, Any], HeadShape]:
    """Converts a torchvision VGG state_dict into vggjax variables.

    Args:
      state: ``{key: array}``, e.g. from :func:`vggjax.interop.torchfile.read_state_dict`;
        conv weights ``float32[O, I, kh, kw]``, linear ``float32[O, I]``.
      arch: the arch the file holds: a name (``vgg16``, ``vgg11_bn``), literal or Arch.
      log: where notes (a stripped ``module.`` prefix) go.

    Returns:
      ``({"params": ..., "batch_stats": ...}, head)``; ``head.model(arch)`` is the
      matching :class:`~vggjax.nn.vgg.VGG` (head ``"adaptive"`` for torchvision files).

    Raises:
      CheckpointError: for plain weights given for a BatchNorm arch or the reverse
        (naming both variants), a missing or unexpected key, or a shape mismatch
        (naming the key and both shapes; suggesting the arch the file looks like).
      ArchError: for an invalid arch or A-LRN.
    """
    arch = get_arch(arch)
    state = strip_module_prefix(state, log)
    state = {k: v for k, v in state.items() if not k.endswith(".num_batches_tracked")}
    check_variant(state, arch)
    head = head_shape(state, arch)
    check_keys_and_shapes(state, arch, head)
    params: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    for layer in torchvision_layout(arch):
        prefix, path, kind = layer.torchvision, layer.path, layer.kind
        if kind == "dense" and head.hidden is None:
            continue
        w, b = (np.asarray(state[f"{prefix}.{key}"], np.float32) for key in ("weight", "bias"))
        if kind == "conv":
            leaf = {"kernel": w.transpose(2, 3, 1, 0), "bias": b}
        elif kind == "bn":
            leaf = {"scale": w, "bias": b}
            running = {k: np.asarray(state[f"{prefix}.running_{k}"], np.float32) for k in ("mean", "var")}
            _set(stats, path, running)
        elif path == ("fc6",):
            leaf = {"kernel": fc6_from_torch(w, arch.out_channels, head.side), "bias": b}
        else:
            leaf = {"kernel": w.T, "bias": b}
        _set(params, path, {k: np.ascontiguousarray(v) for k, v in leaf.items()})
    variables = {"params": params, "batch_stats": stats}
    side = head.side * 2 ** len(arch.blocks) if head.side else arch.min_input_size
    # guards the conversion itself: the tree must be what the model's init makes
    check_fits(
        head.model(arch),
        variables,
        (1, side, side, head.channels),
        what="the converted variables",
        hint="; please report this file",
    )
    return variables, head


def to_torchvision(variables: Mapping[str, Any], arch: str | Arch) -> dict[str, np.ndarray]:
    """Converts vggjax variables back into a torchvision VGG state_dict (numpy arrays).

    Inverse of :func:`from_torchvision`; BatchNorm layers get ``num_batches_tracked = 0``
    so ``load_state_dict(strict=True)`` accepts the result. A headless model exports
    ``features.*`` only; a flatten head's fc6 keeps its map side.

    Raises:
      CheckpointError: if the variables do not match ``arch`` (a missing layer).
      ArchError: for an invalid arch, A-LRN, or an arch with dilated convs: torchvision's
        VGG has none, so it would load their weights (same shapes) and run them undilated.
    """
    arch = get_arch(arch)
    dilated = [f"{x.name} ({x.dilation})" for x in layers(arch) if x.dilation != 1]
    if dilated:
        more = f" and {len(dilated) - 3} more" if len(dilated) > 3 else ""
        raise ArchError(
            f"torchvision's VGG has no dilated convs, but this arch dilates {', '.join(dilated[:3])}{more}: "
            "torchvision.models.vgg* would load the weights and compute something else; "
            "export only runs without dilations"
        )
    params, stats = variables["params"], variables.get("batch_stats", {})
    out: dict[str, np.ndarray] = {}
    for layer in torchvision_layout(arch):
        prefix, path, kind = layer.torchvision, layer.path, layer.kind
        try:
            leaf = _get(params, path)
        except KeyError:
            if kind == "dense":
                continue
            raise CheckpointError(f"the variables have no {'/'.join(path)}; are they for {arch}?") from None
        leaf = {k: np.asarray(v, np.float32) for k, v in leaf.items()}
        if kind == "conv":
            weight = leaf["kernel"].transpose(3, 2, 0, 1)
        elif kind == "bn":
            weight = leaf["scale"]
        elif path == ("fc6",):
            weight = fc6_to_torch(leaf["kernel"], arch.out_channels)
        else:
            weight = leaf["kernel"].T
        out[f"{prefix}.weight"], out[f"{prefix}.bias"] = weight, leaf["bias"]
        if kind == "bn":  # in torch's order, after weight and bias
            bn_stats = _get(stats, path)
            out[f"{prefix}.running_mean"] = np.asarray(bn_stats["mean"], np.float32)
            out[f"{prefix}.running_var"] = np.asarray(bn_stats["var"], np.float32)
            out[f"{prefix}.num_batches_tracked"] = np.array(0, np.int64)
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def fc6_from_torch(weight: np.ndarray, channels: int, side: int) -> np.ndarray:
    """``float32[O, C·s·s]`` (NCHW flatten) → fc6 kernel ``float32[s·s·C, O]`` (NHWC flatten)."""
    out = weight.shape[0]
    return (
        weight.reshape(out, channels, side, side).transpose(2, 3, 1, 0).reshape(side * side * channels, out)
    )


def fc6_to_torch(kernel: np.ndarray, channels: int) -> np.ndarray:
    """Inverse of :func:`fc6_from_torch`: fc6 kernel ``[s·s·C, O]`` → ``weight[O, C·s·s]``."""
    fan_in, out = kernel.shape
    side = math.isqrt(fan_in // channels)
    return kernel.reshape(side, side, channels, out).transpose(3, 2, 0, 1).reshape(out, fan_in)


def _set(tree: dict, path: tuple[str, ...], leaf: dict) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = leaf


def _get(tree: Mapping, path: tuple[str, ...]) -> Mapping:
    for key in path:
        tree = tree[key]
    return tree
