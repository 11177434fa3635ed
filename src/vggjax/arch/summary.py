"""Per-layer summary of a VGG: output shape, parameters and multiply-accumulates.

Computed from the :class:`~vggjax.arch.Arch` alone, in closed form (pure Python, no
JAX): a conv with kernel k, ``C_in`` → ``C_out`` channels on an ``H × W`` output map
has ``k·k·C_in·C_out + C_out`` parameters and ``H·W·k·k·C_in·C_out`` MACs per image;
a dense layer ``I → O`` has ``I·O + O`` parameters and ``I·O`` MACs; BatchNorm has
``2·C`` parameters (scale, bias; the running statistics are not parameters). Pools,
ReLU, LRN and dropout count no MACs. Names follow the VGG paper: ``block1`` …,
``conv1_1`` …, ``pool1`` …, ``fc6``, ``fc7``, ``fc8``. Dilation changes none of these
(a dilated conv has the same weights, and its padding ``d·(k // 2)`` keeps the map's
size); the rows of dilated convs and their blocks say their dilation.
"""

from __future__ import annotations

import dataclasses
import json

from vggjax.arch.layout import ADAPTIVE_SIDE, layers
from vggjax.arch.spec import Arch
from vggjax.errors import ArchError, check_positive_int


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of a summary.

    Attributes:
      name: layer name (``block3``, ``conv3_2``, ``fc6``, ``relu6`` …).
      kind: ``block``, ``conv``, ``bn``, ``relu``, ``lrn``, ``pool``, ``avgpool``,
        ``flatten``, ``dense``, ``dropout`` or ``globalpool``.
      output_shape: NHWC or (N, features) output shape, N = ``batch``.
      params: trainable parameters of this layer.
      macs: multiply-accumulates per batch.
      dilations: the dilation of each conv the row covers: one for a ``conv`` row, one
        per conv for a ``block`` row, none for other rows.
    """

    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    macs: int
    dilations: tuple[int, ...] = ()

    @property
    def label(self) -> str:
        """The name, and the dilation when a conv is dilated: ``conv1_2 d2``, ``block1 d1,2,3``."""
        if all(d == 1 for d in self.dilations):
            return self.name
        return f"{self.name} d{','.join(map(str, self.dilations))}"


def summarize(
    arch: Arch,
    *,
    input_size: int | tuple[int, int] = 224,
    channels: int = 3,
    num_classes: int = 1000,
    head: str | None = "flatten",
    pooling: str | None = None,
    hidden: int = 4096,
    batch: int = 1,
    detail: bool = False,
) -> list[Row]:
    """The summary rows of a VGG, input to output.

    Args:
      arch: the architecture.
      input_size: input side in pixels, or ``(H, W)``.
      channels: input channels (1 for Fashion-MNIST, 3 for ImageNet).
      num_classes: outputs of ``fc8``.
      head: ``"flatten"``, ``"adaptive"`` or ``None`` (see :func:`vggjax.arch.head_layers`).
      pooling: with ``head=None``: ``"avg"``, ``"max"`` or ``None``.
      hidden: width of ``fc6`` and ``fc7``.
      batch: the leading dimension of every output shape, and the MAC multiplier.
      detail: one row per conv, BatchNorm, ReLU, LRN and pool instead of one per block.

    Raises:
      ArchError: if the input is smaller than the arch's minimum size, or for an unknown
        head or pooling.
      ConfigError: if ``channels``, ``num_classes``, ``hidden`` or ``batch`` is not a positive integer.
    """
    for flag, value in (
        ("--channels", channels),
        ("--num-classes", num_classes),
        ("--hidden", hidden),
        ("--batch", batch),
    ):
        check_positive_int(value, flag)
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    if min(h, w) < arch.min_input_size:
        raise ArchError(
            f"input {h}x{w} is too small for {len(arch.blocks)} 2x2 max-pools; "
            f"use at least {arch.min_input_size}x{arch.min_input_size}"
        )
    rows: list[Row] = []
    c, features = channels, 0  # features: the width of the flattened map and the dense layers
    block_params = block_macs = 0
    block_dilations: tuple[int, ...] = ()
    every = layers(arch, head=head, pooling=pooling, hidden=hidden, num_classes=num_classes)
    for layer in every:
        params = macs = 0
        if layer.kind == "conv":
            params = layer.kernel**2 * c * layer.channels + layer.channels
            macs = batch * h * w * layer.kernel**2 * c * layer.channels
            c = layer.channels
            block_dilations += (layer.dilation,)
        elif layer.kind == "bn":
            params = 2 * c
        elif layer.kind == "pool":
            h, w = h // 2, w // 2
        elif layer.kind == "avgpool":
            h = w = ADAPTIVE_SIDE
        elif layer.kind == "flatten":
            features = h * w * c
        elif layer.kind == "dense":
            params, macs = features * layer.channels + layer.channels, batch * features * layer.channels
            features = layer.channels
        if layer.block == 0:  # the head: one row per layer
            shape = {"avgpool": (batch, h, w, c), "globalpool": (batch, c)}.get(layer.kind, (batch, features))
            rows.append(Row(layer.name, layer.kind, shape, params, macs))
            continue
        block_params += params
        block_macs += macs
        if detail:
            dilation = (layer.dilation,) if layer.kind == "conv" else ()
            rows.append(Row(layer.name, layer.kind, (batch, h, w, c), params, macs, dilation))
        elif layer.kind == "pool":
            shape = (batch, h, w, c)
            rows.append(Row(f"block{layer.block}", "block", shape, block_params, block_macs, block_dilations))
        if layer.kind == "pool":
            block_params = block_macs = 0
            block_dilations = ()
    return rows


def totals(rows: list[Row]) -> dict[str, int]:
    """``{"total_params": …, "total_macs": …}`` over ``rows``."""
    return {"total_params": sum(r.params for r in rows), "total_macs": sum(r.macs for r in rows)}


def to_json(rows: list[Row]) -> str:
    """The rows as JSON.

    ``{"layers": [{"name", "kind", "output_shape", "params", "macs", "dilations"}, …], "total_params",
    "total_macs"}``
    """
    return json.dumps(
        {
            "layers": [{**dataclasses.asdict(r), "output_shape": list(r.output_shape)} for r in rows],
            **totals(rows),
        },
        indent=2,
    )


def format_table(rows: list[Row]) -> str:
    """A text table with totals, as ``vggjax summary`` prints it.

    Columns: layer and output shape left-aligned, params and MACs right-aligned with
    thousands separators; each column is as wide as its widest entry (at least the width
    of the default table's), with two spaces between columns.
    """
    t = totals(rows)
    cells = [
        (r.label, "(" + ", ".join(map(str, r.output_shape)) + ")", f"{r.params:,}", f"{r.macs:,}")
        for r in rows
    ]
    total = ("total", "", f"{t['total_params']:,}", f"{t['total_macs']:,}")
    header = ("layer", "output shape", "params", "MACs")
    widths = [max(len(c[i]) for c in [header, total, *cells]) for i in range(4)]
    widths = [max(w, least) for w, least in zip(widths, (12, 20, 14, 16), strict=True)]

    def line(c: tuple[str, ...]) -> str:
        name, shape, params, macs = widths
        return f"{c[0]:<{name}}  {c[1]:<{shape}}  {c[2]:>{params}}  {c[3]:>{macs}}"

    rule = "-" * (sum(widths) + 6)
    return "\n".join([line(header), rule, *map(line, cells), rule, line(total)])
