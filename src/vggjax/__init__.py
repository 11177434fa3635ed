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

_LAZY = {"VGG": "vggjax.nn.vgg", "VGGBlock": "vggjax.nn.vgg", "build_model": "vggjax.nn.vgg"}


def __getattr__(name: str):
    """The flax model names, imported on first use so that ``import vggjax.arch`` never loads JAX."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vggjax' has no attribute {name!r}")


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
