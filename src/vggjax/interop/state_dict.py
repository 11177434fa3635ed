"""What a torchvision VGG ``state_dict`` holds: its keys and shapes, head and variant, and their checks.

torchvision's VGG (``torchvision/models/vgg.py``) is ``features`` (a ``Sequential`` of
``Conv2d`` [, ``BatchNorm2d``], ``ReLU`` per conv and a ``MaxPool2d`` per block, so the
index ``N`` of ``features.N`` counts every one of them), ``avgpool``
(``AdaptiveAvgPool2d(7)``) and ``classifier`` (``Linear``, ``ReLU``, ``Dropout`` twice,
then ``Linear``: ``classifier.0/3/6`` are vggjax's ``fc6/fc7/fc8``). Every
:class:`vggjax.arch.Layer` carries its torchvision name, so any arch tuple and width
maps, not only the named ones.

:func:`expected_shapes` lists every key an arch and :class:`HeadShape` need;
:func:`head_shape` and :func:`guess_arch` read the head and the arch off a file;
:func:`check_variant` and :func:`check_keys_and_shapes` refuse a file that does not fit,
naming the key. The conversion itself is :mod:`vggjax.interop.torchvision`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

import numpy as np

from vggjax.arch import ADAPTIVE_SIDE, ALIASES, Arch, Layer, get_arch, layers
from vggjax.errors import ArchError, CheckpointError
from vggjax.nn.vgg import VGG

BN_KEYS = ("weight", "bias", "running_mean", "running_var")


@dataclasses.dataclass(frozen=True)
class HeadShape:
    """What a state_dict says beyond the arch: input channels and the dense head's sizes.

    Attributes:
      channels: input channels of the first conv (3 for ImageNet weights).
      hidden: width of fc6 and fc7 (4096 in torchvision), or None for a headless file.
      num_classes: outputs of fc8 (1000 for ImageNet), or None for a headless file.
      side: side of the last map that fc6 flattens: 7 for torchvision's adaptive head.
    """

    channels: int = 3
    hidden: int | None = 4096
    num_classes: int | None = 1000
    side: int | None = ADAPTIVE_SIDE

    @property
    def head(self) -> str | None:
        """vggjax's head for this shape: ``"adaptive"`` (side 7), ``"flatten"`` or None."""
        if self.hidden is None:
            return None
        return "adaptive" if self.side == ADAPTIVE_SIDE else "flatten"

    def model(self, arch: Arch) -> VGG:
        """The :class:`~vggjax.nn.vgg.VGG` whose variables match such a state_dict."""
        return VGG(
            arch,
            num_classes=self.num_classes or 1,
            hidden=self.hidden or 1,
            head=self.head,
            init_scheme="torchvision",
        )


def torchvision_layout(arch: Arch, *, hidden: int = 4096, num_classes: int = 1000) -> list[Layer]:
    """The weighted layers (conv, BatchNorm, dense) of ``arch`` with torchvision's head, in order.

    Each :class:`~vggjax.arch.Layer` has its torchvision module name (``layer.torchvision``,
    e.g. ``"features.1"``, ``"classifier.0"``) and its vggjax parameter path
    (``layer.path``, e.g. ``("block1", "bn1")``, ``("fc6",)``).

    Raises:
      ArchError: for the paper's A-LRN, which torchvision has no layout for.
    """
    if arch.lrn:
        raise ArchError("torchvision has no LRN layer, so A-LRN has no torchvision layout; use vgg11")
    every = layers(arch, head="adaptive", hidden=hidden, num_classes=num_classes)
    return [layer for layer in every if layer.kind in ("conv", "bn", "dense")]


def expected_shapes(arch: Arch, head: HeadShape) -> dict[str, tuple[int, ...]]:
    """Every key of the torchvision state_dict for ``arch`` and ``head``, with its shape."""
    out: dict[str, tuple[int, ...]] = {}
    c_in, fan_in = head.channels, arch.out_channels * (head.side or 0) ** 2
    for layer in torchvision_layout(arch, hidden=head.hidden or 1, num_classes=head.num_classes or 1):
        prefix, c, k = layer.torchvision, layer.channels, layer.kernel
        if layer.kind == "conv":
            out[f"{prefix}.weight"], out[f"{prefix}.bias"] = (c, c_in, k, k), (c,)
            c_in = c
        elif layer.kind == "bn":
            out.update({f"{prefix}.{key}": (c,) for key in BN_KEYS})
        elif head.hidden is not None:
            out[f"{prefix}.weight"], out[f"{prefix}.bias"] = (c, fan_in), (c,)
            fan_in = c
    return out


