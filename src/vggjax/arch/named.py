"""The VGG paper's named configurations, their torchvision names, and :func:`get_arch`.

Names are case-insensitive: the paper's ``A``…``E`` and ``A-LRN``; torchvision's
``vgg11``…``vgg19`` with ``_bn`` for BatchNorm; and ``vgg11_28``…``vgg19_28`` (also
``vgg11_28_bn``…), the same networks without their fifth block, so four 2×2 pools take
Fashion-MNIST's native 28×28 input to 14, 7, 3 and 1 pixels with no resize (the d2l
chapter's exercise; five pools need at least 32×32).
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Sequence

from vggjax.arch.spec import Arch, Block, blocks_from_tuple, scale_width
from vggjax.errors import ArchError, shorten


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
# The suffix of the four-block variants, and their blocks: the first four of the config.
NATIVE_SUFFIX, NATIVE_BLOCKS = "_28", 4


def names() -> list[str]:
    """All accepted architecture names, e.g. ``A``, ``A-LRN``, ``vgg16``, ``vgg16_bn``, ``vgg11_28_bn``."""
    out = [*PAPER_CONFIGS, "A-LRN"]
    for alias in ALIASES:
        out += [alias, f"{alias}_bn"]
    for alias in ALIASES:
        out += [f"{alias}{NATIVE_SUFFIX}", f"{alias}{NATIVE_SUFFIX}_bn"]
    return out


def get_arch(spec: str | Sequence | Arch, *, width: float = 1.0, batch_norm: bool | None = None) -> Arch:
    """Resolves a name, a literal string or a tuple into an :class:`Arch`.

    Args:
      spec: a name (``vgg11``…``vgg19``, ``vgg11_bn``…``vgg19_bn``, ``A``…``E``,
        ``A-LRN``, the four-block ``vgg11_28``…``vgg19_28_bn``; case-insensitive), a
        literal string such as ``"((1,16),(1,32),(2,64),(2,128),(2,128))"``, a tuple in
        that form, or an Arch.
      width: width multiplier applied to every block's channels.
      batch_norm: force BatchNorm on or off; None keeps what the name says.

    Raises:
      ArchError: for an unknown name, a string that is not a valid literal, or an
        invalid spec (see :func:`~vggjax.arch.spec.blocks_from_tuple`), or a width <= 0.
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
            f"cannot parse arch {shorten(repr(text))} ({type(e).__name__}); write it like "
            '"((1,16),(1,32),(2,64),(2,128),(2,128))" or use a name such as vgg11'
        ) from None


def _named(name: str) -> Arch:
    key = name.lower()
    bn = key.endswith("_bn")
    base = key.removesuffix("_bn")
    native = base.endswith(NATIVE_SUFFIX) and base.removesuffix(NATIVE_SUFFIX) in ALIASES
    base = base.removesuffix(NATIVE_SUFFIX) if native else base
    if base in ALIASES:
        blocks = PAPER_CONFIGS[ALIASES[base]]
        return Arch(blocks[:NATIVE_BLOCKS] if native else blocks, batch_norm=bn, name=key)
    if not bn and name.upper() in PAPER_CONFIGS:
        return Arch(PAPER_CONFIGS[name.upper()], name=name.upper())
    if not bn and name.upper() == "A-LRN":
        return Arch(PAPER_CONFIGS["A"], lrn=True, name="A-LRN")
    raise ArchError(
        f"unknown arch {shorten(repr(name))}; use one of {', '.join(names())} "
        'or a literal such as "((1,16),(1,32),(2,64),(2,128),(2,128))"'
    )
