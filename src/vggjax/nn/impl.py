"""Which ops compute a VGG's convs, dense layers and pools: Flax's own, or :mod:`vggjax.nn.fastops`.

All give the same parameters and (to float rounding) the same outputs and gradients;
only the speed differs. ``"xla"`` is the reference: Flax's defaults
(``lax.conv_general_dilated``, ``lax.dot_general``, ``nn.max_pool``). ``"cpu_jax"``
swaps in :mod:`vggjax.nn.fastops`, matmul-shaped ops with hand-written gradients that
XLA:CPU runs well (dilated convs fall through to Flax's op there: same result, XLA's
speed). ``"cpu_fast"`` is ``"cpu_jax"`` with the float32 convolutions on oneDNN
(:mod:`vggjax.nn.onednn`) where its extension builds and loads
(:func:`vggjax.nn.onednn_build.status` says whether and why not); elsewhere it is
``"cpu_jax"``. ``"auto"`` picks ``"cpu_fast"`` on a CPU backend and ``"xla"`` on GPU/TPU.
The choices are :data:`vggjax.config.IMPLS`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
from flax import linen as nn

from vggjax.config import IMPLS
from vggjax.errors import ArchError
from vggjax.nn import batchnorm, fastops, onednn
from vggjax.nn.ops import max_pool_2x2

_CONVS = {
    "cpu_jax": fastops.conv_general_dilated,
    "cpu_fast": functools.partial(fastops.conv_general_dilated, same_conv=onednn.conv_or_jax),
}


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
    """The keyword arguments of ``nn.Conv`` and ``nn.Dense``, the pool and the BatchNorm module.

    Returns:
      ``{"conv": {...}, "dense": {...}, "pool": fn, "bn": module}``: empty dicts,
      :func:`vggjax.nn.ops.max_pool_2x2` and ``nn.BatchNorm`` for ``"xla"``; for
      ``"cpu_jax"`` and ``"cpu_fast"``, ``conv_general_dilated=`` (oneDNN's same-padded
      convs for ``"cpu_fast"``), ``dot_general=`` and the pool of :mod:`vggjax.nn.fastops`,
      and :class:`vggjax.nn.batchnorm.BatchNorm` (same variables and numbers).
      ``pool`` maps ``float32[N, H, W, C]`` to ``[N, H//2, W//2, C]``.

    Raises:
      ArchError: for an unknown implementation.
    """
    impl = resolve_impl(impl)
    if impl == "xla":
        return {"conv": {}, "dense": {}, "pool": max_pool_2x2, "bn": nn.BatchNorm}
    return {
        "conv": {"conv_general_dilated": _CONVS[impl]},
        "dense": {"dot_general": fastops.dot_general},
        "pool": fastops.max_pool_2x2,
        "bn": batchnorm.BatchNorm,
    }
