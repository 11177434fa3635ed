"""VGG architectures as data: specs, the paper's named configurations, parsing, width.

A VGG is a sequence of blocks. The plain form of a block is the d2l chapter's
``(num_convs, out_channels)`` pair: ``num_convs`` 3×3 convolutions (padding 1, each
followed by ReLU) and then a 2×2 max-pool with stride 2. The extended form
``(num_convs, out_channels, kernels)`` gives the kernel size of each conv, either one
odd int for all of them or a tuple with one odd int per conv; padding is always
``kernel // 2`` so convolutions keep the spatial size. Configuration C of the VGG
paper needs it: its blocks 3–5 end in a 1×1 conv, written ``(3, 256, (3, 3, 1))``.

Both forms print and parse as Python literals, e.g. on the command line::

    --arch "((1,16),(1,32),(2,64),(2,128),(2,128))"
    --arch "((1,64),(1,128),(3,256,(3,3,1)),(3,512,(3,3,1)),(3,512,(3,3,1)))"

This module knows nothing of JAX; models, summaries and receptive fields derive from
the specs defined here.
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import math
import re
from collections.abc import Sequence

from vggjax.errors import ArchError


@dataclasses.dataclass(frozen=True)
class Block:
    """One VGG block: convs at one channel count, then a 2×2 stride-2 max-pool.

    Attributes:
      channels: output channels of every conv in the block.
      kernels: kernel size (pixels, square, odd) of each conv; its length is the
        number of convs.
    """

    channels: int
    kernels: tuple[int, ...]

    @property
    def num_convs(self) -> int:
        """Number of convolutions in the block."""
        return len(self.kernels)

    def to_tuple(self) -> tuple:
        """The block as a literal: ``(n, c)`` when all kernels are 3, else ``(n, c, k)``."""
        if all(k == 3 for k in self.kernels):
            return (self.num_convs, self.channels)
        if len(set(self.kernels)) == 1:
            return (self.num_convs, self.channels, self.kernels[0])
        return (self.num_convs, self.channels, self.kernels)


@dataclasses.dataclass(frozen=True)
class Arch:
    """A whole VGG feature extractor: blocks plus the per-conv options of a variant.

    Attributes:
      blocks: the blocks, input to output.
      batch_norm: BatchNorm between each conv and its ReLU (torchvision's ``vgg*_bn``).
      lrn: local response normalisation after the first conv (the paper's A-LRN).
      name: the named configuration this came from, if any (e.g. ``"vgg11_bn"``).
    """

    blocks: tuple[Block, ...]
    batch_norm: bool = False
    lrn: bool = False
    name: str | None = None

    def to_tuple(self) -> tuple:
        """The blocks as the literal the d2l chapter writes, e.g. ``((1, 64), (1, 128))``."""
        return tuple(b.to_tuple() for b in self.blocks)

    def __str__(self) -> str:
        return str(self.to_tuple()).replace(" ", "")

    @property
    def min_input_size(self) -> int:
        """Smallest input side (pixels) for which no pool sees an empty map: 2**len(blocks)."""
        return 2 ** len(self.blocks)

    @property
    def out_channels(self) -> int:
        """Channels of the last feature map."""
        return self.blocks[-1].channels


def names() -> list[str]:
    """All accepted architecture names, e.g. ``A``, ``A-LRN``, ``vgg16``, ``vgg16_bn``."""
    out = [*PAPER_CONFIGS, "A-LRN"]
    for alias in ALIASES:
        out += [alias, f"{alias}_bn"]
    return out


def blocks_from_tuple(spec: Sequence) -> list[Block]:
    """Validates a literal arch (plain or extended form) and returns its blocks.

    Args:
      spec: a sequence of ``(num_convs, channels)`` or ``(num_convs, channels, kernels)``.

    Raises:
      ArchError: if the spec is empty or a block has a wrong length, a non-integer,
        zero or negative count, or an even or non-positive kernel size.
    """
    if not isinstance(spec, Sequence) or isinstance(spec, str) or not spec:
        raise ArchError(f"arch must be a non-empty tuple of (num_convs, channels) pairs, got {spec!r}")
    blocks = []
    for i, item in enumerate(spec, 1):
        where = f"block {i} {item!r}"
        if not isinstance(item, Sequence) or isinstance(item, str) or len(item) not in (2, 3):
            raise ArchError(f"{where}: expected (num_convs, channels) or (num_convs, channels, kernels)")
        num_convs, channels = item[0], item[1]
        for label, value in (("num_convs", num_convs), ("channels", channels)):
            if not _is_int(value) or value < 1:
                raise ArchError(f"{where}: {label} must be a positive integer, got {value!r}")
        kernels = item[2] if len(item) == 3 else 3
        if _is_int(kernels):
            kernels = (kernels,) * num_convs
        if not isinstance(kernels, Sequence) or len(kernels) != num_convs:
            raise ArchError(f"{where}: kernels must be an int or a tuple of {num_convs} ints")
        for k in kernels:
            if not _is_int(k) or k < 1 or k % 2 == 0:
                raise ArchError(f"{where}: kernel sizes must be odd positive integers, got {k!r}")
        blocks.append(Block(channels=channels, kernels=tuple(kernels)))
    return blocks


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _plain(*pairs: tuple) -> tuple[Block, ...]:
    return tuple(blocks_from_tuple(pairs))


# The VGG paper (Simonyan & Zisserman 2014), Table 1: ConvNet configurations A–E.
PAPER_CONFIGS: dict[str, tuple[Block, ...]] = {
    "A": _plain((1, 64), (1, 128), (2, 256), (2, 512), (2, 512)),
    "B": _plain((2, 64), (2, 128), (2, 256), (2, 512), (2, 512)),
    "C": _plain((2, 64), (2, 128), (3, 256, (3, 3, 1)), (3, 512, (3, 3, 1)), (3, 512, (3, 3, 1))),
    "D": _plain((2, 64), (2, 128), (3, 256), (3, 512), (3, 512)),
    "E": _plain((2, 64), (2, 128), (4, 256), (4, 512), (4, 512)),
}
# torchvision's names for the paper's configurations.
ALIASES: dict[str, str] = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}
# The d2l chapter's thin VGG-11 for Fashion-MNIST: vgg11 at width 0.25.
D2L_THIN = ((1, 16), (1, 32), (2, 64), (2, 128), (2, 128))


def scale_width(blocks: Sequence[Block], width: float) -> tuple[Block, ...]:
    """Multiplies every block's channels by ``width`` (rounded, at least 1).

    ``scale_width(vgg11, 0.25)`` is the d2l chapter's thin VGG-11 (16/32/64/128/128).

    Raises:
      ArchError: if ``width`` is not a finite positive number.
    """
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ArchError(f"width multiplier must be > 0, got {width!r}; 1.0 keeps the paper's channels")
    if math.isinf(width):  # int(inf) below would raise OverflowError
        raise ArchError(f"width multiplier must be finite, got {width!r}; 1.0 keeps the paper's channels")
    return tuple(dataclasses.replace(b, channels=max(1, int(b.channels * width + 0.5))) for b in blocks)


def get_arch(spec: str | Sequence | Arch, *, width: float = 1.0, batch_norm: bool | None = None) -> Arch:
    """Resolves a name, a literal string or a tuple into an :class:`Arch`.

    Args:
      spec: a name (``vgg11``…``vgg19``, ``vgg11_bn``…``vgg19_bn``, ``A``…``E``,
        ``A-LRN``; case-insensitive), a literal string such as
        ``"((1,16),(1,32),(2,64),(2,128),(2,128))"``, a tuple in that form, or an Arch.
      width: width multiplier applied to every block's channels.
      batch_norm: force BatchNorm on or off; None keeps what the name says.

    Raises:
      ArchError: for an unknown name, a string that is not a valid literal, or an
        invalid spec (see :func:`blocks_from_tuple`), or a width <= 0.
    """
    if isinstance(spec, Arch):
        arch = spec
    elif isinstance(spec, str) and spec.strip()[:1] in "([":
        arch = Arch(tuple(blocks_from_tuple(_literal(spec))))
    elif isinstance(spec, str):
        arch = _named(spec.strip())
    else:
        arch = Arch(tuple(blocks_from_tuple(spec)))
    blocks = scale_width(arch.blocks, width) if width != 1.0 else arch.blocks
    bn = arch.batch_norm if batch_norm is None else batch_norm
    return dataclasses.replace(arch, blocks=blocks, batch_norm=bn)


def _literal(text: str) -> object:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
        raise ArchError(
            f"cannot parse arch {text!r} ({type(e).__name__}); write it like "
            '"((1,16),(1,32),(2,64),(2,128),(2,128))" or use a name such as vgg11'
        ) from None


def _named(name: str) -> Arch:
    key = name.lower()
    bn = key.endswith("_bn")
    base = key.removesuffix("_bn")
    if base in ALIASES:
        return Arch(PAPER_CONFIGS[ALIASES[base]], batch_norm=bn, name=key)
    if not bn and name.upper() in PAPER_CONFIGS:
        return Arch(PAPER_CONFIGS[name.upper()], name=name.upper())
    if not bn and name.upper() == "A-LRN":
        return Arch(PAPER_CONFIGS["A"], lrn=True, name="A-LRN")
    raise ArchError(
        f"unknown arch {name!r}; use one of {', '.join(names())} "
        'or a literal such as "((1,16),(1,32),(2,64),(2,128),(2,128))"'
    )


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
      padding: zero padding on each side in pixels.
      channels: output channels; for ``dense`` layers, output features.
      torchvision: the module's name in torchvision's VGG: ``features.N`` (N counts every
        conv, BatchNorm, ReLU and pool), ``avgpool``, ``classifier.N`` (``classifier.0/3/6``
        are fc6/fc7/fc8); None where torchvision has no module (LRN, flatten, global pooling).
    """

    kind: str
    name: str
    block: int
    kernel: int
    stride: int
    padding: int
    channels: int
    torchvision: str | None = None

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
    rows: list[tuple[str, str, int, int, int, int]] = []  # kind, name, block, kernel, stride, padding
    for i, k in enumerate(block.kernels, 1):
        rows.append(("conv", f"conv{b}_{i}", b, k, 1, k // 2))
        if batch_norm:
            rows.append(("bn", f"bn{b}_{i}", b, 1, 1, 0))
        rows.append(("relu", f"relu{b}_{i}", b, 1, 1, 0))
        if lrn and i == 1:
            rows.append(("lrn", "lrn", b, 1, 1, 0))
    rows.append(("pool", f"pool{b}", b, 2, 2, 0))
    index = itertools.count(start)  # torchvision has no LRN module: LRN takes no index
    return [
        Layer(*row, block.channels, None if row[0] == "lrn" else f"features.{next(index)}") for row in rows
    ]


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
      ArchError: for an unknown head or pooling.
    """
    c = arch.out_channels
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
