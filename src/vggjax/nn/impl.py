"""Which ops compute a VGG's convs, dense layers and pools: Flax's own, or :mod:`vggjax.nn.fastops`.

Both give the same parameters and (to float rounding) the same outputs and gradients;
only the speed differs. ``"xla"`` is the reference: Flax's defaults
(``lax.conv_general_dilated``, ``lax.dot_general``, ``nn.max_pool``). ``"cpu_fast"``
swaps in :mod:`vggjax.nn.fastops`, matmul-shaped ops with hand-written gradients that
XLA:CPU runs well (dilated convs fall through to Flax's op there: same result, XLA's
speed). ``"auto"`` picks ``"cpu_fast"`` on a CPU backend and ``"xla"`` on GPU/TPU.
The choices are :data:`vggjax.config.IMPLS`.
"""

from __future__ import annotations

from typing import Any

import jax

from vggjax.config import IMPLS
from vggjax.errors import ArchError
from vggjax.nn import fastops
from vggjax.nn.ops import max_pool_2x2


def resolve_impl(impl: str) -> str:
    """``"auto"`` → ``"cpu_fast"`` on a CPU backend, ``"xla"`` elsewhere; others unchanged.

    Raises:
      ArchError: for an unknown implementation.
    """
    if impl not in IMPLS:
        raise ArchError(f"unknown impl {impl!r}; use one of {', '.join(IMPLS)}")
    if impl == "auto":
        return "cpu_fast" if jax.default_backend() == "cpu" else "xla"
    return impl


def layer_ops(impl: str) -> dict[str, Any]:
    """The keyword arguments of ``nn.Conv`` (``"conv"``) and ``nn.Dense`` (``"dense"``), and the pool.

    Returns:
      ``{"conv": {...}, "dense": {...}, "pool": fn}``: empty dicts and
      :func:`vggjax.nn.ops.max_pool_2x2` for ``"xla"``; for ``"cpu_fast"``,
      ``conv_general_dilated=``, ``dot_general=`` and the pool of :mod:`vggjax.nn.fastops`.
      ``pool`` maps ``float32[N, H, W, C]`` to ``[N, H//2, W//2, C]``.

    Raises:
      ArchError: for an unknown implementation.
    """
    if resolve_impl(impl) == "xla":
        return {"conv": {}, "dense": {}, "pool": max_pool_2x2}
    return {
        "conv": {"conv_general_dilated": fastops.conv_general_dilated},
        "dense": {"dot_general": fastops.dot_general},
        "pool": fastops.max_pool_2x2,
    }
