"""Receptive fields of a VGG's layers, from the arch alone (pure Python, no JAX).

For layer ``l`` with kernel ``k_l``, dilation ``d_l``, stride ``s_l`` and padding ``p_l``
(all in pixels of its input map), the general recurrence (as in Araujo, Norris & Sim
2019, "Computing receptive fields of convolutional neural networks", Distill, with
the dilated kernel's span ``d_l·(k_l - 1) + 1`` in place of ``k_l``) is::

    r_l     = r_{l-1} + (k_l - 1) · d_l · j_{l-1}                 receptive field (input pixels)
    j_l     = j_{l-1} · s_l                                       jump: input pixels between units
    start_l = start_{l-1} + ((k_l - 1) · d_l / 2 - p_l) · j_{l-1}  centre of unit 0's field

from ``r_0 = 1``, ``j_0 = 1``, ``start_0 = 0`` (the input pixel grid itself, pixel
``i`` centred at coordinate ``i``). Unit ``u`` of layer ``l`` then sees input pixels
``start_l + u·j_l ± (r_l - 1) / 2`` (parts outside the image are zero padding).

With every stride 1 the jump stays 1 and the recurrence collapses to the d2l
chapter's closed form ``r_L = 1 + Σ_l (k_l - 1)``: two 3×3 convs see 5×5 pixels,
three see 7×7. VGG's 2×2 stride-2 pools double the jump, so each later 3×3 conv
adds ``2·j`` pixels: VGG-16's ``pool5`` sees 212×212 pixels. A dilated 3×3 conv adds
``2·d·j``: three dilated 1, 2, 3 see 3, 7 and 13 pixels (undilated: 3, 5, 7). Convs are
padded ``d·(k // 2)``, so with odd kernels they never move the start.

Point-wise layers (BatchNorm, ReLU, LRN: kernel 1, stride 1) leave all three
unchanged. The dense head sees the whole input and is not listed.
"""

from __future__ import annotations

import dataclasses
import json

from vggjax.arch.layout import layers
from vggjax.arch.spec import Arch


@dataclasses.dataclass(frozen=True)
class Field:
    """The receptive field of one layer's units.

    Attributes:
      name: layer name (``conv3_2``, ``relu3_2``, ``pool3`` …; see ``arch.layers``).
      kind: ``"conv"``, ``"bn"``, ``"relu"``, ``"lrn"`` or ``"pool"``.
      kernel: kernel side of this layer (taps per side), in pixels of its input map.
      stride: stride of this layer, in pixels of its input map.
      dilation: pixels between the kernel's taps (1 for all but dilated convs).
      receptive_field: side of the square of input pixels one unit sees, ``r``.
      jump: input pixels between neighbouring units, ``j`` (the product of strides).
      start: input-pixel coordinate of the centre of unit 0's field (pixel ``i`` is
        centred at ``i``; ``x.5`` means between two pixels).
    """

    name: str
    kind: str
    kernel: int
    stride: int
    dilation: int
    receptive_field: int
    jump: int
    start: float

    def span(self, unit: int) -> tuple[float, float]:
        """First and last input-pixel coordinate seen by unit ``unit`` (0-based), inclusive.

        Either end may fall outside the image, where the network sees zero padding.
        """
        centre = self.start + unit * self.jump
        half = (self.receptive_field - 1) / 2
        return centre - half, centre + half


def receptive_fields(arch: Arch, *, pointwise: bool = False) -> list[Field]:
    """Kernel, stride, dilation, receptive field, jump and start of each layer, input to output.

    Args:
      arch: the architecture (the width multiplier does not change any field).
      pointwise: also list BatchNorm, ReLU and LRN layers (kernel 1, stride 1), which
        repeat the numbers of the layer before them.

    Returns:
      One :class:`Field` per conv and pool layer (and point-wise layer if asked), in
      the order of ``arch.layers(arch)``; ``receptive_field`` never decreases.
    """
    r, j, start = 1, 1, 0.0
    out = []
    for layer in layers(arch):
        span = (layer.kernel - 1) * layer.dilation  # the outer taps' distance, in the layer's input pixels
        r += span * j
        start += (span / 2 - layer.padding) * j
        j *= layer.stride
        if pointwise or layer.kind in ("conv", "pool"):
            out.append(Field(layer.name, layer.kind, layer.kernel, layer.stride, layer.dilation, r, j, start))
    return out


def to_json(fields: list[Field]) -> str:
    """The fields as JSON: ``{"layers": [{…}, …]}``, one object per :class:`Field` with its attribute names.

    ``{"name", "kind", "kernel", "stride", "dilation", "receptive_field", "jump", "start"}``.
    """
    return json.dumps({"layers": [dataclasses.asdict(f) for f in fields]}, indent=2)


def format_table(fields: list[Field]) -> str:
    """A fixed-width text table, as ``vggjax receptive-field`` prints it."""
    head = f"{'layer':<10}{'kind':<6}{'kernel':>7}{'stride':>7}{'dilation':>9}"
    head += f"{'field':>7}{'jump':>6}{'start':>7}"
    lines = [head, "-" * len(head)]
    for f in fields:
        numbers = f"{f.kernel:>7}{f.stride:>7}{f.dilation:>9}{f.receptive_field:>7}{f.jump:>6}{f.start:>7g}"
        lines.append(f"{f.name:<10}{f.kind:<6}{numbers}")
    return "\n".join(lines)