def strip_module_prefix(state: Mapping[str, np.ndarray], log: Callable[[str], None] = print) -> dict:
    """Removes the ``module.`` prefix that ``DataParallel``/``DistributedDataParallel`` add.

    Only when every key has it; says so through ``log``.
    """
    if state and all(k.startswith("module.") for k in state):
        log("note: stripped the 'module.' prefix (a DataParallel/DistributedDataParallel state_dict)")
        return {k.removeprefix("module."): v for k, v in state.items()}
    return dict(state)


def head_shape(state: Mapping[str, np.ndarray], arch: Arch) -> HeadShape:
    """Reads input channels, hidden width, classes and fc6's map side off a state_dict."""
    first = state.get("features.0.weight")
    channels = int(first.shape[1]) if first is not None and first.ndim == 4 else 3
    fc6, fc8 = state.get("classifier.0.weight"), state.get("classifier.6.weight")
    if fc6 is None or fc8 is None or fc6.ndim != 2 or fc8.ndim != 2:
        if not any(k.startswith("classifier.") for k in state):
            return HeadShape(channels, None, None, None)
        return HeadShape(channels)
    side = math.isqrt(fc6.shape[1] // arch.out_channels)
    if side * side * arch.out_channels != fc6.shape[1]:
        side = ADAPTIVE_SIDE  # the shape check below names the mismatch
    return HeadShape(channels, int(fc6.shape[0]), int(fc8.shape[0]), side)


def guess_arch(state: Mapping[str, np.ndarray]) -> str | None:
    """The torchvision name (``vgg11`` … ``vgg19_bn``) whose layout the file's features have."""
    for base in ALIASES:
        for name in (base, f"{base}_bn"):
            arch = get_arch(name)
            shapes = expected_shapes(arch, head_shape(state, arch))
            feats = {k: v for k, v in shapes.items() if k.startswith("features.")}
            have = {k: tuple(v.shape) for k, v in state.items() if k.startswith("features.")}
            have = {k: v for k, v in have.items() if not k.endswith("num_batches_tracked")}
            if have == feats:
                return name
    return None


def check_variant(state: Mapping[str, np.ndarray], arch: Arch) -> None:
    """Checks that the file has BatchNorm weights exactly when ``arch`` has BatchNorm.

    Raises:
      CheckpointError: naming the variant the file holds and the ``--arch`` to pass.
    """
    file_bn = any(k.endswith(".running_mean") for k in state)
    if file_bn == arch.batch_norm:
        return
    ours = arch.name or str(arch)
    if arch.name and arch.name.startswith("vgg"):
        theirs = ours.removesuffix("_bn") if arch.batch_norm else f"{ours}_bn"
    else:
        theirs = "the BatchNorm variant" if file_bn else "the variant without BatchNorm"
    if file_bn:
        found = next(k for k in state if k.endswith(".running_mean"))
        raise CheckpointError(
            f"the file holds BatchNorm weights ({found}), i.e. {theirs}, but the arch is {ours} "
            f"(no BatchNorm); pass --arch {theirs}"
        )
    raise CheckpointError(
        f"the file holds weights without BatchNorm, i.e. {theirs}, but the arch is {ours} "
        f"(with BatchNorm); pass --arch {theirs}"
    )


def check_keys_and_shapes(state: Mapping[str, np.ndarray], arch: Arch, head: HeadShape) -> None:
    """Checks that ``state`` has exactly the keys and shapes of :func:`expected_shapes`.

    Raises:
      CheckpointError: naming the first missing or unexpected key, or a key of another
        shape (with both shapes), and the arch the file looks like if it is another.
    """
    expected = expected_shapes(arch, head)
    guess = guess_arch(state)
    hint = f"; the file looks like {guess}: pass --arch {guess}" if guess and guess != arch.name else ""
    name = arch.name or str(arch)
    missing = [k for k in expected if k not in state]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"the file has no {missing[0]}{more}, which {name} needs{hint}")
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise CheckpointError(
            f"unexpected key {unexpected[0]}{more} in the file: {name} has no such layer{hint}"
        )
    for key, shape in expected.items():
        have = tuple(np.shape(state[key]))
        if have != shape:
            raise CheckpointError(
                f"{key}: the file has shape {list(have)} but {name} expects {list(shape)}{hint}"
            )
