"""VGG architectures as data, and what follows from the arch alone (pure Python, no JAX).

:mod:`~vggjax.arch.spec` holds the blocks and their parsing; :mod:`~vggjax.arch.named`
the paper's named configurations and :func:`get_arch`;
:mod:`~vggjax.arch.layout` the layer list (head included, with torchvision's module names);
:mod:`~vggjax.arch.summary` the per-layer shapes, parameters and MACs;
:mod:`~vggjax.arch.receptive_field` the receptive fields. Importing any of them never
loads JAX, so ``vggjax summary`` and ``vggjax receptive-field`` start at once.
"""

from vggjax.arch.layout import (
    ADAPTIVE_SIDE,
    AdaptiveUpsamplingWarning,
    Layer,
    adaptive_upsampling,
    block_layers,
    feature_names,
    head_layers,
    is_layer_name,
    layers,
    warn_if_upsampling,
)
from vggjax.arch.named import ALIASES, D2L_THIN, PAPER_CONFIGS, get_arch, names
from vggjax.arch.spec import Arch, Block, blocks_from_tuple, scale_width

__all__ = [
    "ALIASES",
    "D2L_THIN",
    "ADAPTIVE_SIDE",
    "PAPER_CONFIGS",
    "AdaptiveUpsamplingWarning",
    "Arch",
    "Block",
    "Layer",
    "adaptive_upsampling",
    "block_layers",
    "blocks_from_tuple",
    "feature_names",
    "get_arch",
    "head_layers",
    "is_layer_name",
    "layers",
    "names",
    "scale_width",
    "warn_if_upsampling",
]
