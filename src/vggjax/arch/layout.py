"""A VGG's layers in order, from its :class:`~vggjax.arch.spec.Arch`: the one layer list.

The model (:mod:`vggjax.nn.vgg`), the summary, the receptive fields and torchvision
weight import all walk the list built here: per block conv [→ bn] → relu [→ lrn] …
→ pool, then the head (``avgpool``, ``flatten``, ``fc6`` → ``relu6`` → ``dropout6`` →
``fc7`` → ``relu7`` → ``dropout7`` → ``fc8``). Each layer carries its VGG name, its
parameter path and its module name in torchvision's VGG. Pure Python, no JAX.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import warnings

from vggjax.arch.spec import Arch, Block
from vggjax.errors import ArchError, VggjaxWarning

# torchvision's AdaptiveAvgPool2d((7, 7)): the side of the map the adaptive head flattens.
ADAPTIVE_SIDE = 7


@dataclasses.dataclass(frozen=True)
class Layer:
    """One layer of a VGG, as the model, the summary, receptive fields and weight import see it.

    Attributes:
      kind: in the feature extractor ``"conv"``, ``"bn"``, ``"relu"``, ``"lrn"`` or
        ``"pool"``; in the head ``"avgpool"``, ``"flatten"``, ``"dense"``, ``"relu"``,
        ``"dropout"``, or ``"globalpool"`` for a headless model's global pooling.
      name: the VGG name: ``conv{b}_{i}``, ``bn{b}_{i}``, ``relu{b}_{i}``, ``lrn``,
        ``pool{b}`` (b = block, i = conv in the block, both from 1); then ``avgpool``,
        ``flatten``, ``fc6``, ``relu6``, ``dropout6``, ``fc7``, ``relu7``, ``dropout7``,
        ``fc8``, or ``global_avgpool`` / ``global_maxpool``.
      block: the block number, from 1; 0 for the head's layers.
      kernel: kernel side in pixels (1 for point-wise layers; 0 in the head, which sees
        the whole map).
      stride: stride in pixels (0 in the head).
      padding: zero padding on each side in pixels: ``dilation · (kernel // 2)`` for a conv.
      channels: output channels; for ``dense`` layers, output features.
      torchvision: the module's name in torchvision's VGG: ``features.N`` (N counts every
        conv, BatchNorm, ReLU and pool), ``avgpool``, ``classifier.N`` (``classifier.0/3/6``
        are fc6/fc7/fc8); None where torchvision has no module (LRN, flatten, global pooling).
      dilation: pixels between a conv's kernel taps (its ``kernel_dilation``; torch's
        ``Conv2d(dilation=…)``); 1 for every other layer. The conv then spans
        ``dilation · (kernel - 1) + 1`` pixels with a kernel of ``kernel × kernel`` weights.
    """

    kind: str
    name: str
    block: int
    kernel: int
    stride: int
    padding: int
    channels: int
    torchvision: str | None = None
    dilation: int = 1

    @property
    def path(self) -> tuple[str, ...]:
        """The parameter path of a weighted layer, ``("block3", "conv2")`` or ``("fc6",)``; else ``()``."""
        if self.kind in ("conv", "bn"):
            return (f"block{self.block}", f"{self.kind}{self.name.rpartition('_')[2]}")
        return (self.name,) if self.kind == "dense" else ()


def block_layers(
    block: Block, number: int, *, batch_norm: bool = False, lrn: bool = False, start: int = 0
) -> list[Layer]:
    """The layers of block ``number`` (from 1): conv, [bn], relu, [lrn] per conv, then the pool.

    Args:
      block: the block.
      number: its number ``b`` in the names ``conv{b}_{i}`` ….
      batch_norm: a BatchNorm between each conv and its ReLU.
      lrn: local response normalisation after the first conv's ReLU.
      start: torchvision's ``features`` index of the block's first conv.

    Returns:
      ``list[Layer]``, input to output.
    """
    b = number
    rows: list[tuple[str, str, int, int, int]] = []  # kind, name, kernel, padding, dilation
    for i, (k, d) in enumerate(zip(block.kernels, block.dilations, strict=True), 1):
        rows.append(("conv", f"conv{b}_{i}", k, d * (k // 2), d))
        if batch_norm:
            rows.append(("bn", f"bn{b}_{i}", 1, 0, 1))
        rows.append(("relu", f"relu{b}_{i}", 1, 0, 1))
        if lrn and i == 1:
            rows.append(("lrn", "lrn", 1, 0, 1))
    index = itertools.count(start)  # torchvision has no LRN module: LRN takes no index
    out = [
        Layer(kind, name, b, k, 1, p, block.channels, None if kind == "lrn" else f"features.{next(index)}", d)
        for kind, name, k, p, d in rows
    ]
    return [*out, Layer("pool", f"pool{b}", b, 2, 2, 0, block.channels, f"features.{next(index)}")]


def head_layers(
    arch: Arch, *, head: str | None, pooling: str | None = None, hidden: int = 4096, num_classes: int = 1000
) -> list[Layer]:
    """The layers after the last pool, named as in the VGG authors' Caffe models.

    Args:
      arch: the architecture (its last block's channels).
      head: ``"flatten"`` (the d2l chapter's: flatten the last map), ``"adaptive"``
        (torchvision's: average-pool it to ``ADAPTIVE_SIDE`` × ``ADAPTIVE_SIDE`` first),
        then ``fc6`` → ReLU → dropout → ``fc7`` → ReLU → dropout → ``fc8``; or None.
      pooling: with ``head=None``: ``"avg"`` or ``"max"`` global pooling, or None for none.
      hidden: width of fc6 and fc7.
      num_classes: outputs of fc8.

    Returns:
      ``list[Layer]``: empty for a headless model without pooling.

    Raises:
      ArchError: for an unknown head or pooling, or a pooling with a head (which has none).
    """
    c = arch.out_channels
    if head is not None and pooling is not None:
        raise ArchError(
            f"pooling {pooling!r} (--pooling) is a headless model's global pooling, and the {head!r} head "
            "has none; choose --head none (head=None) to pool, or drop --pooling"
        )
    if head is None:
        if pooling not in (None, "avg", "max"):
            raise ArchError(f"unknown pooling {pooling!r}; use 'avg', 'max' or None")
        return [] if pooling is None else [Layer("globalpool", f"global_{pooling}pool", 0, 0, 0, 0, c)]
    if head not in ("flatten", "adaptive"):
        raise ArchError(f"unknown head {head!r}; use 'flatten', 'adaptive' or None")
    out = [Layer("avgpool", "avgpool", 0, 0, 0, 0, c, "avgpool")] if head == "adaptive" else []
    out.append(Layer("flatten", "flatten", 0, 0, 0, 0, c))
    dense = ((6, hidden), (7, hidden), (8, num_classes))
    for j, (n, width) in enumerate(dense):
        kinds = ("dense",) if n == 8 else ("dense", "relu", "dropout")
        for k, kind in enumerate(kinds):
            name = f"fc{n}" if kind == "dense" else f"{kind}{n}"
            out.append(Layer(kind, name, 0, 0, 0, 0, width, f"classifier.{3 * j + k}"))
    return out


def layers(
    arch: Arch,
    *,
    head: str | None = None,
    pooling: str | None = None,
    hidden: int = 4096,
    num_classes: int = 1000,
) -> list[Layer]:
    """A VGG's layers in order: :func:`block_layers` of each block, then :func:`head_layers`.

    With the default ``head=None`` (and no pooling), the feature extractor alone.

    Raises:
      ArchError: for an unknown head or pooling.
    """
    out: list[Layer] = []
    for b, block in enumerate(arch.blocks, 1):
        start = sum(layer.torchvision is not None for layer in out)
        out += block_layers(block, b, batch_norm=arch.batch_norm, lrn=arch.lrn and b == 1, start=start)
    return out + head_layers(arch, head=head, pooling=pooling, hidden=hidden, num_classes=num_classes)


class AdaptiveUpsamplingWarning(VggjaxWarning):
    """The adaptive head's pool enlarges a last map smaller than ``ADAPTIVE_SIDE`` on a side."""


def adaptive_upsampling(arch: Arch, input_size: int | tuple[int, int]) -> str | None:
    """What the adaptive head's pool does to a last map under 7×7; None if it shrinks or keeps it.

    On an ``h × w`` last map with a side below ``ADAPTIVE_SIDE`` the pool makes a 7×7 map
    of copies and averages of its values, and fc6 takes ``7·7·C`` inputs where ``h·w·C``
    carry everything; ``head="flatten"`` is the head for inputs that small.

    Args:
      arch: the architecture.
      input_size: the input side in pixels, or ``(H, W)``.
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    h, w = h >> len(arch.blocks), w >> len(arch.blocks)  # each 2x2 pool floors
    if min(h, w) >= ADAPTIVE_SIDE:
        return None
    side, c = ADAPTIVE_SIDE, arch.out_channels
    made = f"{side * side} copies of each value" if h * w == 1 else f"{side * side} values from {h * w}"
    return (
        f"the adaptive pool enlarges pool{len(arch.blocks)}'s {h}x{w} map to {side}x{side} ({made}; "
        f"fc6 takes {side * side * c:,} inputs where {h * w * c:,} would do); "
        "use --head flatten for inputs this small"
    )


def warn_if_upsampling(arch: Arch, input_size: int | tuple[int, int], head: str | None) -> None:
    """Warns (:class:`AdaptiveUpsamplingWarning`) when ``head`` is ``"adaptive"`` and its pool
    enlarges the last map (see :func:`adaptive_upsampling`)."""
    message = adaptive_upsampling(arch, input_size) if head == "adaptive" else None
    if message:
        warnings.warn(message, AdaptiveUpsamplingWarning, stacklevel=2)


# Head layers that are steps inside a stage, not features: no tap returns them.
_NOT_TAPPED = ("avgpool", "flatten", "dropout", "globalpool")


def feature_names(arch: Arch, *, head: bool = True) -> list[str]:
    """Every layer name a feature tap can ask for, input to output.

    ``conv{b}_{i}``, [``bn{b}_{i}``], ``relu{b}_{i}``, [``lrn``], …, ``pool{b}`` per
    block (see :func:`layers`), then with a head ``fc6``, ``relu6``, ``fc7``,
    ``relu7``, ``fc8`` (dropout is the identity in evaluation, so it has no tap).
    """
    every = layers(arch, head="flatten" if head else None)
    return [layer.name for layer in every if layer.kind not in _NOT_TAPPED]


_NAME = re.compile(r"^(conv|relu|bn)(\d+)_(\d+)$|^pool(\d+)$|^fc[678]$|^relu[67]$|^lrn$")


def is_layer_name(name: str) -> bool:
    """Whether ``name`` has the form of a VGG layer name (``conv3_2``, ``pool4``, ``fc7``)."""
    return bool(_NAME.match(name))
