"""Upper bounds on a literal arch and a width multiplier, each far beyond any VGG in use.

The paper's largest VGG, VGG-19, has 5 blocks of at most 4 convs (16 in all), 3×3
kernels, no dilation and at most 512 channels. A literal arch or a ``--width`` past these
bounds is a typo, not a network: it is refused in one line before anything is built
(``((100000000,16),)`` once ran out of memory building its kernel list, and ``--width 1e9``
asked for 512 billion channels).
"""

from __future__ import annotations

from vggjax.errors import ArchError

MAX_CONVS_PER_BLOCK = 64  # 16x VGG-19's 4
MAX_CONVS = 256  # in all blocks together: 16x VGG-19's 16
MAX_CHANNELS = 16_384  # after the width: 32x VGG's 512; one 3×3 conv at this width has 2.4e9 parameters
MAX_KERNEL = 99  # over 3x the 31×31 of RepLKNet, the largest kernel in common use
MAX_DILATION = 256  # a 3×3 conv dilated 256 spans 513 pixels, over twice ImageNet's 224

# label: (limit, why it is generous, how to get under it)
LIMITS: dict[str, tuple[int, str, str]] = {
    "num_convs": (MAX_CONVS_PER_BLOCK, "per block; VGG-19 has 4", "use fewer convs per block"),
    "convs in all": (MAX_CONVS, "VGG-19 has 16", "use fewer blocks or fewer convs per block"),
    "channels": (MAX_CHANNELS, "32x VGG's widest, 512", "use fewer channels or a smaller width"),
    "kernel size": (MAX_KERNEL, "over 3x RepLKNet's 31", "use a smaller kernel"),
    "dilation": (MAX_DILATION, "a 3x3 conv then spans 513 pixels", "use a smaller dilation"),
}


def check_bound(label: str, value: int, where: str) -> None:
    """Refuses ``value`` over the limit of ``label`` (a key of :data:`LIMITS`).

    Args:
      label: what is bounded: ``"num_convs"``, ``"convs in all"``, ``"channels"``,
        ``"kernel size"`` or ``"dilation"``.
      value: its value.
      where: what holds it, for the message (``"block 1 (100000000, 16)"``, ``"arch"``).

    Raises:
      ArchError: ``"{where}: {label} {value} is over the limit of {limit} ({why}); {fix}"``.
    """
    limit, why, fix = LIMITS[label]
    if value > limit:
        raise ArchError(f"{where}: {label} {value:,} is over the limit of {limit:,} ({why}); {fix}")
