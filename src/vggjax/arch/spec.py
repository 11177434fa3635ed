"""VGG architectures as data: blocks, their literal forms and parsing, width.

A VGG is a sequence of blocks. The plain form of a block is the d2l chapter's
``(num_convs, out_channels)`` pair: ``num_convs`` 3×3 convolutions (padding 1, each
followed by ReLU) and then a 2×2 max-pool with stride 2. The extended forms

* ``(num_convs, out_channels, kernels)`` give the kernel size of each conv, either one
  odd int for all of them or a tuple with one odd int per conv. Configuration C of the
  VGG paper needs it: its blocks 3–5 end in a 1×1 conv, written ``(3, 256, (3, 3, 1))``.
* ``(num_convs, out_channels, kernels, dilations)`` also give the dilation of each conv
  (``kernel_dilation``: taps ``d`` pixels apart), one positive int or one per conv;
  default 1. ``(3, 64, 3, (1, 2, 3))``: three 3×3 convs that see 3, 7 and 13 pixels.

Padding is always ``dilation · (kernel // 2)``, so convs keep the spatial size (and
dilation changes no shape). Every form prints and parses as a Python literal::

    --arch "((1,16),(1,32),(2,64),(2,128),(2,128))"
    --arch "((1,64),(1,128),(3,256,(3,3,1)),(3,512,(3,3,1)),(3,512,(3,3,1)))"
    --arch "((2,16),(2,32),(3,64,3,(1,2,3)))"

A block prints in the shortest of these forms that parses back to it. Literal archs
and widths are bounded far beyond any VGG in use (:mod:`vggjax.arch.bounds`), so that a
mistyped number is refused in one line instead of exhausting memory.

This module knows nothing of JAX; models, summaries and receptive fields derive from
the specs defined here (through the layer list of :mod:`vggjax.arch.layout`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from vggjax.arch.bounds import LIMITS, MAX_CHANNELS, MAX_CONVS, check_bound
from vggjax.errors import ArchError, shorten


@dataclasses.dataclass(frozen=True)
class Block:
    """One VGG block: convs at one channel count, then a 2×2 stride-2 max-pool.

    Attributes:
      channels: output channels of every conv in the block.
      kernels: kernel size (pixels, square, odd) of each conv; its length is the
        number of convs.
      dilations: dilation of each conv (pixels between kernel taps; 1 is a plain conv),
        as many as ``kernels``; ``()`` (the default) means 1 for every conv.

    Raises:
      ArchError: if ``dilations`` is neither empty nor as long as ``kernels``.
    """

    channels: int
    kernels: tuple[int, ...]
    dilations: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        dilations = tuple(self.dilations) or (1,) * len(self.kernels)
        if len(dilations) != len(self.kernels):
            n = len(self.kernels)
            raise ArchError(f"a block of {n} convs needs {n} dilations, got {dilations}")
        object.__setattr__(self, "kernels", tuple(self.kernels))
        object.__setattr__(self, "dilations", dilations)

    @property
    def num_convs(self) -> int:
        """Number of convolutions in the block."""
        return len(self.kernels)

    def to_tuple(self) -> tuple:
        """The block as the shortest literal that parses back to it.

        ``(n, c)`` when every kernel is 3 and nothing is dilated, ``(n, c, k)`` when
        nothing is dilated, else ``(n, c, k, d)``; ``k`` and ``d`` are one int when all
        convs share it, else a tuple with one per conv.
        """
        n, c = self.num_convs, self.channels
        if any(d != 1 for d in self.dilations):
            return (n, c, _shortest(self.kernels), _shortest(self.dilations))
        if all(k == 3 for k in self.kernels):
            return (n, c)
        return (n, c, _shortest(self.kernels))


def _shortest(values: tuple[int, ...]) -> int | tuple[int, ...]:
    return values[0] if len(set(values)) == 1 else values


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

    def check_input(self, shape: Sequence[int]) -> None:
        """Checks an NHWC input shape ``[N, H, W, C]`` against the arch's five (or more) pools.

        Raises:
          ArchError: if the input is not 4-D or a side is below :attr:`min_input_size`,
            naming the pool that would see an empty map.
        """
        if len(shape) != 4:
            raise ArchError(f"expected an NHWC batch [N, H, W, C], got shape {tuple(shape)}")
        side, size = min(shape[1], shape[2]), self.min_input_size
        if side < size:
            pool = next(b for b in range(1, len(self.blocks) + 1) if side >> b == 0)
            raise ArchError(
                f"input {shape[1]}x{shape[2]} is too small for {len(self.blocks)} 2x2 max-pools: "
                f"pool{pool} would get an empty map; use an input of at least "
                f"{size}x{size} pixels (e.g. --image-size {size})"
            )

    @property
    def out_channels(self) -> int:
        """Channels of the last feature map."""
        return self.blocks[-1].channels


def blocks_from_tuple(spec: Sequence) -> list[Block]:
    """Validates a literal arch (plain or extended form) and returns its blocks.

    Args:
      spec: a sequence of ``(num_convs, channels)``, ``(num_convs, channels, kernels)``
        or ``(num_convs, channels, kernels, dilations)``.

    Raises:
      ArchError: if the spec is empty or a block has a wrong length, a non-integer,
        zero or negative count, an even or non-positive kernel size, a non-positive
        dilation, a kernels or dilations tuple of the wrong length, or a number over
        its bound in :mod:`vggjax.arch.bounds`.
    """
    if not isinstance(spec, Sequence) or isinstance(spec, str) or not spec:
        got = shorten(repr(spec))
        raise ArchError(f"arch must be a non-empty tuple of (num_convs, channels) pairs, got {got}")
    blocks, total = [], 0
    for i, item in enumerate(spec, 1):
        blocks.append(_block(item, f"block {i} {shorten(repr(item))}"))
        total += blocks[-1].num_convs
        if total > MAX_CONVS:  # checked as it grows: a long literal stops at the first block over
            check_bound("convs in all", total, f"arch blocks 1-{i}")
    return blocks


def _block(item: object, where: str) -> Block:
    """One block of a literal arch; ``where`` names it in errors (``block 2 (1, 32)``)."""
    if not isinstance(item, Sequence) or isinstance(item, str) or len(item) not in (2, 3, 4):
        raise ArchError(
            f"{where}: expected (num_convs, channels), (num_convs, channels, kernels) "
            "or (num_convs, channels, kernels, dilations)"
        )
    num_convs, channels = item[0], item[1]
    for label, value in (("num_convs", num_convs), ("channels", channels)):
        if not _is_int(value) or value < 1:
            raise ArchError(f"{where}: {label} must be a positive integer, got {shorten(repr(value))}")
    check_bound("num_convs", num_convs, where)  # before (3,) * num_convs is built
    check_bound("channels", channels, where)
    kernels = _per_conv(item[2] if len(item) > 2 else 3, num_convs, where, "kernels")
    for k in kernels:
        if not _is_int(k) or k < 1 or k % 2 == 0:
            raise ArchError(f"{where}: kernel sizes must be odd positive integers, got {shorten(repr(k))}")
        check_bound("kernel size", k, where)
    dilations = _per_conv(item[3] if len(item) > 3 else 1, num_convs, where, "dilations")
    for d in dilations:
        if not _is_int(d) or d < 1:
            got = shorten(repr(d))
            raise ArchError(f"{where}: dilations must be positive integers (1: no dilation), got {got}")
        check_bound("dilation", d, where)
    return Block(channels=channels, kernels=kernels, dilations=dilations)


def _per_conv(value: object, num_convs: int, where: str, label: str) -> tuple:
    """``value`` for each of ``num_convs`` convs: one int repeated, or a tuple of that length."""
    if _is_int(value):
        return (value,) * num_convs
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != num_convs:
        got = shorten(repr(value))
        raise ArchError(f"{where}: {label} must be an int or a tuple of {num_convs} ints, got {got}")
    return tuple(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def scale_width(blocks: Sequence[Block], width: float) -> tuple[Block, ...]:
    """Multiplies every block's channels by ``width`` (rounded, at least 1).

    ``scale_width(vgg11, 0.25)`` is the d2l chapter's thin VGG-11 (16/32/64/128/128).

    Raises:
      ArchError: if ``width`` is not a finite positive number, or if it takes a block
        over :data:`MAX_CHANNELS` channels (the message gives the largest width that fits).
    """
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ArchError(f"width multiplier must be > 0, got {width!r}; 1.0 keeps the paper's channels")
    if math.isinf(width):  # int(inf) below would raise OverflowError
        raise ArchError(f"width multiplier must be finite, got {width!r}; 1.0 keeps the paper's channels")
    out = tuple(dataclasses.replace(b, channels=max(1, int(b.channels * width + 0.5))) for b in blocks)
    widest = max(range(len(out)), key=lambda i: out[i].channels, default=None)
    if widest is not None and out[widest].channels > MAX_CHANNELS:
        fits = math.floor(MAX_CHANNELS / blocks[widest].channels * 1000) / 1000
        raise ArchError(
            f"width multiplier {width:g} gives block {widest + 1} {out[widest].channels:,} channels, "
            f"over the limit of {MAX_CHANNELS:,} ({LIMITS['channels'][1]}); use a width of at most {fits:g}"
        )
    return out
