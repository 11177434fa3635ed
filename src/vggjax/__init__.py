"""vggjax: VGG networks in JAX/Flax, built from arch tuples, trained and inspected.

The arch is data (the d2l chapter's ``(num_convs, channels)`` pairs)::

    from vggjax import build_model
    model = build_model("vgg11", width=0.25)   # the chapter's thin VGG-11
"""

from vggjax.arch import Arch, Block, get_arch
from vggjax.errors import (
    ArchError,
    CheckpointError,
    ConfigError,
    DataError,
    DivergedError,
    Interrupted,
    VggjaxError,
)
from vggjax.models import VGG, VGGBlock, build_model

__all__ = [
    "VGG",
    "Arch",
    "ArchError",
    "Block",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DivergedError",
    "Interrupted",
    "VGGBlock",
    "VggjaxError",
    "build_model",
    "get_arch",
]
__version__ = "0.1.0"
